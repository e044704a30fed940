"""CBZ archives: page images in reading order plus ComicInfo.xml (ComicRack schema v2.0)."""

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
    data: bytes
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
            "ImageSize": str(len(page.data)),
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


def write_cbz(path: Path, meta: LayoutMeta, pages: list[CbzPage], rtl: bool) -> None:
    """Pages are stored (PNG is already compressed) under names that sort in reading order."""
    with zipfile.ZipFile(path, "w") as zf:
        for page in pages:
            info = zipfile.ZipInfo(page.name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, page.data)
        info = zipfile.ZipInfo("ComicInfo.xml", _FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, comicinfo_xml(meta, pages, rtl))
