"""Issue 22 item 5, the check as a user runs it: `python -m storyboard check story.yaml --models models`
in a subprocess, from the project folder, with relative paths and the stand-in ONNX models.

Thresholds from the story file and --threshold (with their source in the report), --strict's own exit
code, every malformed model file refused with a sentence naming it, characters outside their region
named in the summary, and a summary that stays whole when stdout is a pipe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from check_helpers import BLUE, RED, STORY, draw_panel
from test_check_fix import STORY_YAML

from storyboard.check.ccip import MODEL as CCIP_DIR
from storyboard.check.standin import DETECTOR_MODEL, write_all

ROOT = Path(__file__).resolve().parents[1]
CCIP = f"models/{CCIP_DIR}"
DETECTOR = f"models/{DETECTOR_MODEL}/model.onnx"
OFF_MODEL_EXIT = 3


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point, stdout and stderr piped (not a terminal), no COLUMNS set: what a script or
    CI log gets."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TERM")}
    env.update(HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "storyboard", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "internal error" not in r.stderr, r.stderr
    return r


def check(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(cwd, "check", "story.yaml", "--models", "models", *args)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project: the fix test's story, its panels drawn into output/story/panels, stand-in models."""
    root = tmp_path_factory.mktemp("pristine")
    (root / "story.yaml").write_text(STORY_YAML)
    for pid, _, figs in STORY:
        draw_panel(root / "output" / "story" / "panels" / f"{pid}.png", figs)
    write_all(root / "models")
    return root


@pytest.fixture
def project(pristine: Path, tmp_path: Path) -> Path:
    shutil.copytree(pristine, tmp_path / "p")
    return tmp_path / "p"


def report(project: Path) -> dict:
    return json.loads((project / "output" / "story" / "check" / "report.json").read_text())


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing needle."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# --- thresholds -----------------------------------------------------------------------------------

THRESHOLDS = STORY_YAML.replace(
    "title: Test Story\n", "title: Test Story\ncheck: {threshold: 0.3}\n"
).replace(
    "    lora: aki_v1   # the red one\n",
    "    lora: aki_v1   # the red one\n    check:\n      threshold: 0.2\n",
)


def _assert_flags_follow_thresholds(rep: dict) -> None:
    """Independently of the check's own decision: off-model exactly where distance > the threshold the
    report says the character used."""
    used = {c["id"]: c["threshold"] for c in rep["characters"]}
    for a in rep["appearances"]:
        if a["distance"] is not None:
            assert a["off_model"] == (a["distance"] > used[a["character"]]), a


def test_threshold_precedence_cli_character_story_backend(project: Path) -> None:
    (project / "story.yaml").write_text(THRESHOLDS)
    r = check(project, "--strict")
    rep = report(project)
    chars = {c["id"]: c for c in rep["characters"]}
    # aki has its own threshold; ben has none, so the story's applies.
    assert (chars["aki"]["threshold"], chars["aki"]["threshold_source"]) == (0.2, "character")
    assert (chars["ben"]["threshold"], chars["ben"]["threshold_source"]) == (0.3, "story")
    _assert_flags_follow_thresholds(rep)
    p21 = next(a for a in rep["appearances"] if a["panel_id"] == "p2.1")
    assert 0.2 < p21["distance"] < 0.3 and p21["off_model"]  # the planted panel, between the two
    assert r.returncode == OFF_MODEL_EXIT, r.stderr
    assert "0.200 (character)" in r.stdout and "0.300 (story)" in r.stdout
    html = (project / "output" / "story" / "check" / "index.html").read_text()
    assert "threshold 0.200 (character)" in html and "threshold 0.300 (story)" in html

    # --threshold wins over both; at 0.3 the planted panel passes, and --strict exits 0.
    r = check(project, "--strict", "--threshold", "0.3")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = report(project)
    assert {(c["id"], c["threshold"], c["threshold_source"]) for c in rep["characters"]} == {
        ("aki", 0.3, "--threshold"),
        ("ben", 0.3, "--threshold"),
    }
    _assert_flags_follow_thresholds(rep)
    assert not any(a["off_model"] for a in rep["appearances"])

    # Nothing set: the backend's, as its metrics.json gives it (changed here to prove it is read).
    metrics = project / CCIP / "metrics.json"
    metrics.write_text(json.dumps({"threshold": 0.25}))
    (project / "story.yaml").write_text(STORY_YAML)
    r = check(project)
    assert r.returncode == 0
    rep = report(project)
    assert {(c["threshold"], c["threshold_source"]) for c in rep["characters"]} == {(0.25, "backend default")}
    assert "0.250 (ccip default)" in r.stdout
    _assert_flags_follow_thresholds(rep)


