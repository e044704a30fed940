"""A character looks the same alone and together: in a two-character regional panel, a character's
LoRA acts in its own region as strongly as in that character's solo panel, and little of it reaches
the other region (tiny model, CPU, final latents; bench/regional_strength.py defines the figures and
prints them per seed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from storyboard.models.tiny import TinyModel
from storyboard.render.engine import DiffusersRenderer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from regional_strength import effect, interiors, story_jobs, strength  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = (1, 2, 3, 4, 5)
# 64 px, 6 steps: the figures hold as at the bench's 128 px / 8 steps, in a third of the time.
SMALL = {"size": 64, "steps": 6}


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> DiffusersRenderer:
    return DiffusersRenderer(tmp_path_factory.mktemp("story"), quiet=True, device="cpu")


def test_effect_is_the_mean_absolute_latent_change_over_a_regions_interior(tiny: TinyModel) -> None:
    two = story_jobs(tiny.root, 1, {"a": 1.0, "b": 0.8}, **SMALL)["two"]
    inside = interiors(two, 8, 8)
    # 64 px = 8 latent columns; a on the left half, b on the right; the 5% feather ramps over 0.4 of
    # a cell centred on the seam, so the cells beside it still have weight 1.
    assert inside["a"].tolist() == [[True] * 4 + [False] * 4] * 8
    assert inside["b"].tolist() == [[False] * 4 + [True] * 4] * 8
    x, y = np.zeros((4, 8, 8)), np.zeros((4, 8, 8))
    x[0, :, :4] = 2.0  # a change of 2 in one channel of four, on the left only
    x[1, :, 4:] = -1.0
    assert effect(x, y, inside["a"]) == pytest.approx(0.5)
    assert effect(x, y, inside["b"]) == pytest.approx(0.25)


def test_a_characters_lora_acts_as_strongly_in_its_region_as_alone_and_stays_there(
    tiny: TinyModel, renderer: DiffusersRenderer
) -> None:
    rows = [strength(renderer, tiny.root, seed, **SMALL) for seed in SEEDS]
    for row in rows:
        for who in ("a", "b"):
            # Regional / solo effect of the character's LoRA in its own region.
            assert 0.67 <= row[f"strength_{who}"] <= 1.5, row
            # Into the other region: at most a quarter of what WebUI's whole-panel merge puts there.
            assert row[f"bleed_{who}"] <= 0.25, row


def test_regional_prompters_shared_negative_stays_an_option_and_is_what_made_it_stronger(
    tiny: TinyModel, renderer: DiffusersRenderer
) -> None:
    """``negative_loras: shared`` is WebUI's Regional Prompter: the negative prompt runs without the
    region's LoRA, so the LoRA's change to the prediction enters CFG through the cond alone and is
    multiplied by the CFG scale, where in a solo panel it enters both halves and mostly cancels
    (about 5 times the solo effect on this model)."""
    row = strength(renderer, tiny.root, 1, negative_loras="shared", **SMALL)
    assert row["strength_a"] > 3 and row["strength_b"] > 3, row
