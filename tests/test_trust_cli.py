"""Issue 12: every user mistake through the real entry point (`python -m storyboard` in a subprocess):
exit code, one sentence naming the file or option, no traceback, done within seconds (the subprocess
timeout is the limit; nothing here is timed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "stories" / "demo.yaml"
LIMIT_S = 60  # generous: a refusal takes well under a second plus interpreter start-up


def run(
    *args: str, cwd: Path | None = None, timeout: int = LIMIT_S, code: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="200", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "storyboard", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=timeout)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


STORY = """\
title: T
render: {{width: 64, height: 64}}
layout: {{formats: [pdf, png], dpi: 20, page_numbers: false}}
{extra}
pages:
  - panels:
      - {{id: a, scene: one}}
"""


def story(tmp_path: Path, extra: str = "", text: str | None = None, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text if text is not None else STORY.format(extra=extra))
    return p


BILLION_LAUGHS = "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


@pytest.mark.parametrize(
    "args,code,needle",
    [
        ((), 2, "Usage:"),
        (("buld", "x"), 2, "No such command 'buld'. Did you mean 'build'?"),
        (("build",), 2, "Missing argument 'story'"),
        (("build", "--drat", "x.yaml"), 2, "No such option: --drat"),
        (("validate", "stories"), 2, "stories is a folder; give the story's .yaml file."),
        (("build", "stories"), 2, "stories is a folder; give the story's .yaml file."),
        (("build", "nope.yaml", "--draft"), 2, "nope.yaml: file not found."),
        (("render", str(DEMO), "--panel", "x", "--seed", "1", "--reroll"), 2, "Use only one of --seed"),
    ],
)
def test_usage_errors_are_one_sentence(args, code, needle):
    r = run(*args)
    assert r.returncode == code
    assert needle in r.stderr


def test_version_and_plain_help():
    from storyboard import __version__

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"storyboard {__version__}"
    r = run("prompt", "explain", "--help")
    assert "Sampling steps, for [a:b:N] schedules." in " ".join(r.stdout.split())
    r = run("build", "--help")
    assert "--draft " in r.stdout and "<bool>" not in r.stdout and "--require-models" not in r.stdout


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda t: story(t, text=BILLION_LAUGHS), "expands to more than 500,000 values"),
        (lambda t: story(t, text="a: " + "[" * 5000 + "]" * 5000 + "\n"), "nested more than 64 levels deep"),
        (lambda t: story(t, text="# c\n" * 600_000), "may be at most 2 MB"),
        (
            lambda t: story(t, "characters:\n  x: {lora: a, weight: 1e308}"),
            "s.yaml:5:24: characters.x.weight: ",
        ),
        (
            lambda t: story(t, "characters:\n  x: {lora: a, weight: .nan}"),
            "characters.x.weight: Input should be a finite number",
        ),
        (
            lambda t: story(
                t, text=STORY.format(extra="").replace("dpi: 20,", "dpi: 20, page_size: [100000, 300],")
            ),
            "s.yaml:3:51: layout.page_size: a custom page size must be between 50 and 1200 mm",
        ),
        (
            lambda t: story(
                t, text=STORY.format(extra="").replace("dpi: 20,", "dpi: 1200, page_size: [1000, 1000],")
            ),
            "megapixels",
        ),
        (
            lambda t: story(t, text=STORY.format(extra="").replace("scene: one", "scene: x <lora:y:1e308>")),
            "s.yaml:7:",
        ),
    ],
)
def test_input_limits_refused_with_a_sentence(tmp_path, make, needle):
    path = make(tmp_path)
    r = run("validate", str(path), "--no-files")
    assert r.returncode == 2
    assert needle in r.stderr
    assert str(path) in r.stderr


def test_unusual_lora_weight_is_a_warning_with_its_place(tmp_path):
    path = story(tmp_path, "characters:\n  x: {lora: a, weight: 5}")
    r = run("validate", str(path), "--no-files")
    assert r.returncode == 0, r.stderr
    assert f"warning: {path}:5:24: characters.x.weight is 5; LoRA weights beyond -3..3" in r.stderr


def test_long_title_makes_a_short_safe_file_name(tmp_path):
    title = "A very long title " * 20  # 360 characters
    path = story(tmp_path, text=STORY.format(extra="").replace("title: T", f"title: {title}"))
    r = run("build", str(path), "--draft", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    (pdf,) = (tmp_path / "out" / "s" / "draft").glob("*.pdf")
    assert pdf.name.startswith("a-very-long-title-") and len(pdf.name) <= 84 and not pdf.stem.endswith("-")


def test_validate_reports_every_file_problem_at_once_and_no_files_skips_them(tmp_path):
    text = """\
