"""reportlab TrueType embedding with a correct ToUnicode map.

reportlab (5.1 and earlier) writes each subset's ToUnicode entry as `<code> <%04X>`, so a character
beyond the Basic Multilingual Plane (an emoji) gets a five-digit value such as `<1F600>`, which PDF
readers reject or misread: the emoji is drawn but does not copy or extract. ToUnicode values are
UTF-16BE, so they are rewritten here as surrogate pairs after reportlab has made the streams.

The same rewrite maps the vertical presentation forms that tategaki lettering draws (︒ for 。, ︵ for
（ ...) back to the characters the story wrote, so vertical text extracts as written.
"""

from __future__ import annotations

import re
from typing import Any

from reportlab.pdfbase.ttfonts import TTFont

# Drawn form -> the character the story wrote. Only used inside ToUnicode maps.
EXTRACT_AS: dict[int, int] = {}


def register_extract_alias(drawn: str, written: str) -> None:
    EXTRACT_AS[ord(drawn)] = ord(written)


_ENTRY = re.compile(r"^<([0-9A-F]{2})> <([0-9A-F]{4,6})>$", re.MULTILINE)


def utf16_hex(cp: int) -> str:
    return chr(cp).encode("utf-16-be", "surrogatepass").hex().upper()


def fix_tounicode(cmap: str) -> str:
    def repl(m: re.Match[str]) -> str:
        cp = int(m.group(2), 16)
        return f"<{m.group(1)}> <{utf16_hex(EXTRACT_AS.get(cp, cp))}>"

    return _ENTRY.sub(repl, cmap)


class EmbeddedTTFont(TTFont):  # type: ignore[misc]
    """A TTFont whose subsets get ToUnicode maps that PDF readers decode correctly."""

    def addObjects(self, doc: Any) -> None:  # noqa: N802 - reportlab's name
        super().addObjects(doc)
        face = self.face.name + self.face.subfontNameX
        suffix = b"+" + face
        for key, obj in doc.idToObject.items():
            if not (isinstance(key, str) and key.startswith("toUnicodeCMap:")):
                continue
            if key.encode("latin-1", "replace").endswith(suffix) and isinstance(obj.content, str):
                obj.content = fix_tounicode(obj.content)
