"""Every CLI command end to end, through the real entry point (a subprocess for the console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "stories" / "demo.yaml"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "storyboard.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=300,
    )


def test_validate_ok_and_error(tmp_path):
    r = run("validate", str(DEMO), "--no-files")
    assert r.returncode == 0, r.stderr
    assert "3 pages, 7 panels, 2 characters" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\npages:\n  - panels:\n      - scene: a\n        sead: 3\n")
    r = run("validate", str(bad))
    assert r.returncode == 2
    assert f"{bad}:5:9: pages[0].panels[0]: unknown key 'sead'. Did you mean 'seed'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_file_is_a_sentence_not_a_traceback(tmp_path):
    r = run("validate", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "file not found" in r.stderr and "Traceback" not in r.stderr


def test_prompts_json_and_table():
    r = run("prompts", str(DEMO), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["panel"] for row in rows] == ["gate", "listen", "garden", "meet", "play", "smile", "encore"]
    meet = rows[3]
    assert [lo["name"] for lo in meet["loras"]] == [
        "Iku_Nakatani-000016_v1.0",
        "Haru_guitar_boy_v2",
        "blindbox_v1_mix",
    ]
    # Rendered in the shape of its landscape frame at the story's 448x640 pixel budget.
    assert meet["size"] == [616, 464] and meet["output_size"] == [1232, 928]
    assert rows[4]["seed"] == 3447412781
    r = run("prompts", str(DEMO))
    assert r.returncode == 0 and "gate" in r.stdout and "3447412781" in r.stdout


def test_schema(tmp_path):
    out = tmp_path / "schema.json"
    r = run("schema", "--out", str(out))
    assert r.returncode == 0, r.stderr
    schema = json.loads(out.read_text())
    assert schema["title"] == "storyboard story"
    assert {"title", "characters", "render", "pages", "layout", "style"} <= set(schema["properties"])
    assert schema["properties"]["characters"]["additionalProperties"]["anyOf"][1]["type"] == "string"


def test_init_then_build_draft(tmp_path):
    proj = tmp_path / "proj"
    r = run("init", str(proj))
    assert r.returncode == 0, r.stderr
    story = proj / "stories" / "example.yaml"
    assert story.is_file() and (proj / "characters" / "mira.yaml").is_file()
    r = run("init", str(proj))
    assert r.returncode == 2 and "already exists" in r.stderr
    out = tmp_path / "out"
    r = run("build", str(story), "--draft", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "rendered 2 panel(s), reused 0" in r.stdout
    img = Image.open(out / "example" / "draft" / "panels" / "p1.1.png")
    assert not (out / "example" / "panels").exists()  # drafts never land where real renders go
    # The planner shapes the 512x512 budget to the panel's frame; the draft is drawn at that size.
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    assert img.size == plan(load_story(story))[0].output_size != (512, 512)
    assert "storyboard draft" in img.text["parameters"]  # type: ignore[attr-defined]


def test_build_without_models_fails_with_every_missing_file_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    r = run("build", str(DEMO), "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    # One run names the checkpoint and every LoRA, each where the story names it.
    assert f"{DEMO}:26:10: render.model: No checkpoint named 'AnythingV5Ink_ink'" in r.stderr
    assert f"{DEMO}:13:11: characters.haru.lora: No lora named 'Haru_guitar_boy_v2'" in r.stderr
    assert f"{DEMO}:20:13: style.loras[0].lora: No lora named 'blindbox_v1_mix'" in r.stderr
    # iku's LoRA is named in characters/iku.yaml; the story's reference to that file is the place.
    assert f"{DEMO}:10:3: characters.iku.lora: No lora named 'Iku_Nakatani-000016_v1.0'" in r.stderr
    assert r.stderr.index(":10:3:") < r.stderr.index(":13:11:") < r.stderr.index(":20:13:")
    assert "--draft" in r.stderr
    assert not out.exists()
    r = run("build", str(DEMO), "--out", str(out), "--draft")
    assert r.returncode == 0, r.stderr
    assert Image.open(out / "demo" / "draft" / "panels" / "meet.png").size == (1232, 928)  # landscape frame
    assert len(list((out / "demo" / "draft").glob("*.pdf"))) == 1
    assert not list((out / "demo").glob("*.pdf"))


def test_render_single_panel_candidates_pick_and_layout(tmp_path):
    import shutil

    shutil.copytree(ROOT / "stories", tmp_path / "stories")
    shutil.copytree(ROOT / "characters", tmp_path / "characters")
    story = tmp_path / "stories" / "demo.yaml"
    out = tmp_path / "out"
    assert run("layout", str(story), "--out", str(out)).returncode == 2  # nothing rendered yet
    assert run("build", str(story), "--draft", "--out", str(out)).returncode == 0
    panels = out / "demo" / "draft" / "panels"
    before = {p.name: p.read_bytes() for p in panels.glob("*.png")}
    r = run("render", str(story), "--panel", "listen", "--seed", "7", "--draft", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "rendered 1 panel(s)" in r.stdout and "storyboard pick" in r.stdout
    after = {p.name: p.read_bytes() for p in panels.glob("*.png")}
    assert {k for k in before if before[k] != after[k]} == {"listen.png"}
    r = run("render", str(story), "--panel", "gate", "--candidates", "3", "--draft", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "demo" / "draft" / "candidates" / "gate" / "sheet.png").is_file()
    assert len(list((out / "demo" / "draft" / "candidates" / "gate").glob("seed-*.png"))) == 3
    r = run("render", str(story), "--panel", "nope", "--draft", "--out", str(out))
    assert r.returncode == 2 and "No panel 'nope'" in r.stderr
    r = run("pick", str(story), "listen", "7")
    assert r.returncode == 0 and "seed: 7" in story.read_text()
    assert run("layout", str(story), "--out", str(out)).returncode == 2  # no real renders
    r = run("layout", str(story), "--out", str(out), "--draft")
    assert r.returncode == 0, r.stderr
    assert "4 page image(s)" in r.stdout  # title page + 3 story pages


def test_subcommands_are_registered():
    r = run("prompt", "explain", "(full body:1.2), [cat:dog:0.5] <lora:x:0.7>", "--steps", "10")
    assert r.returncode == 0, r.stderr
    assert "full body" in r.stdout and "1.2" in r.stdout and "x" in r.stdout
    r = run("lora", "inspect", "missing_lora_name", "--lora-dir", str(ROOT))
    assert r.returncode == 2 and "missing_lora_name" in r.stderr and "Traceback" not in r.stderr
