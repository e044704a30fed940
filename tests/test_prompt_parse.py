"""parse_attention against WebUI's parse_prompt_attention.

Docstring examples are WebUI's own; the edge cases were produced by running WebUI v1.10's
prompt_parser.parse_prompt_attention in a scratch script and are recorded here as literals.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storyboard.prompt.parse import parse_attention, plain_text, strip_comments

WEBUI_DOCTESTS = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]

WEBUI_EDGE_CASES = [
    ("", [("", 1.0)]),
    ("a \\\\ b", [("a \\ b", 1.0)]),
    ("x\\y", [("xy", 1.0)]),  # a lone backslash is dropped
    (
        "((a BREAK b))",
        [("a", 1.2100000000000002), ("BREAK", -1.2100000000000002), ("b", 1.2100000000000002)],
    ),
    (
        "a BREAK (b:-1) BREAK c",
        [
            ("a", 1.0),
            ("BREAK", -1.0),
            ("", 1.0),
            ("b", -1.0),
            ("", 1.0),
            ("BREAK", -1.0),
            ("c", 1.0),
        ],
    ),  # fmt: skip
    (
        "[a] (b) [[c]] ((d))",
        [
            ("a", 0.9090909090909091),
            (" ", 1.0),
            ("b", 1.1),
            (" ", 1.0),
            ("c", 0.8264462809917354),
            (" ", 1.0),
            ("d", 1.2100000000000002),
        ],
    ),  # fmt: skip
    ("( x : 1.5 ) y", [(" x ", 1.5), (" y", 1.0)]),
    ("(a:1.2", [("a:1.2", 1.1)]),
    ("a) b] c", [("a) b] c", 1.0)]),
    ("BREAKfast BREAK", [("BREAKfast", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("(a(b:0.5)c)", [("a", 1.1), ("b", 0.55), ("c", 1.1)]),
    ("a:b:c", [("a:b:c", 1.0)]),
    ("[(x:2)]", [("x", 1.8181818181818181)]),
]


@pytest.mark.parametrize(("text", "expected"), WEBUI_DOCTESTS + WEBUI_EDGE_CASES)
def test_matches_webui(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == expected


def test_bad_weight_is_text_not_an_error() -> None:
    # WebUI raises ValueError here; we keep the malformed weight as text inside the open bracket.
    assert parse_attention("(a:1.2.3) x") == [("a:1.2.3) x", 1.1)]


def test_weights_are_exact_floats() -> None:
    ((_, w),) = parse_attention("(((x)))")
    assert w == 1.1 * 1.1 * 1.1  # multiplication order as WebUI: innermost bracket first


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_never_raises_and_weights_positive_or_break(text: str) -> None:
    runs = parse_attention(text)
    assert runs
    assert all(isinstance(t, str) and isinstance(w, float) for t, w in runs)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abc ,.!1-_\n")), max_size=60))
def test_text_without_syntax_round_trips(text: str) -> None:
    assert "".join(t for t, _ in parse_attention(text)) == text
    assert plain_text(parse_attention(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abc ,.")), min_size=1, max_size=30))
def test_brackets_only_change_weights(text: str) -> None:
    assert parse_attention(f"({text})") == [(text, 1.1)]
    assert parse_attention(f"[{text}]") == [(text, 1 / 1.1)]
    assert parse_attention(f"({text}:0.7)") == [(text, 0.7)]


def test_strip_comments_like_webui() -> None:
    assert strip_comments("a cat # not this\nred sky") == "a cat \nred sky"
    assert strip_comments("# header line\nbody") == "\nbody"
    assert strip_comments("no comments here") == "no comments here"
    assert strip_comments("x #tail") == "x \n"
