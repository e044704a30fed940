"""An independent reader of WebUI infotext, following the rules of WebUI's
``modules/infotext_utils.parse_generation_parameters`` (read from its public source), for tests that
read panels back the way WebUI's PNG Info does. Written separately from storyboard's own
``render.infotext.parse_infotext`` so a shared mistake cannot hide.

Rules: the text is stripped and split on newlines; the last line holds the parameters only when the
parameter pattern matches it at least 3 times (else it belongs to the prompt); each other line is
stripped, and from a line starting with "Negative prompt:" on, lines belong to the negative prompt
(that prefix cut off); a value in double quotes is JSON-decoded (kept as is when that fails); a value
like 512x768 becomes "<key>-1" and "<key>-2" instead of "<key>".
"""

from __future__ import annotations

import contextlib
import json
import re

PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
SIZE = re.compile(r"^(\d+)x(\d+)$")


def read_infotext(text: str) -> dict[str, str]:
    lines = text.strip().split("\n")
    last = lines.pop()
    if len(PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in (ln.strip() for ln in lines):
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        m = SIZE.match(value)
        if m:
            out[f"{key}-1"], out[f"{key}-2"] = m.group(1), m.group(2)
        else:
            out[key] = value
    return out


def hash_pairs(value: str) -> list[tuple[str, str]]:
    """WebUI's reading of "Lora hashes": "name: hash" items split on commas, in order, duplicates kept
    (WebUI's reader builds a dict from them, so a repeated name loses an entry)."""
    pairs = []
    for item in value.split(","):
        name, _, h = item.strip().partition(": ")
        pairs.append((name, h))
    return pairs
