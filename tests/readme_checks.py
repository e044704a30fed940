"""What the README's comments claim, as checks on a command's result (tests/test_readme.py's table
names one per command form), and the table's types."""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.readme_commands import run

DEMO_MISSING = (
    "Story file has 5 problems",
    "stories/demo.yaml:10:3: characters.iku.lora: No lora named 'Iku_Nakatani-000016_v1.0'",
    "stories/demo.yaml:13:11: characters.haru.lora: No lora named 'Haru_guitar_boy_v2'",
    "stories/demo.yaml:20:13: style.loras[0].lora: No lora named 'blindbox_v1_mix'",
    "stories/demo.yaml:26:10: render.model: No checkpoint named 'AnythingV5Ink_ink'",
    "stories/demo.yaml:58:20: pages[0].panels[0].control[0].model: No controlnet named "
    "'control_v11p_sd15_openpose'",
    "storyboard build stories/demo.yaml --draft",  # the hint: what to do without the models
)
CHECK_OFFLINE = ("Model files for the check are missing", "storyboard models fetch check")
TINY = "output/tiny-model"


@dataclass
class Ctx:
    root: Path
    result: subprocess.CompletedProcess[str]
    before: dict[str, str]  # the story files' text before the command

    @property
    def out(self) -> str:
        return self.result.stdout + self.result.stderr

    def story_diff(self, name: str = "stories/demo.yaml") -> tuple[list[str], list[str]]:
        """(removed, added) lines of a story file."""
        old, new = self.before[name].splitlines(), (self.root / name).read_text().splitlines()
        diff = list(difflib.unified_diff(old, new, lineterm="", n=0))[2:]
        return [d[1:] for d in diff if d.startswith("-")], [d[1:] for d in diff if d.startswith("+")]


@dataclass
class Expect:
    code: int
    out: tuple[str, ...] = ()  # printed (stdout or stderr)
    files: tuple[str, ...] = ()  # must exist afterwards
    absent: tuple[str, ...] = ()  # must not exist afterwards
    outside: tuple[str, ...] = ()  # paths outside output/ it may create or change (prefixes)
    check: Callable[[Ctx], None] | None = None
    server: bool = False  # the review page: started, fetched, stopped with Ctrl-C


@dataclass
class Spec:
    runs: dict[str, Expect]  # each form of the line (placeholders replaced) -> what it does
    subst: dict[str, str] = field(default_factory=dict)  # README placeholder -> what is typed


# What the comments claim ------------------------------------------------------------------------


def tiny_model_for_tiny_demo(c: Ctx) -> None:
    # "stories/tiny-demo.yaml points here": the story validates with every model file found.
    assert f"webui_root: {c.root / TINY}" in c.out, c.out
    r = run("storyboard validate stories/tiny-demo.yaml", c.root)
    assert r.returncode == 0 and "OK (story, samplers and model files)" in r.stdout, r.stderr


def tiny_demo_built(c: Ctx) -> None:
    assert "Tiny Garden: rendered 3 panel(s), reused 0 (diffusers)" in c.out
    from PIL import Image

    info = Image.open(c.root / "output/tiny-demo/panels/gate.png").text["parameters"]
    assert "Steps: 8, Sampler: DPM++ 2S a, Schedule type: Karras" in info, info  # WebUI's PNG Info
    with zipfile.ZipFile(c.root / "output/tiny-demo/tiny-garden.cbz") as z:
        assert len([n for n in z.namelist() if n.endswith(".png")]) == 2
    assert (c.root / "output/tiny-demo/tiny-garden.pdf").read_bytes().startswith(b"%PDF")
    manifest = json.loads((c.root / "output/tiny-demo/manifest.json").read_text())
    assert list(manifest["panels"]) == ["gate", "garden", "meet"]


def ray_cpu_built(c: Ctx) -> None:
    # "3 panels, one CPU actor": rendered on Ray, byte-identical to the local build above.
    assert "Tiny Garden: rendered 3 panel(s), reused 0" in c.out, c.out
    assert "ray: starting 1 actor(s)" in c.out, c.out
    for p in ("gate", "garden", "meet"):
        ray_png = c.root / f"output/ray/tiny-demo/panels/{p}.png"
        assert ray_png.read_bytes() == (c.root / f"output/tiny-demo/panels/{p}.png").read_bytes(), p


