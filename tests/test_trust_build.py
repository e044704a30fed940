"""Issue 12, in-process: the manifest is written in batches (steady rate for big drafts, still
complete after a stop), and a NaN render is refused naming its panel."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch

import storyboard.app.build as build_mod
from storyboard.app.build import build
from storyboard.app.store import PanelStore
from storyboard.errors import StoryboardError
from storyboard.jobs import PanelJob, RenderedPanel
from storyboard.render.decode import NONFINITE, decode_latents
from storyboard.render.draft import DraftRenderer
from storyboard.story.load import load_story

PANELS = 300


def story(tmp_path, n: int = PANELS):
    text = "title: Many\nrender: {width: 64, height: 64}\nlayout: {formats: [pdf], dpi: 10}\npages:\n"
    text += "".join(f"  - panels: [{{id: p{i}, scene: s{i}}}]\n" for i in range(n))
    p = tmp_path / "many.yaml"
    p.write_text(text)
    return load_story(p)


def test_manifest_is_written_in_batches_not_per_panel(tmp_path, monkeypatch):
    writes: list[int] = []
    real = PanelStore.write_manifest

    def counting(self, manifest):
        writes.append(len(manifest.panels))
        real(self, manifest)

    monkeypatch.setattr(PanelStore, "write_manifest", counting)
    report = build(story(tmp_path), tmp_path / "out", DraftRenderer(), layout=False, draft=True)
    assert len(report.rendered) == PANELS
    # One write per MANIFEST_INTERVAL seconds at most, plus the final one: far fewer than panels.
    assert len(writes) < PANELS // 10 and writes[-1] == PANELS


def test_a_stopped_build_still_writes_the_manifest_of_what_it_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(build_mod, "MANIFEST_INTERVAL", 1e9)

    class Stopping(DraftRenderer):
        def render(self, jobs: Sequence[PanelJob]) -> Iterator[RenderedPanel]:
            for i, r in enumerate(super().render(jobs)):
                if i == 5:
                    raise KeyboardInterrupt
                yield r

    loaded = story(tmp_path, 20)
    with pytest.raises(KeyboardInterrupt):
        build(loaded, tmp_path / "out", Stopping(), layout=False)
    manifest = PanelStore(tmp_path / "out" / "many").read_manifest()
    assert list(manifest.panels) == [f"p{i}" for i in range(5)]


def test_a_nan_render_is_refused_naming_the_panel(tmp_path):
    from types import SimpleNamespace

    class Vae(torch.nn.Module):
        config = SimpleNamespace(scaling_factor=0.18215, shift_factor=None)

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def decode(self, z):
            # 8x upscale of the latent's first channels, as a VAE's shape would be
            x = z[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2) * self.w
            return SimpleNamespace(sample=x)

    latents = torch.zeros(2, 4, 1, 1)
    latents[1, 0, 0, 0] = float("nan")
    images = decode_latents(Vae(), latents)
    assert not images[0].info.get(NONFINITE) and images[1].info.get(NONFINITE)

    class NaNRenderer(DraftRenderer):
        def render(self, jobs):
            for r in super().render(jobs):
                if r.job.panel_id == "p1":
                    r.image.info[NONFINITE] = True
                yield r

    loaded = story(tmp_path, 3)
    with pytest.raises(
        StoryboardError, match=r"Panel p1 rendered as NaN \(a black image\), so it was not kept"
    ):
        build(loaded, tmp_path / "out", NaNRenderer(), layout=False)
    assert not (tmp_path / "out" / "many" / "panels" / "p1.png").exists()
    assert (tmp_path / "out" / "many" / "panels" / "p0.png").is_file()
