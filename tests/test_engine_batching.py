"""Grouping panels into batches, batch sizes, and the out-of-memory fallback (no model needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

from storyboard.jobs import PanelJob
from storyboard.prompt.extra_networks import LoraUse
from storyboard.render.batching import BYTES_PER_POSITION_FP16, estimate_batch_size, group_jobs
from storyboard.render.engine import DiffusersRenderer, PanelConds
from storyboard.render.progress import RenderProgress
from storyboard.story.schema import HiresFix, RenderSettings


def job(pid: str, loras: tuple[LoraUse, ...] = (), **kw: Any) -> PanelJob:
    s = RenderSettings(**{"model": "m", "width": 64, "height": 64, **kw})
    return PanelJob(pid, 1, 1, "x", "", loras, 1, s)


A = (LoraUse("a", 1.0, 1.0),)
B = (LoraUse("b", 1.0, 1.0),)


def test_groups_keep_first_appearance_order_and_share_settings() -> None:
    jobs = [job("1", A), job("2", B), job("3", A), job("4"), job("5", B, steps=30), job("6", A)]
    groups = [[j.panel_id for j in g] for g in group_jobs(jobs)]
    assert groups == [["1", "3", "6"], ["2"], ["4"], ["5"]]


def test_lora_multipliers_and_hires_split_groups() -> None:
    half = (LoraUse("a", 0.5, 0.5),)
    hr = HiresFix(scale=2)
    jobs = [job("1", A), job("2", half), job("3", A, hires=hr), job("4", A)]
    assert [[j.panel_id for j in g] for g in group_jobs(jobs)] == [["1", "4"], ["2"], ["3"]]


def test_groups_of_one_model_stay_together() -> None:
    jobs = [job("1", A), job("2", model="other"), job("3", B)]
    assert [[j.panel_id for j in g] for g in group_jobs(jobs)] == [["1"], ["3"], ["2"]]


def test_batch_size_estimate() -> None:
    per_image = (896 // 8) * (1280 // 8) * BYTES_PER_POSITION_FP16  # 2.2 GiB for a 896x1280 fp16 pass
    assert estimate_batch_size(int(per_image * 4 / 0.7) + 1, 896, 1280, half=True) == 4
    assert estimate_batch_size(int(per_image * 4 / 0.7) + 1, 896, 1280, half=False) == 2
    assert estimate_batch_size(10, 896, 1280, half=True) == 1
    assert estimate_batch_size(1 << 50, 448, 640, half=True) == 8


def test_out_of_memory_halves_the_batch_and_keeps_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    r = DiffusersRenderer(tmp_path, quiet=True, device="cpu", batch_size=4)
    tried: list[int] = []

    def fake_batch(model: Any, batch: list[Any], *args: Any) -> list[Image.Image]:
        tried.append(len(batch))
        if len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [Image.new("RGB", (8, 8)) for _ in batch]

    cond = PanelConds([], [], None, None)
    monkeypatch.setattr("storyboard.render.engine.render_batch", fake_batch)
    monkeypatch.setattr(r, "_ensure_loaded", lambda models, allow: SimpleNamespace(components=None, patcher=None))
    monkeypatch.setattr("storyboard.render.engine.apply_lora_set", lambda *a: None)
    monkeypatch.setattr("storyboard.render.engine.prompt_encoder", lambda *a: None)
    monkeypatch.setattr("storyboard.render.engine.encode_job", lambda *a: cond)
    monkeypatch.setattr("storyboard.render.engine.panel_infotext", lambda rj, *a: rj.job.panel_id)
    monkeypatch.setattr(r.resolver, "used_embeddings", lambda rj: [])
    monkeypatch.setattr(PanelConds, "shape_key", property(lambda self: (1,)))
    jobs = [job(str(i)) for i in range(5)]
    models = SimpleNamespace(embeddings={})
    resolved = [SimpleNamespace(job=j, models=models, settings=j.settings, upscaler=None) for j in jobs]
    out: Iterator[Any] = r._render_group(resolved, RenderProgress(5, enabled=False))  # type: ignore[arg-type]
    assert [o.job.panel_id for o in out] == ["0", "1", "2", "3", "4"]
    assert tried == [4, 2, 1, 1, 1, 1, 1]


def test_progress_only_on_an_interactive_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from storyboard.render.progress import progress_enabled

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert progress_enabled(quiet=False)
    assert not progress_enabled(quiet=True)
    monkeypatch.setenv("CI", "1")
    assert not progress_enabled(quiet=False)
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not progress_enabled(quiet=False)
