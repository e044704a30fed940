from __future__ import annotations

import pytest

from storyboard.errors import StoryboardError
from storyboard.prompt.extra_networks import LoraUse, extract_extra_networks, merge_lora_uses


@pytest.mark.parametrize(
    ("tag", "use"),
    [
        ("<lora:foo>", LoraUse("foo", 1.0, 1.0)),
        ("<lora:foo:0.7>", LoraUse("foo", 0.7, 0.7)),
        ("<lora:foo:0.5:0.25>", LoraUse("foo", 0.5, 0.25)),
        ("<lora:foo:te=0.5:unet=1>", LoraUse("foo", 0.5, 1.0)),
        ("<lora:foo:0.8:unet=0.3>", LoraUse("foo", 0.8, 0.3)),
        ("<lora:foo:te=0.2>", LoraUse("foo", 0.2, 0.2)),  # unet defaults to te after te= applies
        ("<lora:foo:1:1:16>", LoraUse("foo", 1.0, 1.0, 16)),
        ("<lora:foo:dyn=8>", LoraUse("foo", 1.0, 1.0, 8)),
        ("<lyco:bar-v1.0:0.6>", LoraUse("bar-v1.0", 0.6, 0.6)),
        ("<lora:Iku_Nakatani-000016_v1.0:1>", LoraUse("Iku_Nakatani-000016_v1.0", 1.0, 1.0)),
    ],
)
def test_lora_tag_arguments(tag: str, use: LoraUse) -> None:
    text, uses = extract_extra_networks(f"a photo, {tag} smiling")
    assert text == "a photo,  smiling"
    assert uses == [use]


def test_tags_removed_in_order_and_unknown_types_ignored() -> None:
    text, uses = extract_extra_networks("<lora:a:1>x <foo:bar> y<lora:b:0.5>")
    assert text == "x  y"
    assert [u.name for u in uses] == ["a", "b"]


@pytest.mark.parametrize("tag", ["<lora:foo:abc>", "<lora:foo:1:x>", "<lora:foo:te=nan>", "<lora:foo:inf>"])
def test_bad_numbers_name_the_tag(tag: str) -> None:
    with pytest.raises(StoryboardError) as err:
        extract_extra_networks(f"x {tag}")
    assert tag in str(err.value)


def test_bad_dyn_and_unsupported_types() -> None:
    with pytest.raises(StoryboardError, match="dyn"):
        extract_extra_networks("<lora:foo:1:1:big>")
    with pytest.raises(StoryboardError, match="hypernet"):
        extract_extra_networks("<hypernet:agm:1>")


def test_merge_repeated_lora_like_webui() -> None:
    uses = [
        LoraUse("a", 0.5, 0.5),
        LoraUse("b", 1.0, 1.0),
        LoraUse("a", 0.8, 0.3, dyn=4),
        LoraUse("a", 0.2, 0.6),
    ]
    # WebUI applies "a" three times, each time with the last mention's multipliers
    assert merge_lora_uses(uses) == [LoraUse("a", 3 * 0.2, 3 * 0.6, None), LoraUse("b", 1.0, 1.0)]
    assert merge_lora_uses([LoraUse("x", 0.7, 0.4)]) == [LoraUse("x", 0.7, 0.4)]
    assert merge_lora_uses([]) == []
