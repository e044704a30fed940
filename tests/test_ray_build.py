"""`--ray` on a local Ray instance on the CPU: same bytes as a local build, a killed actor, a failing job.

One Ray instance (2 CPUs, no dashboard, a small object store) serves the whole module; actors take no
GPU. Torch runs one thread here and in the actors, since CPU sums depend on the thread count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray_helpers import MarkingRenderer, marks_by_panel  # noqa: E402

from storyboard.app.build import build, png_bytes  # noqa: E402
from storyboard.app.operations import make_renderer  # noqa: E402
from storyboard.distributed import RayOptions  # noqa: E402
from storyboard.distributed.renderer import RayRenderer  # noqa: E402
from storyboard.distributed.worker import WorkerSpec  # noqa: E402
from storyboard.errors import StoryboardError  # noqa: E402
from storyboard.jobs import Manifest, job_hash  # noqa: E402
from storyboard.models.tiny import TinyModel, write_tiny_model  # noqa: E402
from storyboard.render.engine import DiffusersRenderer  # noqa: E402
from storyboard.story.load import load_story  # noqa: E402
from storyboard.story.plan import plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPU = RayOptions(actors=2, gpus_per_actor=0)


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["RAY_DISABLE_IMPORT_WARNING"] = "1"
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}},
    )
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_tiny_model(tmp_path_factory.mktemp("webui"), seed=0)


def tiny_demo(tiny: TinyModel, folder: Path) -> Path:
    text = (ROOT / "stories" / "tiny-demo.yaml").read_text()
    text = text.replace("webui_root: ../output/tiny-model", f"webui_root: {tiny.root}")
    text = text.replace("image: control/", f"image: {ROOT / 'stories' / 'control'}/")  # the pose map
    story = folder / "tiny-demo.yaml"
    story.write_text(text.replace("steps: 8", "steps: 3"))
    return story


SIX = """title: Six
characters:
  iku: {{name: Iku, lora: tiny-character, weight: 1, triggers: [1girl]}}
render: {{model: tiny-sd, sampler: Euler a, steps: 3, width: 64, height: 64, noise_source: cpu,
         webui_root: {root}}}
layout: {{page_size: A4}}
pages:
  - panels:
{panels}
"""


def six_panels(tiny: TinyModel, folder: Path) -> Path:
    panels = "\n".join(f"      - {{id: p{i}, scene: garden {i}, characters: [iku]}}" for i in range(1, 7))
    story = folder / "six.yaml"
    story.write_text(SIX.format(root=tiny.root, panels=panels))
    return story


def outputs(folder: Path) -> dict[str, bytes]:
    """Every panel, page, PDF and CBZ under an output folder, by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (p.parent.name in ("panels", "pages") or p.suffix in (".pdf", ".cbz"))
    }


def test_ray_build_matches_a_local_build_byte_for_byte(tiny: TinyModel, tmp_path: Path) -> None:
    story = tiny_demo(tiny, tmp_path)
    loaded = load_story(story)
    local = build(loaded, tmp_path / "local", DiffusersRenderer(loaded.base_dir, quiet=True, device="cpu"))
    renderer = make_renderer(
        loaded, draft=False, quiet=True, ray=CPU, out_root=tmp_path / "ray"
    )
    assert isinstance(renderer, RayRenderer)
    try:
        # The actors import this checkout's storyboard, with torch on the driver's thread count.
        import storyboard

        assert {i["module"] for i in renderer.infos} == {storyboard.__file__}
        assert {i["threads"] for i in renderer.infos} == {1}
        report = build(loaded, tmp_path / "ray", renderer)
        assert sorted(report.rendered) == sorted(local.rendered) == ["garden", "gate", "meet"]
        assert sum(s.panels for s in renderer.last_stats) == 3
        a, b = outputs(local.out_dir), outputs(report.out_dir)
        assert {k for k in a if k.endswith((".pdf", ".cbz"))} == {"tiny-garden.pdf", "tiny-garden.cbz"}
        assert len([k for k in a if k.startswith("pages/")]) == 2
        assert a == b

        # Beside each render (not in its hash): what rendered it.
        for job in plan(loaded):
            h = job_hash(job, renderer)
            assert h == job_hash(job, DiffusersRenderer(loaded.base_dir, quiet=True, device="cpu"))
            meta = json.loads((report.out_dir / "cache" / h[:2] / f"{h}.json").read_text())
            assert meta["job_hash"] == h and meta["panel"] == job.panel_id
            assert meta["gpu"].startswith("cpu") and {"torch", "diffusers", "ray"} <= set(meta["libraries"])

        # Jobs already in the store are not sent: rendering them again reads the store.
        before = sum(s.panels for s in renderer.last_stats)
        again = list(renderer.render(plan(loaded)))
        assert [p.job.panel_id for p in again] == ["gate", "garden", "meet"]
        assert sum(s.panels for s in renderer.last_stats) == before
        assert [png_bytes(p.image, p.infotext) for p in again] == [
            (report.out_dir / "panels" / f"{p.job.panel_id}.png").read_bytes() for p in again
        ]
    finally:
        renderer.close()


