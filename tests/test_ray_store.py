"""The shared store under concurrent writers, the scheduler's choices, and `--ray` without Ray.

Nothing here starts Ray: the store and the scheduler are plain Python, tested directly.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from storyboard.distributed.options import INSTALL, parse_address, require_ray
from storyboard.distributed.schedule import Scheduler, make_chunks
from storyboard.distributed.shared_store import FolderStore, FsspecStore, open_store
from storyboard.errors import StoryboardError
from storyboard.jobs import PanelJob
from storyboard.prompt.extra_networks import LoraUse
from storyboard.story.schema import RenderSettings

H = "ab" + "0" * 62
SIZE = 4 * 1024 * 1024  # big enough that concurrent writes overlap in time


def _write(
    root: str, n: int, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    store = open_store(root)
    data = bytes([n]) * SIZE  # each writer's bytes differ, so a mixed file would show
    barrier.wait()
    results.put((n, store.put_once(H, data, {"writer": n})))


def _read(path: str, stop: multiprocessing.synchronize.Event, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Read the file over and over while it is written: count reads that saw a partial or mixed file."""
    seen = bad = 0
    while not stop.is_set() or seen == 0:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            continue
        seen += 1
        bad += len(data) != SIZE or len(set(data)) != 1
    results.put((seen, bad))


