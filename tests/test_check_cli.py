"""`storyboard check` and `storyboard models fetch` through their typer apps and the adapter, with the
stand-in models in a --models folder and panels drawn into output/<story>/panels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from check_helpers import STORY, draw_panel
from test_check_fix import STORY_YAML
from typer.testing import CliRunner

from storyboard.app.check import check_input
from storyboard.check import fetch
from storyboard.check.standin import write_all
from storyboard.commands import check as check_cmd
from storyboard.commands import models as models_cmd
from storyboard.errors import ModelError


def _cli() -> typer.Typer:
    # how the lead registers them (INTEGRATION.md), on a bare app
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """a group, like storyboard's own app"""

    app.command("check")(check_cmd.check)
    app.add_typer(models_cmd.app, name="models")
    return app


@pytest.fixture
def project(tmp_path: Path) -> Path:
    story = tmp_path / "story.yaml"
    story.write_text(STORY_YAML)
    for pid, _, figs in STORY:
        draw_panel(tmp_path / "output" / "story" / "panels" / f"{pid}.png", figs)
    write_all(tmp_path / "models")
    return tmp_path


def test_check_input_from_story(project: Path) -> None:
    inp, paths = check_input(project / "story.yaml", project / "output")
    assert [p.panel_id for p in inp.panels] == [pid for pid, _, _ in STORY]
    assert inp.panels[2].characters == ("aki", "ben")
    assert all(isinstance(p.seed, int) for p in inp.panels)
    # The planner gives a two-character panel columns in the order listed; one-character panels none.
    assert inp.panels[2].regions == {"aki": (0.0, 0.0, 0.5, 1.0), "ben": (0.5, 0.0, 1.0, 1.0)}
    assert all(p.regions == {} for i, p in enumerate(inp.panels) if i != 2)
    assert inp.out_dir == project / "output" / "story" / "check" == paths.check_dir


def test_check_strict_fails_on_planted_panel(project: Path) -> None:
    args = [
        "check",
        str(project / "story.yaml"),
        "--out",
        str(project / "output"),
        "--models",
        str(project / "models"),
    ]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    assert "p2.1" in res.output
    res = CliRunner().invoke(_cli(), [*args, "--strict"])
    assert res.exit_code == 3  # off-model panels found (issue 22: not 1, which means a bug)
    report = json.loads((project / "output" / "story" / "check" / "report.json").read_text())
    assert [a["panel_id"] for a in report["appearances"] if a["off_model"]] == ["p2.1"]
    # p1.3 is drawn Ben left, Aki right, against the planner's default columns: identity is clear, so
    # each still gets the figure in its colour, and the report says both were outside their region.
    p13 = {a["character"]: a for a in report["appearances"] if a["panel_id"] == "p1.3"}
    assert p13["aki"]["box"] == [192, 0, 256, 256] and p13["ben"]["box"] == [0, 0, 64, 256]
    assert p13["aki"]["in_region"] is False and p13["ben"]["in_region"] is False
    assert (project / "output" / "story" / "check" / "index.html").is_file()


def test_missing_models_name_files_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        fetch.resolve(fetch.specs_for("ccip"), cache_dir=tmp_path / "empty-cache")
    text = str(err.value)
    assert "ccip-caformer-24-randaug-pruned/model_feat.onnx" in text
    assert "person_detect_v1.1_m/model.onnx" in text
    assert "storyboard models fetch check" in text
    with pytest.raises(ModelError, match="model_metrics.onnx"):
        fetch.resolve(fetch.specs_for("ccip"), models_dir=tmp_path)


def test_resolve_finds_files_in_hf_cache_layout(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    for spec in (fetch.CCIP, fetch.DETECTOR):
        repo_dir = cache / f"models--{spec.repo.replace('/', '--')}" / "snapshots" / spec.revision
        for f in spec.files:
            (repo_dir / f).parent.mkdir(parents=True, exist_ok=True)
            (repo_dir / f).write_bytes(b"x")
    found = fetch.resolve(fetch.specs_for("ccip"), cache_dir=cache)
    assert found["ccip"].name == "ccip-caformer-24-randaug-pruned"
    assert found["detector"].name == "person_detect_v1.1_m"


def test_fetch_refuses_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(_cli(), ["models", "fetch", "check"])
    assert res.exit_code != 0
    assert isinstance(res.exception, ModelError) and "HF_HUB_OFFLINE" in str(res.exception)


def test_revisions_are_full_commit_hashes() -> None:
    for spec in fetch.SPECS.values():
        assert len(spec.revision) == 40 and int(spec.revision, 16) >= 0


def test_check_input_regions_follow_the_story(project: Path) -> None:
    story = project / "story.yaml"
    boxes = """        characters: [aki, ben]
        regions:
          - {character: ben, box: [0, 0, 0.3, 1]}
          - {character: aki, box: [0.7, 0, 1, 1]}
"""
    story.write_text(STORY_YAML.replace("        characters: [aki, ben]\n", boxes))
    assert check_input(story, project / "output")[0].panels[2].regions == {
        "ben": (0.0, 0.0, 0.3, 1.0),
        "aki": (0.7, 0.0, 1.0, 1.0),
    }
    story.write_text(
        STORY_YAML.replace("characters: [aki, ben]\n", "characters: [aki, ben]\n        regions: none\n")
    )
    assert check_input(story, project / "output")[0].panels[2].regions == {}
