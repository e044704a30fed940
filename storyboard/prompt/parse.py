"""WebUI emphasis syntax: ``(x)``, ``[x]``, ``(x:w)``, escapes and ``BREAK``.

Reproduces ``parse_prompt_attention`` from WebUI's ``modules/prompt_parser.py`` (v1.10) output for
output, float for float: the same token classes, the same left-to-right bracket stack, the same
multiplication order (so weights such as ``1.5730000000000004`` come out bit-identical) and the same
merging of neighbouring runs with equal weight.

Quirks kept on purpose because WebUI has them:
- an unmatched ``(`` or ``[`` weights everything after it up to the end of the prompt;
- an unmatched ``)`` / ``]`` is literal text;
- a lone backslash before an ordinary character is dropped (``a\\b`` -> ``ab``);
- ``BREAK`` inside brackets gets its weight multiplied too, and then no longer counts as a break;
- ``(x:w)`` accepts spaces around ``w`` (``( x : 1.2 )``).

One deliberate difference: WebUI raises ``ValueError`` on a weight such as ``(x:1.2.3)``; here that
``:1.2.3)`` is kept as literal text, so no prompt makes the parser raise.
"""

from __future__ import annotations

import re

BREAK_MARKER = ("BREAK", -1.0)

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# Token classes, in priority order: escapes, a lone backslash, openers, a weighted closer,
# closers, a run of ordinary text, a bare colon.
_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                    # escaped bracket or backslash
    | \\                            # lone backslash: WebUI drops it
    | [(\[]                         # openers
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # ":1.2)" closes a round bracket with a weight
    | [)\]]                         # closers
    | [^\\()\[\]:]+                 # ordinary text
    | :                             # a colon that is not a weight
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(fragment, weight)`` runs exactly as WebUI's parse_prompt_attention does.

    ``BREAK`` (as a word, with its surrounding whitespace) becomes the marker ``("BREAK", -1.0)``.
    An empty prompt gives ``[("", 1.0)]``.
    """
    runs: list[list[str | float]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] = float(run[1]) * factor

    for match in _TOKEN.finditer(text):
        tok = match.group(0)
        weight = _as_float(match.group("weight"))
        if tok.startswith("\\"):
            runs.append([tok[1:], 1.0])
        elif tok == "(":
            round_open.append(len(runs))
        elif tok == "[":
            square_open.append(len(runs))
        elif weight is not None and round_open:
            scale_from(round_open.pop(), weight)
        elif tok == ")" and round_open:
            scale_from(round_open.pop(), ROUND_MULTIPLIER)
        elif tok == "]" and square_open:
            scale_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(tok)):
                if i > 0:
                    runs.append(list(BREAK_MARKER))
                runs.append([part, 1.0])

    # Unclosed brackets apply to the end of the prompt; WebUI does round ones first, then square.
    for start in round_open:
        scale_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        scale_from(start, SQUARE_MULTIPLIER)

    if not runs:
        return [("", 1.0)]

    merged: list[tuple[str, float]] = []
    for fragment, w in runs:
        if merged and merged[-1][1] == w:
            merged[-1] = (merged[-1][0] + str(fragment), merged[-1][1])
        else:
            merged.append((str(fragment), float(w)))
    return merged


def _as_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None  # e.g. "1.2.3": kept as text (WebUI would raise here)


def plain_text(runs: list[tuple[str, float]]) -> str:
    """The prompt text without emphasis syntax, ``BREAK`` markers written back as `` BREAK ``."""
    return "".join(" BREAK " if (t, w) == BREAK_MARKER else t for t, w in runs)


_COMMENT_LINE = re.compile(r"(^|\n)#[^\n]*(\n|$)")
_COMMENT_TAIL = re.compile(r"#[^\n]*(\n|$)")


def strip_comments(text: str) -> str:
    """WebUI's prompt comments (``scripts/comments.py``, option on by default since v1.8).

    A ``#`` hides the rest of its line. WebUI applies this to positive and negative prompts before
    anything else (tags, schedules, emphasis), and the infotext shows the stripped prompt.
    """
    text = _COMMENT_LINE.sub("\n", text)  # whole-line comments
    return _COMMENT_TAIL.sub("\n", text)  # comments after text on a line