CHARACTER_FILE = "lora: aki_v1\ncheck:\n  threshold: 1.5\n"


@pytest.mark.parametrize(
    "old,new,field,needle",
    [
        (
            "title: Test Story\n",
            "title: Test Story\ncheck: {threshold: 1.5}\n",
            "check.threshold",
            "less than 1",
        ),
        (
            "title: Test Story\n",
            "title: Test Story\ncheck: {threshold: 0}\n",
            "check.threshold",
            "greater than 0",
        ),
        (
            "    lora: ben_v1\n",
            "    lora: ben_v1\n    check: {threshold: .nan}\n",
            "characters.ben.check.threshold",
            "finite",
        ),
        (
            "    lora: ben_v1\n",
            "    lora: ben_v1\n    check: {threshold: close}\n",
            "characters.ben.check.threshold",
            "valid number",
        ),
        (
            "title: Test Story\n",
            "title: Test Story\ncheck: {treshold: 0.2}\n",
            "check",
            "Did you mean 'threshold'",
        ),
    ],
)
def test_threshold_mistakes_name_file_line_and_field(
    project: Path, old: str, new: str, field: str, needle: str
) -> None:
    text = STORY_YAML.replace(old, new)
    (project / "story.yaml").write_text(text)
    r = check(project)
    assert r.returncode == 2
    line = line_of(text, "reshold")
    assert re.search(rf"story\.yaml:{line}:\d+: {re.escape(field)}", r.stderr), r.stderr
    assert needle in r.stderr
    assert not (project / "output" / "story" / "check").exists()  # refused before anything ran


def test_threshold_mistake_in_a_character_file(project: Path) -> None:
    (project / "characters").mkdir()
    (project / "characters" / "aki.yaml").write_text(CHARACTER_FILE)
    (project / "story.yaml").write_text(
        STORY_YAML.replace("  aki:\n    lora: aki_v1   # the red one\n", "  aki: aki\n")
    )
    r = check(project)
    assert r.returncode == 2
    assert re.search(r"characters/aki\.yaml:3:\d+: check\.threshold: .*less than 1", r.stderr), r.stderr


def test_threshold_option_out_of_range(project: Path) -> None:
    for value in ("1", "nan"):
        r = check(project, "--threshold", value)
        assert r.returncode == 2
        assert f"--threshold {float(value):g}:" in r.stderr and "identity distance" in r.stderr
        assert not (project / "output" / "story" / "check").exists()


# --- --strict -------------------------------------------------------------------------------------


def test_strict_has_its_own_exit_code_documented(project: Path) -> None:
    # (0 under --strict when nothing is off-model: test_threshold_precedence_cli_character_story_backend)
    r = check(project, "--strict")
    assert r.returncode == OFF_MODEL_EXIT and "off-model: p2.1" in r.stdout
    helptext = run(project, "check", "--help").stdout
    assert re.search(r"status\s+3", helptext) and "--threshold" in helptext
    readme = (ROOT / "README.md").read_text()
    exit_codes = readme[readme.index("Exit codes:") :].split("\n\n")[0]
    assert "3" in exit_codes and "check --strict" in exit_codes
    section = readme[readme.index("## Consistency check") :].split("\n## ")[0]
    assert "--strict" in section and "exit 3" in section and "exit 1 when" not in section
    assert "Calibrating the threshold" in readme and "threshold_source" in section


# --- malformed model files ------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _onnx_edit(path: Path, edit: Callable[..., None]) -> None:
    import onnx

    model = onnx.load(str(path))
    edit(model)
    onnx.save(model, str(path))


def _set_meta(key: str, value: str) -> Callable[..., None]:
    def edit(model) -> None:  # type: ignore[no-untyped-def]
        for p in model.metadata_props:
            if p.key == key:
                p.value = value

    return edit


def _fixed_batch(model) -> None:  # type: ignore[no-untyped-def]
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # an export with batch baked in


