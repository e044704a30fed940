"""Issue 22, paths as typed: every command that writes a user's file writes the file the user named.

Run as a user runs them: `storyboard ...` in a subprocess, the working directory a copy of the
repository's stories/, characters/ and templates/, the story named by a relative path, through `..`,
from another folder, or through a symlink (whose target is written; the link stays). After each write
the command reports, the file is read back and must say what the message says; nothing else in the
copy may change. Where a write must fail, the message is a sentence and the exit code is not 0.
(The review page's Pick and Save are in tests/test_paths_review_page.py.)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from storyboard.app.init_project import EXAMPLE_CHARACTER, EXAMPLE_STORY
from storyboard.story.load import load_story
from storyboard.story.plan import plan
from tests.story_helpers import changed_lines

ROOT = Path(__file__).resolve().parents[1]


def copy_repo(tmp_path: Path) -> Path:
    """tmp_path/repo: the repository's stories/, characters/ and templates/, as a user's checkout."""
    repo = tmp_path / "repo"
    for name in ("stories", "characters", "templates"):
        shutil.copytree(ROOT / name, repo / name)
    (tmp_path / "elsewhere").mkdir()
    return repo


def storyboard(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="200", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "storyboard", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file (bytes) and symlink (its target) under `folder`, by relative path."""
    found: dict[str, bytes | str] = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(dirpath) / name
            found[str(p.relative_to(folder))] = os.readlink(p) if p.is_symlink() else p.read_bytes()
    return found


# name -> (working directory relative to tmp_path, the story path as typed there)
STORY_FORMS = {
    "relative": ("repo", "stories/demo.yaml"),
    "through ..": ("repo", "characters/../stories/demo.yaml"),
    "bare name": ("repo/stories", "demo.yaml"),
    "another folder": ("elsewhere", "../repo/stories/demo.yaml"),
    "symlink": ("repo", "stories/linked.yaml"),  # -> ../private/demo.yaml
}


def story_as_typed(tmp_path: Path, form: str) -> tuple[Path, str, Path]:
    """(working directory, path as typed, the file that must change) for one form."""
    repo = copy_repo(tmp_path)
    cwd, typed = STORY_FORMS[form]
    real = repo / "stories" / "demo.yaml"
    if form == "symlink":
        (repo / "private").mkdir()
        real = repo / "private" / "demo.yaml"
        shutil.copy(repo / "stories" / "demo.yaml", real)
        (repo / "stories" / "linked.yaml").symlink_to("../private/demo.yaml")
    return tmp_path / cwd, typed, real


def seeds_of(story: Path) -> dict[str, int]:
    return {j.panel_id: j.seed for j in plan(load_story(story))}


@pytest.mark.parametrize("form", list(STORY_FORMS))
def test_pick_writes_the_story_the_user_named(tmp_path: Path, form: str) -> None:
    cwd, typed, real = story_as_typed(tmp_path, form)
    real.chmod(0o640)  # a private story stays private
    before_all, before = snapshot(tmp_path), real.read_text()

    r = storyboard(cwd, "pick", typed, "meet", "1234")
    assert r.returncode == 0, r.stderr
    said = re.fullmatch(r"(.+): panel (\S+) now has seed (\d+)\n", r.stdout)
    assert said is not None, r.stdout
    assert said.group(1) == typed
    # The file as the user named it, read back: it says what the message said, and only that changed.
    assert seeds_of(cwd / said.group(1))[said.group(2)] == int(said.group(3)) == 1234
    assert changed_lines(before, real.read_text()) == ["+        seed: 1234"]
    after_all = snapshot(tmp_path)
    rel = str(real.relative_to(tmp_path))
    after_all.pop(rel), before_all.pop(rel)
    assert after_all == before_all  # nothing else written: no stories/stories/demo.yaml
    assert real.stat().st_mode & 0o777 == 0o640
    if form == "symlink":
        assert os.readlink(cwd / typed) == "../private/demo.yaml"  # the link stays a link

    # A second pick on the file the first one wrote: the seed line changes again, nothing else.
    r = storyboard(cwd, "pick", typed, "meet", "99")
    assert r.returncode == 0, r.stderr
    assert seeds_of(cwd / typed)["meet"] == 99
    assert changed_lines(before, real.read_text()) == ["+        seed: 99"]


