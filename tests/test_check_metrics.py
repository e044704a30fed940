"""Numbers of the check: distances, Hungarian assignment, OCCM, main cluster, thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from storyboard.check.assign import assign, hungarian, occm
from storyboard.check.backend import cosine_distances, normalized_mean
from storyboard.check.ccip import CcipBackend
from storyboard.check.score import cross_similarity, main_cluster, self_similarity, threshold_for
from storyboard.check.standin import write_ccip


@pytest.fixture(scope="module")
def ccip(tmp_path_factory: pytest.TempPathFactory) -> CcipBackend:
    return CcipBackend.open(write_ccip(tmp_path_factory.mktemp("models")))


def test_identical_crops_have_distance_zero(ccip: CcipBackend) -> None:
    rng = np.random.default_rng(1)
    crop = Image.fromarray(rng.integers(0, 256, (120, 70, 3), dtype=np.uint8))
    other = Image.fromarray(rng.integers(0, 256, (120, 70, 3), dtype=np.uint8))
    feats = ccip.embed([crop, crop.copy(), other])
    d = ccip.distances(feats[:2], feats)
    assert d.shape == (2, 3)
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert d[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert d[0, 2] > 1e-3  # a different picture is not at distance 0
    assert (d >= 0).all()


def test_cosine_distance_zero_for_same_direction() -> None:
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    d = cosine_distances(a, np.concatenate([a * 5, -a]))
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert d[0, 1] == pytest.approx(2.0, abs=1e-6)


def test_hungarian_planted_2x2() -> None:
    # Greedy on the smallest entry (0.1 at [0, 0]) would force 0.9 at [1, 1]: total 1.0.
    # The optimum crosses over: 0.2 + 0.3 = 0.5.
    cost = np.array([[0.1, 0.2], [0.3, 0.9]])
    assert sorted(hungarian(cost)) == [(0, 1), (1, 0)]
    # detections x characters -> character: detection
    assert assign(cost.astype(np.float32)) == {1: 0, 0: 1}


def test_hungarian_rectangular_leaves_a_character_out() -> None:
    cost = np.array([[0.05, 0.4, 0.6]], np.float32)  # one detection, three characters
    assert assign(cost) == {0: 0}


def test_region_prior_breaks_an_identity_tie() -> None:
    dist = np.full((2, 2), 0.2, np.float32)
    prior = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # detection 0 sits in character 1's region
    assert assign(dist, prior) == {1: 0, 0: 1}


@pytest.mark.parametrize(("d", "e"), [(2, 2), (1, 2), (3, 2), (0, 1), (4, 1), (0, 0), (1, 0), (5, 3)])
def test_occm_matches_formula(d: int, e: int) -> None:
    expected = 100.0 * math.exp(-abs(d - e) / (1e-6 + e))
    assert occm(d, e) == pytest.approx(expected, rel=1e-12)


def test_occm_known_values() -> None:
    assert occm(2, 2) == 100.0
    assert occm(1, 2) == pytest.approx(60.653, abs=1e-3)  # e^-0.5
    assert occm(3, 1) == pytest.approx(13.534, abs=1e-3)  # e^-2
    assert occm(1, 0) < 1e-100  # nobody expected, somebody found


def test_main_cluster_leaves_the_drifting_crop_out() -> None:
    d = np.array(
        [
            [0.0, 0.05, 0.5, 0.06],
            [0.05, 0.0, 0.5, 0.07],
            [0.5, 0.5, 0.0, 0.5],
            [0.06, 0.07, 0.5, 0.0],
        ],
        np.float32,
    )
    assert main_cluster(d, 0.178) == [0, 1, 3]
    # nobody close to anybody: all crops are used
    far = np.full((3, 3), 0.9, np.float32)
    np.fill_diagonal(far, 0)
    assert main_cluster(far, 0.178) == [0, 1, 2]


def test_self_and_cross_similarity() -> None:
    d = np.array([[0, 0.1, 0.3], [0.1, 0, 0.2], [0.3, 0.2, 0]], np.float32)
    assert self_similarity(d) == pytest.approx(1 - (0.1 + 0.3 + 0.2) / 3)
    assert self_similarity(np.zeros((1, 1), np.float32)) is None
    assert cross_similarity(np.array([0.1, 0.3], np.float32)) == pytest.approx(0.8)


def test_prototype_is_normalised_mean() -> None:
    f = np.array([[3.0, 0.0], [0.0, 2.0]], np.float32)
    p = normalized_mean(f)
    assert np.allclose(p, [[math.sqrt(0.5), math.sqrt(0.5)]], atol=1e-6)


def test_threshold_precedence() -> None:
    assert threshold_for(0.1, 0.2, 0.3) == (0.1, "character")
    assert threshold_for(None, 0.2, 0.3) == (0.2, "story")
    assert threshold_for(None, None, 0.3) == (0.3, "backend default")
    assert threshold_for(0.1, 0.2, 0.3, override=0.4) == (0.4, "--threshold")