def _identity(inp: str, out: str, in_shape: list, out_shape: list) -> Callable[[Path], None]:
    """Replace a file by a valid ONNX model with the right names that computes the wrong thing."""

    def write(path: Path) -> None:
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Identity", [inp], [out])],
            "wrong",
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(path))

    return write


MALFORMED: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # variant: (file, how it is spoiled, words the sentence must have)
    "metrics truncated": (f"{CCIP}/metrics.json", _truncate, "not valid JSON"),
    "metrics keyless": (f"{CCIP}/metrics.json", lambda p: p.write_text('{"f1": 0.9}'), "no 'threshold'"),
    "metrics NaN": (f"{CCIP}/metrics.json", lambda p: p.write_text('{"threshold": NaN}'), "positive number"),
    "feat truncated": (f"{CCIP}/model_feat.onnx", _truncate, "not a usable ONNX model"),
    "metric truncated": (f"{CCIP}/model_metrics.onnx", _truncate, "not a usable ONNX model"),
    "metric an HTML page": (
        f"{CCIP}/model_metrics.onnx",
        lambda p: p.write_text("<html><body>404 Not Found</body></html>"),
        "not a usable ONNX model",
    ),
    "feat batch fixed at 1": (
        f"{CCIP}/model_feat.onnx",
        lambda p: _onnx_edit(p, _fixed_batch),
        "blank input",
    ),
    "feat gives images": (
        f"{CCIP}/model_feat.onnx",
        _identity("input", "output", ["batch", 3, 384, 384], ["batch", 3, 384, 384]),
        "feature output is 2x3x384x384, expected 2xN",
    ),
    "metric gives features": (
        f"{CCIP}/model_metrics.onnx",
        _identity("input", "output", ["batch", 768], ["batch", 768]),
        "metric output for 2 features is 2x768, expected 2x2",
    ),
    "detector truncated": (DETECTOR, _truncate, "not a usable ONNX model"),
    "detector names cut": (DETECTOR, lambda p: _onnx_edit(p, _set_meta("names", "{0: 'pers")), "'names'"),
    "detector imgsz cut": (DETECTOR, lambda p: _onnx_edit(p, _set_meta("imgsz", "[640, 6")), "'imgsz'"),
    "detector of faces": (
        DETECTOR,
        lambda p: _onnx_edit(p, _set_meta("names", "{0: 'face'}")),
        "no 'person'",
    ),
    "detector two classes": (
        DETECTOR,
        lambda p: _onnx_edit(p, _set_meta("names", "{0: 'person', 1: 'face'}")),
        "output for one image is 1x5x8400, expected 1x6xN",
    ),
}