# name -> (working directory relative to tmp_path, the project folder as typed there)
INIT_FORMS = {
    "relative": ("repo", "my-comic"),
    "through ..": ("repo", "stories/../my-comic"),
    "another folder": ("elsewhere", "../repo/my-comic"),
    "into a symlinked folder": ("repo", "linked-comic"),  # -> ../comics (exists, empty)
}


@pytest.mark.parametrize("form", list(INIT_FORMS))
def test_init_writes_the_project_named_and_its_next_command_works(tmp_path: Path, form: str) -> None:
    repo = copy_repo(tmp_path)
    cwd_rel, typed = INIT_FORMS[form]
    cwd = tmp_path / cwd_rel
    project = repo / "my-comic"
    if form == "into a symlinked folder":
        project = tmp_path / "comics"
        project.mkdir()
        (repo / "linked-comic").symlink_to("../comics")
    before = snapshot(tmp_path)

    r = storyboard(cwd, "init", typed)
    assert r.returncode == 0, r.stderr
    wrote = [line.removeprefix("wrote ") for line in r.stdout.splitlines() if line.startswith("wrote ")]
    assert wrote == [f"{typed}/stories/example.yaml", f"{typed}/characters/mira.yaml"]
    # Each file named in the output is where it says, with the example's text.
    assert (cwd / wrote[0]).read_text() == EXAMPLE_STORY
    assert (cwd / wrote[1]).read_text() == EXAMPLE_CHARACTER
    new = {k for k in snapshot(tmp_path) if k not in before}
    base = str(project.relative_to(tmp_path))
    assert new == {f"{base}/stories/example.yaml", f"{base}/characters/mira.yaml"}
    assert (project / "templates").is_dir() and (project / "output").is_dir()

    # The command init prints next works as printed, from the same folder.
    nxt = next(line for line in r.stdout.splitlines() if line.startswith("next: "))
    argv = shlex.split(nxt.removeprefix("next: "))
    assert argv[0] == "storyboard"
    r = storyboard(cwd, *argv[1:])
    assert r.returncode == 0, r.stderr
    assert len(list((cwd / "output" / "example" / "draft").glob("*.pdf"))) == 1

    r = storyboard(cwd, "init", typed)  # a second init overwrites nothing
    assert r.returncode == 2 and "already exists; init does not overwrite files" in r.stderr
    assert (cwd / wrote[0]).read_text() == EXAMPLE_STORY