title: T
render: {width: 64, height: 64, sampler: Eular a}
characters:
  ann: {lora: ann_v1}
  bob: {lora: /nowhere/bob.safetensors}
style:
  loras: [{lora: style_x}]
pages:
  - panels:
      - {id: a, scene: one, characters: [ann, bob]}
"""
    path = story(tmp_path, text=text)
    r = run("validate", str(path))
    assert r.returncode == 2
    lines = [ln.strip() for ln in r.stderr.splitlines()]
    assert lines[0] == "error: Story file has 5 problems:"
    # top down, each at the place the story names it (the model is not named: the render block)
    assert lines[1].startswith(f"{path}:2:1: render.model: No checkpoint named 'AnythingV5' was found")
    assert lines[2].startswith(
        f"{path}:2:42: render.sampler: Unknown sampler 'Eular a'. (did you mean 'Euler a'"
    )
    assert lines[3].startswith(f"{path}:4:15: characters.ann.lora: No lora named 'ann_v1' was found")
    assert lines[4].startswith(
        f"{path}:5:15: characters.bob.lora: The lora file /nowhere/bob.safetensors does not"
    )
    assert lines[5].startswith(f"{path}:7:18: style.loras[0].lora: No lora named 'style_x' was found")
    r = run("validate", str(path), "--no-files")
    assert r.returncode == 0 and "OK (story only)" in r.stdout


@pytest.mark.parametrize("name", ["UniPC", "LCM", "Restart"])
def test_webui_samplers_not_rendered_here_are_named_so(tmp_path, name):
    path = story(tmp_path, text=STORY.format(extra="").replace("height: 64", f"height: 64, sampler: {name}"))
    r = run("validate", str(path))
    assert r.returncode == 2
    assert f"render.sampler: Sampler '{name}' is a WebUI sampler storyboard does not render yet." in r.stderr


def test_internal_error_prints_one_line_and_logs_the_traceback(tmp_path):
    code = (
        "import storyboard.app as a\n"
        "def boom(*_a, **_k): raise ZeroDivisionError('oops')\n"
        "a.validate = boom\n"
        "import sys; sys.argv[0] = 'storyboard'\n"
        "from storyboard.cli import main; main()\n"
    )
    r = run("validate", str(DEMO), code=code)
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(
        "internal error: this is a bug in storyboard (ZeroDivisionError); the details are in "
    )
    log = Path(line.split("the details are in ")[1].split(",")[0])
    assert "Traceback" in log.read_text() and "oops" in log.read_text()
    log.unlink()


# --- nothing is written outside the output folder --------------------------------------------------


@pytest.mark.parametrize(
    "planted", ["draft", "draft/.lock", "draft/pages", "draft/cache", "draft/manifest.json", "draft/panels"]
)
def test_a_symlink_planted_in_the_output_folder_is_refused(tmp_path, planted):
    path = story(tmp_path)
    out = tmp_path / "out"
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "precious.txt"
    victim.write_text("keep me")
    link = out / "s" / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim if planted.endswith((".lock", ".json")) else victim_dir)
    r = run("build", str(path), "--draft", "--out", str(out))
    assert r.returncode == 2
    assert "Refusing to write" in r.stderr and "is a symlink" in r.stderr
    assert victim.read_text() == "keep me" and [p.name for p in victim_dir.iterdir()] == ["precious.txt"]


def test_the_output_folder_itself_may_be_a_symlink(tmp_path):
    path = story(tmp_path)
    disk = tmp_path / "other-disk"
    (disk / "s").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "s").symlink_to(disk / "s")
    r = run("build", str(path), "--draft", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (disk / "s" / "draft" / "panels" / "a.png").is_file()


def test_a_resumed_build_removes_what_a_killed_one_left(tmp_path):
    path = story(tmp_path)
    out = tmp_path / "out"
    assert run("build", str(path), "--draft", "--out", str(out)).returncode == 0
    store = out / "s" / "draft"
    left = [store / "panels" / ".a.png.1a2b3c4d.tmp", store / ".manifest.json.deadbeef.tmp"]
    for f in left:
        f.write_bytes(b"half")
    scratch = store / ".layout.abc123.tmp"
    scratch.mkdir()
    (scratch / "comic.pdf").write_bytes(b"%PDF-half")
    user_file = store / "notes.tmp"  # not a name storyboard makes: left alone
    user_file.write_text("mine")
    assert run("build", str(path), "--draft", "--out", str(out)).returncode == 0
    assert not any(f.exists() for f in left) and not scratch.exists()
    assert user_file.read_text() == "mine"
    assert not [p for p in store.rglob("*.tmp") if p != user_file]