@pytest.mark.parametrize("scheme", ["folder", "file-url"])
def test_concurrent_writers_of_one_hash_leave_one_whole_file(tmp_path: Path, scheme: str) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        root = tmp_path / f"store{round_}"
        spec = str(root) if scheme == "folder" else f"file://{root}"
        writers = 6
        barrier, results = ctx.Barrier(writers), ctx.Queue()
        png = root / "cache" / H[:2] / f"{H}.png"
        stop, reads = ctx.Event(), ctx.Queue()
        reader = ctx.Process(target=_read, args=(str(png), stop, reads))
        reader.start()
        procs = [ctx.Process(target=_write, args=(spec, n, barrier, results)) for n in range(writers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        stop.set()
        reader.join(60)
        seen, bad = reads.get(timeout=5)
        assert seen > 0 and bad == 0  # a reader never saw half a file
        kept = dict(results.get(timeout=5) for _ in range(writers))
        data = png.read_bytes()
        assert len(data) == SIZE and len(set(data)) == 1  # complete, from one writer
        if scheme == "folder":
            # link-once: exactly one writer's bytes kept, and its provenance beside them.
            assert sum(kept.values()) == 1
            winner = next(n for n, k in kept.items() if k)
            assert data[0] == winner
            assert json.loads(png.with_suffix(".json").read_text()) == {"writer": winner}
        else:
            assert any(kept.values())
        assert sorted(f.name for f in png.parent.iterdir()) == [f"{H}.json", f"{H}.png"]  # no temp files


@pytest.mark.parametrize("url", ["memory://storyboard-test/shared", "file://{tmp}/shared"])
def test_fsspec_store_writes_once(tmp_path: Path, url: str) -> None:
    store = open_store(url.format(tmp=tmp_path))
    assert isinstance(store, FsspecStore)
    assert not store.has(H) and store.provenance(H) == {}
    assert store.put_once(H, b"first", {"gpu": "x"})
    assert not store.put_once(H, b"second", {"gpu": "y"})  # immutable: the first write stays
    assert store.has(H) and store.get(H) == b"first" and store.provenance(H) == {"gpu": "x"}
    if url.startswith("file"):
        assert (tmp_path / "shared" / "cache" / "ab" / f"{H}.png").read_bytes() == b"first"


def test_folder_store_is_the_output_folder_layout(tmp_path: Path) -> None:
    from storyboard.app.store import PanelStore

    store = open_store(str(tmp_path))
    assert isinstance(store, FolderStore)
    store.put_once(H, b"png", {})
    assert PanelStore(tmp_path).has(H)  # the driver's store sees what an actor wrote


def job(pid: str, loras: tuple[LoraUse, ...] = (), model: str = "m") -> PanelJob:
    return PanelJob(pid, 1, 1, "x", "", loras, int(pid[1:]), RenderSettings(model=model, width=64, height=64))


A, B = (LoraUse("a", 1.0, 1.0),), (LoraUse("b", 1.0, 1.0),)


def test_groups_are_cut_so_every_actor_has_work() -> None:
    jobs = [job(f"p{i}", A) for i in range(1, 8)] + [job("p8", B)]
    assert [c.panel_ids for c in make_chunks(jobs, 2)] == [
        ["p1", "p2", "p3", "p4"], ["p5", "p6", "p7"], ["p8"]
    ]  # fmt: skip
    assert [len(c.jobs) for c in make_chunks(jobs[:7], 1, max_size=3)] == [3, 3, 1]


def test_an_actor_takes_work_for_the_lora_set_it_has_applied() -> None:
    jobs = [job("p1", A), job("p2", B), job("p3", A, model="other"), job("p4")]
    sched = Scheduler.of(jobs, actors=1)
    b = sched.next_for(None, None)
    assert b is not None and b.panel_ids == ["p1"]  # nothing loaded: first in line
    other = make_chunks([job("p3", A, model="other")], 1)[0]
    assert (c := sched.next_for(other.model, other.loras)) is not None and c.panel_ids == ["p3"]
    m = make_chunks([job("p9", B)], 1)[0]
    assert (c := sched.next_for(m.model, None)) is not None and c.panel_ids == ["p2"]  # same checkpoint
    assert (c := sched.next_for(m.model, m.loras)) is not None and c.panel_ids == ["p4"]
    assert sched.next_for(None, None) is None


def test_a_failed_chunk_comes_back_job_by_job_and_a_second_failure_gives_up() -> None:
    sched = Scheduler.of([job("p1", A), job("p2", A), job("p3", B)], actors=1)
    first = sched.next_for(None, None)
    assert first is not None and first.panel_ids == ["p1", "p2"]
    sched.failed(first.jobs, "actor died")
    assert [c.panel_ids for c in sched.chunks] == [["p1"], ["p2"], ["p3"]]
    again = sched.next_for(None, None)
    assert again is not None
    sched.failed(again.jobs, "RuntimeError: boom")
    assert [(f.panel_id, f.reason) for f in sched.given_up] == [("p1", "RuntimeError: boom")]
    assert [c.panel_ids for c in sched.chunks] == [["p2"], ["p3"]]


def test_ray_address_forms() -> None:
    from storyboard.commands.ray_options import ray_argv as _ray_argv

    assert parse_address(None) is None and parse_address("local") is None
    assert parse_address("ray://head:10001") == "ray://head:10001"
    assert _ray_argv(["build", "s.yaml", "--ray"]) == ["build", "s.yaml", "--ray=local"]
    assert _ray_argv(["build", "--ray", "s.yaml"]) == ["build", "--ray=local", "s.yaml"]
    assert _ray_argv(["build", "--ray", "--draft", "s.yaml"])[1] == "--ray=local"
    assert _ray_argv(["build", "--ray", "head:6379", "s.yaml"]) == ["build", "--ray", "head:6379", "s.yaml"]
    assert _ray_argv(["build", "--ray", "auto", "s.yaml"])[2] == "auto"


def test_without_ray_the_flag_is_one_sentence_saying_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if not installed
    with pytest.raises(StoryboardError) as err:
        require_ray()
    assert err.value.message == f"--ray needs Ray, which is not installed here: run {INSTALL}."
    from storyboard.cli import app

    story = Path(__file__).resolve().parents[1] / "stories" / "demo.yaml"
    for args in (
        ["build", str(story), "--draft", "--ray=local"],
        ["render", str(story), "-p", "gate", "--ray=auto"],
    ):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
        assert isinstance(result.exception, StoryboardError), result.output
        assert "pip install 'storyboard[ray]'" in result.exception.message
    assert not (tmp_path / "demo").exists()  # nothing was built


def test_check_fix_asks_the_app_s_renderer_factory_for_ray(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    from check_helpers import STORY, draw_panel
    from test_check_fix import STORY_YAML

    from storyboard.app import operations
    from storyboard.check.standin import write_all
    from storyboard.cli import app
    from storyboard.distributed import RayOptions
    from storyboard.render.draft import DraftRenderer

    story = tmp_path / "story.yaml"
    story.write_text(STORY_YAML)
    for pid, _, figs in STORY:
        draw_panel(tmp_path / "output" / "story" / "panels" / f"{pid}.png", figs)
    write_all(tmp_path / "models")
    asked: list[dict[str, object]] = []

    def factory(loaded: object, **kw: object) -> DraftRenderer:
        asked.append(kw)
        return DraftRenderer()  # stands in for the Ray renderer: this test is about the wiring

    monkeypatch.setattr(operations, "make_renderer", factory)
    args = ["check", str(story), "--out", str(tmp_path / "output"), "--models", str(tmp_path / "models")]
    result = CliRunner().invoke(app, [*args, "--fix", "--tries", "1", "--ray", "head:6379"])
    assert result.exit_code == 0, result.output
    assert [(kw["ray"], kw["out_root"]) for kw in asked] == [
        (RayOptions(address="head:6379"), tmp_path / "output")
    ]


def test_a_worker_returns_each_job_of_a_chunk_even_when_two_share_a_pixel_spec(tmp_path: Path) -> None:
    """Two panels drawn from the same settings share a hash; both must come back, once each."""
    from storyboard.app.build import png_bytes
    from storyboard.distributed.worker import RenderWorker, WorkerSpec
    from storyboard.render.draft import DraftRenderer

    twins = [job("p1", A), job("p2", A), PanelJob("p3", 1, 2, "x", "", A, 1, job("p1").settings)]
    assert twins[0].spec_digest() == twins[2].spec_digest()
    worker = RenderWorker(WorkerSpec(DraftRenderer, str(tmp_path), png_bytes))
    hashes = ["a" * 64, "b" * 64, "a" * 64]
    done = worker.render(twins, hashes)
    assert sorted(d.index for d in done) == [0, 1, 2]
    assert [d.kept for d in sorted(done, key=lambda d: d.index)] == [True, True, False]  # stored once
    assert worker.info()["gpu"].startswith("cpu")
