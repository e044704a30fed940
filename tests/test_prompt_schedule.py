"""prompt_schedule against WebUI's get_learned_conditioning_prompt_schedules.

WebUI's doctests are copied as data; the other expected values were produced by running WebUI
v1.10's prompt_parser (with lark) in a scratch script and are recorded here as literals.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storyboard.prompt.schedule import prompt_schedule

ALT_A_B = [(1, "a"), (2, "(b:1.1)"), (3, "a"), (4, "(b:1.1)"), (5, "a"), (6, "(b:1.1)"), (7, "a")]
ALT_A_B += [(8, "(b:1.1)"), (9, "a"), (10, "(b:1.1)")]
FEMALE = [(i, "female" if i % 2 else "male") for i in range(1, 11)]
FEMALE4 = [(i, "female" if i % 4 == 1 else "male") for i in range(1, 11)]

WEBUI_DOCTESTS = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    # WebUI's docstring still lists [(5, "a  c"), (10, "a {b|d{ c")] ("not handling this right now"),
    # but its current grammar reads "|" as alternation and returns the prompt unchanged:
    ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", ALT_A_B),
    ("[fe|]male", FEMALE),
    ("[fe|||]male", FEMALE4),
]

WEBUI_EDGE_CASES = [
    ("[a:b:1.0]", [(10, "a")]),  # "." makes it a fraction: 1.0 * 10 steps
    ("[a:b:0]", [(10, "b")]),
    ("[a:b:-2]", [(10, "b")]),
    ("[a:b:20]", [(10, "a")]),
    ("[a:b: 3 ]", [(3, "a"), (10, "b")]),
    ("[a:b:1e1]", [(10, "a")]),
    ("[a:b:c:3]", [(10, "[a:b:c:3]")]),
    ("a | b", [(10, "a | b")]),
    ("(a|b)", [(10, "(a|b)")]),
    ("[a|b", [(10, "[a|b")]),
    ("x\\", [(10, "x\\")]),
    ("[a:3 ]", [(3, ""), (10, "a")]),
    ("a\\[b:2\\]", [(10, "a\\[b:2\\]")]),
    (
        "[a|[b:c:2]]",
        [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a"), (6, "c"), (7, "a"), (8, "c"), (9, "a"), (10, "c")],
    ),
    (
        "[a:[b|c]:5]",
        [(1, "a"), (2, "a"), (3, "a"), (4, "a"), (5, "a"), (6, "c"), (7, "b"), (8, "c"), (9, "b"), (10, "c")],
    ),
    ("[cat:dog:0.25] and [red::.5]", [(2, "cat and red"), (5, "dog and red"), (10, "dog and ")]),
]


@pytest.mark.parametrize(("text", "expected"), WEBUI_DOCTESTS + WEBUI_EDGE_CASES)
def test_matches_webui(text: str, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(text, 10) == expected


def test_hires_schedule() -> None:
    # WebUI doctests with hires_steps=10 (base 10 steps): fractions run 1..2 over the hires pass
    assert prompt_schedule("a [b:.5] c", 10, hires_steps=10) == [(10, "a b c")]
    assert prompt_schedule("a [b:1.5] c", 10, hires_steps=10) == [(5, "a  c"), (10, "a b c")]
    # absolute steps count on from the end of the first pass (values from WebUI, base 20, hires 10)
    assert prompt_schedule("[a:b:25]", 20, hires_steps=10) == [(5, "a"), (10, "b")]
    assert prompt_schedule("[a:b:1.25]", 20, hires_steps=10) == [(2, "a"), (10, "b")]
    assert prompt_schedule("[a:b:5]", 20, hires_steps=10) == [(10, "b")]


def test_old_scheduling_treats_below_one_as_fraction() -> None:
    assert prompt_schedule("[a:b:1.0]", 10, use_old_scheduling=True) == [(1, "a"), (10, "b")]
    assert prompt_schedule("[a:b:0.5]", 10, use_old_scheduling=True) == [(5, "a"), (10, "b")]


def test_infinite_step_number_does_not_raise() -> None:
    assert prompt_schedule("[a:b:1e999]", 10) == [(10, "a")]
    assert prompt_schedule("[a:b:-1e999]", 10) == [(10, "b")]


def test_steps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        prompt_schedule("a", 0)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab ()[]:|\\.12-e\n")), max_size=40), st.integers(1, 30))
def test_never_raises_and_ends_at_steps(text: str, steps: int) -> None:
    sched = prompt_schedule(text, steps)
    ends = [e for e, _ in sched]
    assert ends == sorted(set(ends)) and ends[-1] == steps and ends[0] >= 1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abc ,.()")), max_size=40), st.integers(1, 30))
def test_no_editing_syntax_means_one_entry(text: str, steps: int) -> None:
    assert prompt_schedule(text, steps) == [(steps, text)]
