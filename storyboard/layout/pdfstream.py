"""reportlab, streamed: a document of any length written with the memory of one page.

reportlab keeps every object of a document until save and then joins the whole file in memory, so a
1,000-page book held every page's image data at least twice. Two hooks change where bytes wait, never
which bytes are written (tests/test_book_stream.py compares the file with a plain `canvas.save()`):

- after each page, the data of the page's image objects moves to a scratch file (`spool_images`) and
  is read back one image at a time while the file is written;
- during the save, reportlab's output collector writes each formatted object straight to the file
  (`streamed_save`) instead of keeping a list of them all.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
from reportlab.pdfbase import pdfdoc

_sink = threading.local()


class _StreamingFile(pdfdoc.PDFFile):
    """reportlab's output collector. During a streamed save on this thread each formatted object
    goes straight to the file (reportlab keeps a list of them all and joins it at the end); at any
    other time it is reportlab's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fh: IO[bytes] | None = getattr(_sink, "fh", None)
        if fh is not None:
            header: list[bytes] = self.strings  # written by the constructor
            fh.write(b"".join(header))
            header.clear()
            self.write = fh.write


class _SpooledImage(pdfdoc.PDFImageXObject):  # type: ignore[misc]
    """An image XObject whose data waits in the scratch file until the PDF is written."""

    _spool: IO[bytes]
    _at: tuple[int, int, bool]  # offset, length, whether reportlab held it as str (ASCII85)

    def format(self, document: Any) -> bytes:
        offset, length, text = self._at
        self._spool.seek(offset)
        data = self._spool.read(length)
        self.streamContent = data.decode("latin-1") if text else data
        try:
            return super().format(document)  # type: ignore[no-any-return]
        finally:
            self.streamContent = ""


def spool_images(doc: Any, since: int, spool: IO[bytes]) -> None:
    """Move the data of the image objects registered after object number `since` to the spool."""
    for number in range(since + 1, doc.objectcounter + 1):
        oid = doc.numberToId[number]
        obj = doc.idToObject[oid]
        if type(obj) is not pdfdoc.PDFImageXObject:
            continue
        content = obj.streamContent
        text = isinstance(content, str)
        data = content.encode("latin-1") if text else bytes(content)
        spool.seek(0, io.SEEK_END)
        spooled = _SpooledImage.__new__(_SpooledImage)
        spooled.__dict__.update(obj.__dict__)  # its name, size, filters; one object, registered once
        spooled._spool, spooled._at = spool, (spool.tell(), len(data), text)
        spooled.streamContent = ""
        spool.write(data)
        doc.idToObject[oid] = spooled


def a85(data: bytes | str) -> str:
    """ASCII85 exactly as reportlab writes it ('z' for four zero bytes, '~>' at the end), with numpy:
    reportlab's own encoder is pure Python unless the optional rl_accel package is installed, and it
    took half of a page's layout time (1.4 s for 2 MB; this: 0.06 s)."""
    raw = data.encode("latin-1") if isinstance(data, str) else data
    whole = len(raw) // 4 * 4
    words = np.frombuffer(raw, dtype=">u4", count=whole // 4)
    digits = np.empty((words.size, 5), dtype=np.uint8)
    rest = words.astype(np.uint64)
    for i in range(4, -1, -1):
        digits[:, i] = rest % 85 + 33
        rest //= 85
    zero = words == 0
    if zero.any():
        digits[zero, 0] = ord("z")
        keep = np.ones(digits.shape, dtype=bool)
        keep[zero, 1:] = False
        body = digits[keep].tobytes()
    else:
        body = digits.tobytes()
    tail = raw[whole:]
    if tail:  # the last 1-3 bytes: padded with zeros, one more digit than bytes kept
        num = int.from_bytes(tail + b"\0" * (4 - len(tail)), "big")
        last = bytearray(5)
        for i in range(4, -1, -1):
            num, last[i] = divmod(num, 85)
        body += bytes(c + 33 for c in last[: len(tail) + 1])
    return body.decode("latin-1") + "~>"


_install = threading.Lock()


def install_hooks() -> None:
    """The streaming collector (inert unless a streamed save runs on the thread), and the numpy
    ASCII85 encoder where reportlab would use its pure-Python one; both write the same bytes."""
    with _install:
        if pdfdoc.PDFFile is not _StreamingFile:
            pdfdoc.PDFFile = _StreamingFile
        if getattr(pdfdoc.asciiBase85Encode, "__name__", "") == "_py_asciiBase85Encode":
            pdfdoc.asciiBase85Encode = a85


@contextmanager
def streamed_save(fh: IO[bytes]) -> Iterator[None]:
    """canvas.save() inside this writes the file object by object to fh (install_hooks first)."""
    _sink.fh = fh
    try:
        yield
    finally:
        _sink.fh = None