def validate_lists_all(c: Ctx) -> None:
    assert len(re.findall(r"^  stories/demo\.yaml:\d+:\d+: ", c.result.stderr, re.M)) == 5
    r = run("storyboard validate stories/demo.yaml --no-files", c.root)  # "--no-files: the story alone"
    assert r.returncode == 0 and "OK (story only): 3 pages, 7 panels, 2 characters." in r.stdout


def prompts_json(c: Ctx) -> None:
    rows = json.loads(c.result.stdout)
    assert [r["panel"] for r in rows] == ["gate", "listen", "garden", "meet", "play", "smile", "encore"]
    meet = rows[3]
    assert [lo["name"] for lo in meet["loras"]] == [
        "Iku_Nakatani-000016_v1.0",
        "Haru_guitar_boy_v2",
        "blindbox_v1_mix",
    ]
    assert meet["size"] == [616, 464] and rows[4]["seed"] == 3447412781


def picked(seed: int, replaced: int | None) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        removed, added = c.story_diff()
        # One line changed, in the meet panel, comments and everything else kept byte for byte.
        assert added == [f"        seed: {seed}"], added
        assert removed == ([f"        seed: {replaced}"] if replaced else []), removed
        lines = (c.root / "stories/demo.yaml").read_text().splitlines()
        assert lines[lines.index(f"        seed: {seed}") - 2] == "      - id: meet"
        assert not (c.root / "stories/stories").exists()

    return check


def lora_inspect_with_webui(c: Ctx) -> None:
    # As the README says: link (here: put) your WebUI's LoRA under webui/ and the same line works.
    lora_dir = c.root / "webui/models/Lora"
    lora_dir.mkdir(parents=True)
    (lora_dir / "Iku_Nakatani-000016_v1.0.safetensors").symlink_to(
        c.root / TINY / "models/Lora/tiny-character.safetensors"
    )
    try:
        r = run("storyboard lora inspect Iku_Nakatani-000016_v1.0 --lora-dir webui/models/Lora", c.root)
        assert r.returncode == 0, r.stderr
        assert "base model:     SD 1.x" in r.stdout and "output name:    tiny_character_v1" in r.stdout
    finally:
        (lora_dir / "Iku_Nakatani-000016_v1.0.safetensors").unlink()
        for d in (lora_dir, lora_dir.parent, lora_dir.parent.parent):
            d.rmdir()


def merged(c: Ctx) -> None:
    from safetensors.numpy import load_file

    base = load_file(c.root / TINY / "models/Stable-diffusion/tiny-sd.safetensors")
    out = load_file(c.root / "merged.safetensors")
    assert out.keys() == base.keys()
    changed = [k for k in base if not (base[k] == out[k]).all()]
    assert len(changed) == 60 and "60 layers changed" in c.out  # UNet 48 + text encoder 12 modules


def dev_dir(c: Ctx) -> None:
    assert f"webui_root: {c.root / 'output/tiny-dir'}" in c.out


def schema(c: Ctx) -> None:
    import jsonschema
    import yaml

    s = json.loads((c.root / "story.schema.json").read_text())
    jsonschema.validate(yaml.safe_load((c.root / "stories/demo.yaml").read_text()), s)


def init_next_works(c: Ctx) -> None:
    nxt = re.search(r"^next: (storyboard .+)$", c.result.stdout, re.M)
    assert nxt, c.out
    r = run(nxt.group(1), c.root)  # the command it prints, typed as printed
    assert r.returncode == 0, r.stderr
    assert "My First Comic: rendered 2 panel(s)" in r.stdout


def nothing_checked(c: Ctx) -> None:
    assert not (c.root / "output/demo/check").exists()


def no_render(c: Ctx) -> None:
    assert not (c.root / "output/demo/panels").exists() and not (c.root / "output/demo/candidates").exists()
