"""Issue 12 with the real render engine (a tiny random-weight model, on the CPU), through the real
entry point in a subprocess: a typo never replaces a comic, drafts never replace renders, LoRA paths
are used as paths, panels read back with WebUI's rules, and Ctrl-C / SIGTERM keep finished panels."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from storyboard.models.hashes import lora_hash
from storyboard.models.tiny import TinyModel
from tests.webui_infotext import hash_pairs, read_infotext

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="200", PYTHONPATH=str(ROOT))

# Quotes, commas, colons, a newline and text that looks like a parameter line, in one scene.
# (YAML double-quoted: \\" is a quote, \\n a newline.)
SCENE = 'she says \\"hi, there\\", then: Steps: 5, Sampler: Euler, Seed: 1\\n  second line: (smile:1.2)'

# A parameter value with a newline, quotes, a comma and a colon: written JSON-quoted, read back whole.
HIRES = 'line one: a, \\"b\\"\\nline two'
HIRES_TEXT = 'line one: a, "b"\nline two'

STORY = """\
title: Trust Test
characters:
  iku: {{lora: tiny_character_v1, triggers: [iku]}}
  haru: {{lora: tiny-character, weight: 0.5, triggers: [haru]}}
  mei: {{lora: tiny-character, weight: 0.3, triggers: [mei]}}
  kit: {{lora: loras/mychar.safetensors, weight: 0.4, triggers: [kit]}}
render:
  model: tiny-sd
  sampler: {sampler}
  steps: 2
  width: 64
  height: 64
  noise_source: cpu
  webui_root: {root}
  negative: "bad, worst: quality"
