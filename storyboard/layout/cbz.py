"""CBZ archives: page images in reading order plus ComicInfo.xml (ComicRack schema v2.0).

Pages are written into the archive as they come (`CbzWriter.add`), so a book of any length holds one
page's PNG at a time; ComicInfo.xml, which lists every page's size, closes the archive.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from storyboard.layout.types import LayoutMeta

# ComicInfo.xsd declares its elements as a sequence, so they must appear in this order.
_FIELD_ORDER = ("Title", "Series", "Number", "Summary", "Writer", "PageCount", "LanguageISO", "Manga")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps keep the archive reproducible


@dataclass(frozen=True)
class CbzPage:
    name: str
    size: int  # bytes of the PNG
    width: int
    height: int
    cover: bool = False


def comicinfo_xml(meta: LayoutMeta, pages: list[CbzPage], rtl: bool) -> bytes:
    root = ET.Element(
        "ComicInfo",
        {
            "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
            "xmlns:xsd": "http://www.w3.org/2001/XMLSchema",
        },
    )
    values = {
        "Title": meta.title,
        "Series": meta.title,
        "Number": "1",
        "Summary": meta.summary,
        "Writer": meta.author,
        "PageCount": str(len(pages)),
        "LanguageISO": meta.language,
        "Manga": "YesAndRightToLeft" if rtl else "No",
    }
    for key in _FIELD_ORDER:
        if values[key] is not None:
            ET.SubElement(root, key).text = values[key]
    pages_el = ET.SubElement(root, "Pages")
    for i, page in enumerate(pages):
        attrs = {
            "Image": str(i),
            "ImageSize": str(page.size),
            "ImageWidth": str(page.width),
            "ImageHeight": str(page.height),
        }
        if page.cover:
            attrs["Type"] = "FrontCover"
        ET.SubElement(pages_el, "Page", attrs)
    ET.indent(root)
    buf = io.BytesIO()
    ET.ElementTree(root).write(buf, encoding="utf-8", xml_declaration=True)
    return buf.getvalue()


class CbzWriter:
    """Pages are stored (PNG is already compressed) under names that sort in reading order."""

    def __init__(self, path: Path, meta: LayoutMeta, rtl: bool) -> None:
        self._zip = zipfile.ZipFile(path, "w")
        self._meta, self._rtl = meta, rtl
        self.pages: list[CbzPage] = []

    def add(self, name: str, data: bytes, width: int, height: int, *, cover: bool = False) -> None:
        info = zipfile.ZipInfo(name, _FIXED_TIME)
        info.compress_type = zipfile.ZIP_STORED
        self._zip.writestr(info, data)
        self.pages.append(CbzPage(name, len(data), width, height, cover))

    def close(self) -> None:
        info = zipfile.ZipInfo("ComicInfo.xml", _FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        self._zip.writestr(info, comicinfo_xml(self._meta, self.pages, self._rtl))
        self._zip.close()

    def __enter__(self) -> CbzWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._zip.close()  # the caller discards the half-written archive