def refused(r: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A failed write: exit 2, one sentence naming the file, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


def test_writes_that_must_fail_say_so(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path)
    story = repo / "stories" / "demo.yaml"
    text = story.read_text()
    try:
        story.chmod(0o444)
        refused(
            storyboard(repo, "pick", "stories/demo.yaml", "meet", "5"),
            "error: Cannot write stories/demo.yaml: the file is read-only; nothing was changed.",
        )
        story.chmod(0o644)
        (repo / "stories").chmod(0o555)
        refused(
            storyboard(repo, "pick", "stories/demo.yaml", "meet", "5"),
            "error: Cannot write stories/demo.yaml: the folder stories is read-only; nothing was changed.",
        )
        (repo / "locked").mkdir(mode=0o555)
        refused(
            storyboard(repo, "init", "locked/comic"),
            "error: Cannot write locked/comic/stories/example.yaml: the folder",
            f"{repo / 'locked'} is read-only",
        )
        assert list((repo / "locked").iterdir()) == []
    finally:
        (repo / "stories").chmod(0o755)
        story.chmod(0o644)
    assert story.read_text() == text
    assert sorted(p.name for p in (repo / "stories").iterdir()) == sorted(
        p.name for p in (ROOT / "stories").iterdir()
    )  # no temp file left behind

    # Through a symlink, the message names the link and the file it points to.
    (repo / "private").mkdir()
    shutil.copy(story, repo / "private" / "demo.yaml")
    (repo / "private" / "demo.yaml").chmod(0o444)
    (repo / "stories" / "linked.yaml").symlink_to("../private/demo.yaml")
    refused(
        storyboard(repo, "pick", "stories/linked.yaml", "meet", "5"),
        f"Cannot write stories/linked.yaml (a link to {repo / 'private' / 'demo.yaml'}):",
        "the file is read-only; nothing was changed.",
    )


def test_dev_tiny_model_prints_an_absolute_webui_root_for_both_families(tmp_path: Path) -> None:
    copy_repo(tmp_path)
    cwd = tmp_path / "repo"
    for family, folder, model in (("sd1", "output/tiny", "tiny-sd"), ("sdxl", "output/tiny-xl", "tiny-sdxl")):
        r = storyboard(cwd, "dev", "tiny-model", "--family", family, folder)
        assert r.returncode == 0, r.stderr
        hint = re.search(r"render: \{webui_root: (.+), model: (\S+)\}", r.stdout)
        assert hint is not None, r.stdout
        assert Path(hint.group(1)).is_absolute()
        assert Path(hint.group(1)) == (cwd / folder).resolve() and hint.group(2) == model
        assert (Path(hint.group(1)) / "models" / "Stable-diffusion" / f"{model}.safetensors").is_file()


FIX_STORY = """\
title: Fix Me
characters:
  iku:
    lora: tiny_character_v1
    triggers: [1girl]
render:
  model: tiny-sd
  sampler: Euler a
  steps: 2
  width: 64
  height: 64
  noise_source: cpu
  webui_root: ../output/tiny-model
pages:
  - panels:
      - {id: p1, scene: gate, characters: [iku]}
      - {id: p2, scene: garden, characters: [iku]}
      - {id: p3, scene: hall, characters: [iku]}
      - {id: p4, scene: roof, characters: [iku], seed: 4242}
"""


def test_check_fix_writes_the_story_named_and_keeps_the_new_render(tmp_path: Path) -> None:
    """`check --fix` from the repository root with `stories/fix.yaml`: each "fixed P: seed A -> B" it
    prints is in the story file afterwards, and panels/P.png is the render with seed B (its infotext
    says so), not the old one put back. The tiny model's panels are noise, so which panels the
    stand-in check flags is arbitrary, but fixed: same seeds, same pixels."""
    from PIL import Image, ImageDraw

    from storyboard.check.standin import write_all

    repo = copy_repo(tmp_path)
    (repo / "stories" / "fix.yaml").write_text(FIX_STORY)
    write_all(repo / "models")
    assert storyboard(repo, "dev", "tiny-model", "output/tiny-model").returncode == 0
    r = storyboard(repo, "build", "stories/fix.yaml")
    assert r.returncode == 0, r.stderr
    # Plant an off-model p4 (a green figure on white), as a drifted render would be.
    planted = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(planted).rectangle([20, 5, 44, 60], fill=(40, 170, 60))
    planted.save(repo / "output" / "fix" / "panels" / "p4.png")

    r = storyboard(repo, "check", "stories/fix.yaml", "--models", "models", "--fix", "--tries", "2")
    assert r.returncode == 0, r.stderr
    fixed = re.findall(r"^fixed (\S+): seed (\d+) -> (\d+)", r.stdout, re.M)
    assert fixed, r.stdout  # at least one panel changed, or this test proves nothing
    seeds = seeds_of(repo / "stories" / "fix.yaml")
    for pid, old, new in fixed:
        assert seeds[pid] == int(new) != int(old)
        infotext = Image.open(repo / "output" / "fix" / "panels" / f"{pid}.png").text["parameters"]
        assert f"Seed: {new}," in infotext
    assert not (repo / "stories" / "stories").exists()