def _assert_refused(project: Path, r: subprocess.CompletedProcess[str], file: str, words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors and errors[0].startswith(f"error: {file}: "), r.stderr  # named as --models gives it
    assert words in r.stderr, r.stderr
    assert not (project / "output" / "story" / "check").exists()


@pytest.mark.parametrize(
    "file", [f"{CCIP}/metrics.json", f"{CCIP}/model_feat.onnx", f"{CCIP}/model_metrics.onnx", DETECTOR]
)
def test_malformed_model_file_is_a_sentence_naming_it(project: Path, file: str) -> None:
    """Every spoiled variant of one file in turn, the file put back between them."""
    good = (project / file).read_bytes()
    variants = [(name, spoil, words) for name, (f, spoil, words) in MALFORMED.items() if f == file]
    assert len(variants) >= 3
    for name, spoil, words in variants:
        spoil(project / file)
        r = check(project)
        try:
            _assert_refused(project, r, file, words)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        (project / file).write_bytes(good)
    assert check(project).returncode == 0  # put back, the folder works


@pytest.fixture(scope="module")
def clip_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP vision folder in the --models layout (clip-vit-large-patch14/) + the detector."""
    pytest.importorskip("torch")
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("clip") / "models"
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=16,
    )  # fmt: skip
    folder = root / "clip-vit-large-patch14"
    CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    write_all(root)
    return root


def test_malformed_clip_folder(project: Path, clip_models: Path) -> None:
    shutil.rmtree(project / "models")
    shutil.copytree(clip_models, project / "models")
    r = check(project, "--backend", "clip")
    assert r.returncode == 0, r.stderr  # the pristine tiny folder works
    shutil.rmtree(project / "output" / "story" / "check")
    folder = project / "models" / "clip-vit-large-patch14"
    for file, words in (("config.json", "not valid JSON"), ("model.safetensors", "not a readable")):
        good = (folder / file).read_bytes()
        _truncate(folder / file)
        r = check(project, "--backend", "clip")
        _assert_refused(project, r, f"models/clip-vit-large-patch14/{file}", words)
        (folder / file).write_bytes(good)


# --- the summary ----------------------------------------------------------------------------------

# A third page where both stand where their columns are: a regional panel that is not reported.
IN_PLACE = (
    STORY_YAML
    + """\
  - panels:
      - id: p3.1
        scene: both again
        characters: [aki, ben]
"""
)


def test_summary_names_characters_outside_their_region(project: Path) -> None:
    (project / "story.yaml").write_text(IN_PLACE)
    draw_panel(project / "output" / "story" / "panels" / "p3.1.png", [(0, RED), (3, BLUE)])
    r = check(project)
    assert r.returncode == 0, r.stderr
    rep = report(project)
    outside = sorted((a["character"], a["panel_id"]) for a in rep["appearances"] if a["in_region"] is False)
    inside = sorted((a["character"], a["panel_id"]) for a in rep["appearances"] if a["in_region"] is True)
    assert outside == [("aki", "p1.3"), ("ben", "p1.3")] and inside == [("aki", "p3.1"), ("ben", "p3.1")]
    lines = r.stdout.splitlines()
    assert "aki outside its region in p1.3" in lines
    assert "ben outside its region in p1.3" in lines
    assert not any("p3.1" in line and "outside" in line for line in lines)


LONG_NAMES = STORY_YAML.replace(
    "    lora: aki_v1   # the red one\n",
    "    lora: aki_v1   # the red one\n    name: Akiko Yamamoto-Hartmann\n",
).replace("    lora: ben_v1\n", "    lora: ben_v1\n    name: Benedikt Oyelaran-Sørensen\n")


def test_summary_rows_stay_whole_in_a_pipe(project: Path) -> None:
    (project / "story.yaml").write_text(LONG_NAMES)
    r = check(project)  # stdout is a pipe and COLUMNS is unset: rich would assume 80 columns
    assert r.returncode == 0, r.stderr
    rep = report(project)
    lines = r.stdout.splitlines()
    longest = 0
    for c in rep["characters"]:
        row = [line for line in lines if re.match(rf"{re.escape(c['name'])}\s{{2}}", line)]
        assert len(row) == 1, r.stdout  # one line per character, starting with its whole name
        row_text = row[0]
        longest = max(longest, len(row_text))
        for value in (c["self_similarity"], c["cross_similarity"], c["threshold"]):
            assert f"{value:.3f}" in row_text
        assert str(len(c["panels"])) in row_text.split()
        for a in rep["appearances"]:
            if a["character"] == c["id"] and a["off_model"]:
                assert f"{a['panel_id']} ({a['distance']:.3f})" in row_text, row_text
    assert any(a["off_model"] for a in rep["appearances"])  # p2.1: a panel id with its score was checked
    assert longest > 80  # the rows are wider than rich's pipe default and still not wrapped
    report_line = [line for line in lines if line.startswith("report: ")]
    assert (
        report_line
        and Path(project, report_line[0][len("report: ") :]).resolve()
        == (project / "output" / "story" / "check" / "index.html").resolve()
    )


def test_summary_in_a_terminal_is_the_table(project: Path) -> None:
    """With a terminal (a pty, 120 columns) the same rows come as rich's table."""
    import pty

    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update(HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", PYTHONPATH=str(ROOT), COLUMNS="120", TERM="xterm")
    cmd = [sys.executable, "-m", "storyboard", "check", "story.yaml", "--models", "models"]
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=follower, stderr=follower, stdin=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the pty closes when the command exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())  # colours off
    assert "Traceback" not in out
    rows = [line for line in out.splitlines() if "│" in line]
    aki = next(line for line in rows if line.startswith("│ aki "))
    p21 = next(a for a in report(project)["appearances"] if a["panel_id"] == "p2.1")
    assert f"p2.1 ({p21['distance']:.3f})" in aki and "0.178 (ccip default)" in aki
    assert "aki outside its region in p1.3" in out
