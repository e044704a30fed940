"""Build cache: only changed panels render, single panels regenerate, a killed build resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storyboard.app.build import build
from storyboard.app.store import PanelStore
from storyboard.errors import StoryboardError
from storyboard.jobs import MANIFEST_VERSION
from storyboard.render.draft import DraftRenderer
from storyboard.story.load import load_story
from storyboard.writes import safe_child

STORY = """\
title: Cache Test
characters:
  ann: {lora: ann_v1, triggers: [ann]}
render: {width: 64, height: 96}
layout: {formats: [pdf, png], page_numbers: false, dpi: 72}
pages:
  - panels:
      - {id: a, scene: one, characters: [ann], caption: Hello}
      - {id: b, scene: two}
      - {id: c, scene: three}
  - panels:
      - {id: d, scene: four}
      - {id: e, scene: five}
"""


class CountingRenderer(DraftRenderer):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def render(self, jobs):
        for r in super().render(jobs):
            self.calls.append(r.job.panel_id)
            yield r


def write(tmp_path: Path, text: str = STORY) -> Path:
    p = tmp_path / "story.yaml"
    p.write_text(text)
    return p


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in {".lock", "manifest.json"}
    }


def test_unchanged_rebuild_renders_nothing(tmp_path):
    story = write(tmp_path)
    out = tmp_path / "out"
    r1 = CountingRenderer()
    build(load_story(story), out, r1)
    assert r1.calls == ["a", "b", "c", "d", "e"]
    before = files(out / "story")
    r2 = CountingRenderer()
    rep = build(load_story(story), out, r2)
    assert r2.calls == [] and sorted(rep.reused) == ["a", "b", "c", "d", "e"]
    assert files(out / "story") == before


def test_editing_one_scene_renders_exactly_that_panel(tmp_path):
    story = write(tmp_path)
    out = tmp_path / "out"
    build(load_story(story), out, CountingRenderer())
    before = files(out / "story" / "panels")
    write(tmp_path, STORY.replace("scene: three", "scene: three in the rain"))
    r = CountingRenderer()
    build(load_story(story), out, r)
    assert r.calls == ["c"]
    after = files(out / "story" / "panels")
    assert [k for k in before if before[k] != after[k]] == ["c.png"]


def test_caption_change_relays_out_without_rendering(tmp_path):
    story = write(tmp_path)
    out = tmp_path / "out"
    build(load_story(story), out, CountingRenderer())
    write(tmp_path, STORY.replace("caption: Hello", "caption: Goodbye"))
    r = CountingRenderer()
    rep = build(load_story(story), out, r)
    assert r.calls == [] and rep.layout_files


def test_single_panel_with_new_seed_leaves_others_identical(tmp_path):
    story = write(tmp_path)
    out = tmp_path / "out"
    build(load_story(story), out, CountingRenderer())
    before = files(out / "story" / "panels")
    r = CountingRenderer()
    build(load_story(story), out, r, only=["b"], seeds={"b": 12345})
    assert r.calls == ["b"]
    after = files(out / "story" / "panels")
    assert {k for k in before if before[k] != after[k]} == {"b.png"}
    manifest = PanelStore(out / "story").read_manifest()
    assert manifest.panels["b"].seed == 12345


def test_manifest_contents(tmp_path):
    story = write(tmp_path)
    out = tmp_path / "out"
    build(load_story(story), out, CountingRenderer())
    m = PanelStore(out / "story").read_manifest()
    a = m.panels["a"]
    assert list(m.panels) == ["a", "b", "c", "d", "e"]
    assert a.file == "panels/a.png" and a.loras[0].name == "ann_v1"
    assert a.positive.endswith("<lora:ann_v1:1>") and len(a.job_hash) == 64
    # The file on disk is the versioned JSON form, and reads back to the same record.
    raw = json.loads((out / "story" / "manifest.json").read_text())
    assert raw["version"] == MANIFEST_VERSION and raw["panels"]["a"]["seed"] == a.seed


def test_old_and_newer_manifests(tmp_path):
    store = PanelStore(tmp_path)
    # Written before manifests had a version: read as version 1.
    (tmp_path / "manifest.json").write_text(json.dumps({"story": "t", "source": "s", "panels": {}}))
    assert store.read_manifest().version == MANIFEST_VERSION
    (tmp_path / "manifest.json").write_text(json.dumps({"version": MANIFEST_VERSION + 1, "panels": {}}))
    with pytest.raises(StoryboardError, match="newer storyboard"):
        store.read_manifest()
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoryboardError, match="not valid JSON"):
        store.read_manifest()


def test_safe_child_refuses_escape(tmp_path):
    with pytest.raises(StoryboardError, match="outside the output folder"):
        safe_child(tmp_path, "..", "x.png")


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from storyboard.app.build import build
    from storyboard.render.draft import DraftRenderer
    from storyboard.story.load import load_story

    class Slow(DraftRenderer):
        def render(self, jobs):
            for r in super().render(jobs):
                time.sleep(0.4)
                yield r

    build(load_story(Path(sys.argv[1])), Path(sys.argv[2]), Slow())
""")


def test_sigkill_mid_build_resumes_to_identical_outputs(tmp_path):
    story = write(tmp_path)
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    build(load_story(story), ref_out, DraftRenderer())
    script = tmp_path / "slow.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(story), str(out)])
    panels = out / "story" / "panels"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(panels.glob("*.png"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in panels.glob("*.png"))
    assert 2 <= len(done) < 5, done
    r = CountingRenderer()
    build(load_story(story), out, r)
    assert sorted(r.calls) == sorted({"a", "b", "c", "d", "e"} - {n[:-4] for n in done})
    assert files(out / "story").keys() >= files(ref_out / "story").keys()
    ref = files(ref_out / "story")
    got = files(out / "story")
    assert {k: got[k] for k in ref} == ref


def test_second_build_waits_for_the_lock(tmp_path):
    store = PanelStore(tmp_path / "s")
    with (
        store.lock(),
        pytest.raises(StoryboardError, match="being built by pid"),
        PanelStore(tmp_path / "s").lock(wait=False),
    ):
        pass
