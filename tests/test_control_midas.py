"""depth_midas (and its alias depth) on a tiny DPT-Hybrid in the real layout of a Hugging Face cache:
the map equals the library's own forward with the extension's arithmetic written out here; a build
runs both names as a user types them; missing files are a sentence at the unit's line; the fetch
converts the repo's pickle to the safetensors a render reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from annotator_helpers import annotator_cli, place_midas, tiny_midas
from PIL import Image
from safetensors.torch import load_file

from storyboard.models.tiny import TinyModel
from storyboard.render.control.annotators import specs
from storyboard.render.control.annotators.specs import DEPTH_MIDAS, converted_path

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def picture(h: int = 64, w: int = 64) -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


def expected_midas(img: np.ndarray, seed: int) -> np.ndarray:
    """The extension on a square 64 px image at processor_res 64 (no resize, no pad): [-1, 1], the
    network, min-max to 0-255, truncated. The network is the model as built (not the converted file)
    run through transformers' own forward, its 384 px size check set to this input."""
    model = tiny_midas(seed)
    model.dpt.embeddings.image_size = img.shape[:2]
    x = torch.from_numpy(img.astype(np.float64)).float() / 127.5 - 1.0
    with torch.no_grad():
        d = model(pixel_values=x.permute(2, 0, 1)[None]).predicted_depth[0].double().numpy()
    d = (d - d.min()) / (d - d.min()).max()
    return (d * 255.0).clip(0, 255).astype(np.uint8)


def test_map_equals_the_extensions_arithmetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from storyboard.jobs import ControlUnit
    from storyboard.render.control.preprocess import detect

    place_midas(tmp_path, seed=2)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    arr = np.asarray(picture())
    want = expected_midas(arr, seed=2)
    unit = ControlUnit(image=Path("x.png"), model="m", module="depth", processor_res=64)
    assert unit.module == "depth_midas"  # the alias is the extension's name for the same preprocessor
    got = detect(picture(), unit, (64, 64))
    assert got.shape == (64, 64, 3) and (got == got[:, :, :1]).all()  # grey, as RGB
    assert int(np.abs(got[:, :, 0].astype(int) - want.astype(int)).max()) <= 1
    assert (got[:, :, 0] == want).mean() > 0.99
    assert want.std() > 5 and want.min() == 0 and want.max() == 255  # min-max spread, with content


def test_a_landscape_image_maps_on_its_own_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """96 x 64 pads to 128 x 64: a 8 x 4 token grid (transformers' own forward would assume a square
    one); the map comes back at the image's size with the pad removed."""
    from storyboard.jobs import ControlUnit
    from storyboard.render.control.annotators import run_annotator
    from storyboard.render.control.preprocess import detect

    place_midas(tmp_path, seed=3)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    unit = ControlUnit(image=Path("x.png"), model="m", module="depth_midas", processor_res=64)
    got = detect(picture(64, 96), unit, (96, 64))
    assert got.shape == (64, 96, 3) and got[:, :, 0].std() > 5
    padded = np.pad(np.asarray(picture(64, 96)), [[0, 0], [0, 32], [0, 0]], mode="edge")
    full = run_annotator("depth_midas", padded)  # normalised over the padded image, then cropped
    assert full.shape == (64, 128) and (got[:, :, 0] == full[:, :96]).all()


STORY = """\
title: A
render:
  model: tiny-sd
  steps: 2
  width: 64
  height: 64
  noise_source: cpu
  webui_root: {root}
pages:
  - panels:
      - id: alias
        scene: a
        control:
          - image: pic.png
            module: depth
            model: tiny-control
            processor_res: 64
      - id: named
        scene: b
        control:
          - image: pic.png
            module: depth_midas
            model: tiny-control
            processor_res: 64
"""


@pytest.fixture()
def project(tiny: TinyModel, tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    picture().save(proj / "pic.png")
    (proj / "s.yaml").write_text(STORY.format(root=tiny.root))
    return proj


def test_missing_files_are_a_sentence_at_the_units_line(project: Path, tmp_path: Path) -> None:
    r = annotator_cli(tmp_path, tmp_path / "empty-cache", "validate", "proj/s.yaml")
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "Traceback" not in out, out
    assert "proj/s.yaml:15:21: pages[0].panels[0].control[0].module: Model files for the preprocessor" in out
    assert (
        "'depth_midas' are missing in the Hugging Face cache: Intel/dpt-hybrid-midas/config.json, "
        "Intel/dpt-hybrid-midas/pytorch_model.bin @ 11eaf7a1cf" in out
    )
    assert "model.safetensors with config.json beside it" in out
    assert "run `storyboard models fetch control` once" in out


def test_a_build_runs_depth_and_depth_midas(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    place_midas(cache, seed=4)
    r = annotator_cli(tmp_path, cache, "build", "proj/s.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    panels = tmp_path / "output" / "s" / "panels"
    for panel in ("alias", "named"):
        info = Image.open(next(panels.glob(f"{panel}*.png"))).info.get("parameters", "")
        assert 'ControlNet 0: "Module: depth_midas, Model: tiny-control' in info, info


def test_fetch_control_converts_the_bin_beside_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`models fetch control` with the download answered from a stand-in snapshot: the .bin becomes
    the safetensors a render reads, every tensor kept, the config copied beside it."""
    assert specs.SPECS["depth_midas"] is DEPTH_MIDAS  # the command fetches every spec, this one too
    snap = place_midas(tmp_path, seed=7, convert=False)
    asked: list[tuple[str, str]] = []

    def download(spec_list: list[specs.ModelSpec], cache_dir: Path | None = None) -> dict[str, Path]:
        asked.extend((s.repo, s.revision) for s in spec_list)
        return {spec_list[0].key: snap}

    monkeypatch.setattr(specs, "fetch", download)
    monkeypatch.setattr(specs, "SPECS", {"depth_midas": DEPTH_MIDAS})
    got = specs.fetch_control(tmp_path)
    dst = converted_path(DEPTH_MIDAS, tmp_path)
    assert asked == [("Intel/dpt-hybrid-midas", "11eaf7a1cf4bd70740697dbc216f98980c0aeb03")]
    assert got == {"depth_midas": (dst,)} and dst.name == "model.safetensors"
    assert (dst.parent / "config.json").read_bytes() == (snap / "config.json").read_bytes()
    state = torch.load(snap / "pytorch_model.bin", weights_only=True)
    conv = load_file(str(dst))
    assert set(conv) == set(state) and all(torch.equal(conv[k], state[k]) for k in state)
    assert "model.safetensors" in str(dst) and not list(dst.parent.glob("*.bin"))


def test_the_converted_weights_enter_the_job_hash(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storyboard.jobs import job_hash
    from storyboard.render.engine import DiffusersRenderer
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    cache = tmp_path / "hub"
    place_midas(cache, seed=4)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    renderer = DiffusersRenderer(project, quiet=True, device="cpu")
    jobs = plan(load_story(project / "s.yaml"))
    before = [job_hash(j, renderer) for j in jobs]
    assert before == [job_hash(j, DiffusersRenderer(project, quiet=True, device="cpu")) for j in jobs]
    place_midas(cache, seed=5)  # other weights at the same place
    after = [job_hash(j, DiffusersRenderer(project, quiet=True, device="cpu")) for j in jobs]
    assert all(b != a for b, a in zip(before, after, strict=True))