layout: {{formats: [pdf, cbz, png], dpi: 20, page_numbers: false}}
pages:
  - panels:
      - {{id: quote, scene: "{scene}", characters: [iku, haru, mei]}}
      - id: path
        scene: garden
        characters: [kit]
        render:
          hires: {{scale: 1.5, upscaler: Latent, denoising_strength: 0.5, steps: 1, prompt: "{hires}"}}
{more}"""


def run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "storyboard", *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
        timeout=timeout,
    )  # fmt: skip
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def write_story(folder: Path, tiny: TinyModel, *, sampler: str = "DPM++ 2M", more: str = "") -> Path:
    (folder / "loras").mkdir(parents=True, exist_ok=True)
    shutil.copy(
        tiny.root / "models" / "Lora" / "tiny-style.safetensors", folder / "loras" / "mychar.safetensors"
    )
    path = folder / "story.yaml"
    path.write_text(STORY.format(sampler=sampler, root=tiny.root, scene=SCENE, hires=HIRES, more=more))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def comic_files(store: Path) -> dict[str, bytes]:
    snap = snapshot(store)
    return {
        k: v
        for k, v in snap.items()
        if not k.startswith("draft/")
        and (k.startswith(("panels/", "pages/")) or k.endswith((".pdf", ".cbz")))
    }


def test_typos_fail_the_build_and_drafts_go_elsewhere_leaving_the_comic_byte_identical(tmp_path, tiny):
    path = write_story(tmp_path, tiny)
    out = tmp_path / "out"
    r = run("build", str(path), "--out", str(out))
    assert r.returncode == 0, r.stderr
    store = out / "story"
    before = comic_files(store)
    assert {"panels/quote.png", "panels/path.png", "trust-test.pdf", "trust-test.cbz"} <= set(before)

    text = path.read_text()
    for typo, needle in [
        (text.replace("lora: tiny-character, weight: 0.5", "lora: tiny-charactr, weight: 0.5"),
         f"{path}:4:16: characters.haru.lora: No lora named 'tiny-charactr' was found"),
        (text.replace("sampler: DPM++ 2M", "sampler: Eular a"),
         f"{path}:9:12: render.sampler: Unknown sampler 'Eular a'. (did you mean 'Euler a'"),
    ]:  # fmt: skip
        path.write_text(typo)
        r = run("build", str(path), "--out", str(out))
        assert r.returncode == 2 and needle in r.stderr, r.stderr
        assert comic_files(store) == before
    path.write_text(text)

    r = run("build", str(path), "--out", str(out), "--draft")
    assert r.returncode == 0, r.stderr
    assert comic_files(store) == before
    draft = store / "draft"
    assert "storyboard draft" in Image.open(draft / "panels" / "quote.png").text["parameters"]
    assert (draft / "trust-test.pdf").is_file() and (draft / "trust-test.cbz").is_file()


def test_panels_read_back_with_webui_rules(tmp_path, tiny):
    path = write_story(tmp_path, tiny)
    out = tmp_path / "out"
    assert run("build", str(path), "--out", str(out)).returncode == 0
    r = run("prompts", str(path), "--json")
    import json

    jobs = {row["panel"]: row for row in json.loads(r.stdout)}
    lora_dir = tiny.root / "models" / "Lora"
    for pid in ("quote", "path"):
        info = Image.open(out / "story" / "panels" / f"{pid}.png").text["parameters"]
        p = read_infotext(info)
        # WebUI strips each prompt line; everything else comes back exactly.
        assert p["Prompt"] == "\n".join(ln.strip() for ln in jobs[pid]["positive"].split("\n"))
        assert p["Negative prompt"] == jobs[pid]["negative"]
        assert (p["Steps"], p["Sampler"], p["Seed"]) == ("2", "DPM++ 2M", str(jobs[pid]["seed"]))
        # DPM++ 2M with schedule Automatic: WebUI's get_sigmas writes the schedule it resolves.
        assert p["Schedule type"] == "Karras"
        pairs = hash_pairs(p["Lora hashes"])
        assert len({n for n, _ in pairs}) == len(pairs)  # no name twice: WebUI's dict would drop one
        if pid == "quote":
            # the composer joins a scene's lines with commas; parameter-like text stays prompt text
            assert (
                'says "hi, there", then: Steps: 5, Sampler: Euler, Seed: 1, second line: (smile:1.2)'
                in p["Prompt"]
            )
            assert "Hires prompt" not in p
            # keyed by the name written in each <lora:NAME:w> tag; tiny-character used twice, listed once
            character = lora_hash(lora_dir / "tiny-character.safetensors")
            assert pairs == [("tiny_character_v1", character), ("tiny-character", character)]
            for name, _ in pairs:
                assert f"<lora:{name}:" in p["Prompt"]
        else:
            # a LoRA given as a path is used as that path; its tag and hash carry the file's stem
            assert pairs == [("mychar", lora_hash(tmp_path / "loras" / "mychar.safetensors"))]
            assert "<lora:mychar:0.4>" in p["Prompt"]
            assert p["Hires prompt"] == HIRES_TEXT and p["Hires upscale"] == "1.5"
            # the planner's size for the panel (its frame's shape at the 64x64 budget)
            assert [int(p["Size-1"]), int(p["Size-2"])] == jobs[pid]["size"]


@pytest.mark.parametrize(
    "signum,code,name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_signal_keeps_finished_panels_and_a_rerun_completes(tmp_path, tiny, signum, code, name):
    more = "  - panels:\n" + "".join(f"      - {{id: n{i:02d}, scene: field {i}}}\n" for i in range(14))
    path = write_story(tmp_path, tiny, more=more)
    out = tmp_path / "out"
    panels = out / "story" / "panels"
    proc = subprocess.Popen(
        [sys.executable, "-m", "storyboard", "build", str(path), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(list(panels.glob("*.png"))) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be interrupted"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stdout + stderr
    assert f"interrupted ({name}): the " in stderr and f"finished in this run are kept in {panels}" in stderr
    kept = sorted(panels.glob("*.png"))
    assert 2 <= len(kept) < 16
    for f in kept:
        Image.open(f).verify()  # whole files only
    assert not list((out / "story").rglob("*.tmp"))
    r = run("build", str(path), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"reused {len(kept)}" in r.stdout and len(list(panels.glob("*.png"))) == 16