def marking_renderer(loaded_base: Path, out_dir: Path, marks: Path, **kw: object) -> RayRenderer:
    marks.mkdir()
    factory = partial(MarkingRenderer, loaded_base, str(marks), **kw)
    spec = WorkerSpec(factory, str(out_dir), png_bytes, cpu_threads=1)
    local = DiffusersRenderer(loaded_base, quiet=True, device="cpu")
    return RayRenderer(local, spec, CPU)


def test_a_killed_actor_s_jobs_are_requeued_and_nothing_finished_renders_twice(
    tiny: TinyModel, tmp_path: Path
) -> None:
    loaded = load_story(six_panels(tiny, tmp_path))
    token = tmp_path / "kill-one-actor"
    token.touch()
    marks = tmp_path / "marks"
    renderer = marking_renderer(loaded.base_dir, tmp_path / "out" / loaded.slug, marks, kill_token=str(token))
    try:
        report = build(loaded, tmp_path / "out", renderer)
    finally:
        renderer.close()
    assert not token.exists()  # an actor took the token and died
    assert [a.dead for a in renderer.actors].count(True) == 2  # the killed one, then close()
    ids = [f"p{i}" for i in range(1, 7)]
    assert sorted(report.rendered) == ids
    # Each group of 3 went to one actor: the killed one had stored its first panel, which came back
    # from the store; its other two went to the survivor. Every panel was rendered exactly once.
    assert len(renderer.recovered) == 1
    assert marks_by_panel(marks) == {pid: 1 for pid in ids}
    assert sum(s.panels for s in renderer.last_stats) == 5  # the sixth came from the store
    manifest = Manifest.parse((report.out_dir / "manifest.json").read_text(), "manifest")
    assert list(manifest.panels) == ids
    assert (report.out_dir / "six.pdf").is_file()


def test_a_job_failing_twice_is_reported_and_the_others_finish(tiny: TinyModel, tmp_path: Path) -> None:
    loaded = load_story(six_panels(tiny, tmp_path))
    marks = tmp_path / "marks"
    renderer = marking_renderer(loaded.base_dir, tmp_path / "out" / loaded.slug, marks, fail="p2")
    try:
        with pytest.raises(StoryboardError) as err:
            build(loaded, tmp_path / "out", renderer)
    finally:
        renderer.close()
    assert "1 panel(s) failed 2 times: p2 (RuntimeError: cannot render p2 (test))" in err.value.message
    assert len([f for f in marks.iterdir() if f.name.startswith("tried-p2")]) == 2
    others = ["p1", "p3", "p4", "p5", "p6"]
    assert marks_by_panel(marks) == {pid: 1 for pid in others}
    out = tmp_path / "out" / loaded.slug
    manifest = Manifest.parse((out / "manifest.json").read_text(), "manifest")
    assert sorted(manifest.panels) == others
    assert sorted(p.stem for p in (out / "panels").iterdir()) == others


def test_a_build_stopped_on_the_driver_resumes_like_a_local_one(tiny: TinyModel, tmp_path: Path) -> None:
    loaded = load_story(six_panels(tiny, tmp_path))
    out_dir = tmp_path / "out" / loaded.slug
    renderer = marking_renderer(loaded.base_dir, out_dir, tmp_path / "marks")

    def stop(panel_id: str, done: int, total: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C on the driver after its first panel

    try:
        with pytest.raises(KeyboardInterrupt):
            build(loaded, tmp_path / "out", renderer, progress=stop)
    finally:
        renderer.close()  # the driver's end takes its actors with it
    stored = {
        job.panel_id
        for job in plan(loaded)
        if any((out_dir / "cache").rglob(f"{job_hash(job, renderer)}.png"))
    }
    assert stored  # the actors had stored work the driver never recorded
    again = marking_renderer(loaded.base_dir, out_dir, tmp_path / "marks2")
    try:
        report = build(loaded, tmp_path / "out", again)
    finally:
        again.close()
    assert set(report.reused) == stored and set(report.rendered) == {f"p{i}" for i in range(1, 7)} - stored
    assert set(marks_by_panel(tmp_path / "marks2")) == set(report.rendered)  # nothing stored was sent again
    assert (out_dir / "six.pdf").is_file()
