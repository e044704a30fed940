"""`storyboard init`: a new project folder with an example story that builds at once (as drafts)."""

from __future__ import annotations

from pathlib import Path

from storyboard.errors import StoryboardError
from storyboard.writes import write_user_file

EXAMPLE_CHARACTER = """\
# A character bound to a LoRA. Put the LoRA file in your WebUI's models/Lora folder (or set
# render.folders.loras in the story) and write its file name (without .safetensors) here.
name: Mira
lora: mira_character_v1
weight: 1
triggers: [1girl, mira]
prompt: long silver hair, red scarf
"""

EXAMPLE_STORY = """\
title: My First Comic
language: en

characters:
  mira: mira              # characters/mira.yaml

style:
  prompt: anime coloring
  negative: greyscale

render:
  model: AnythingV5Ink_ink          # a checkpoint name in <webui_root>/models/Stable-diffusion
  sampler: DPM++ 2M Karras
  steps: 20
  cfg_scale: 7
  width: 512
  height: 512
  quality: (masterpiece), (best quality)
  negative: EasyNegative, (worst quality, low quality:1.4)
  webui_root: ../webui                # your WebUI install, relative to this file

pages:
  - panels:
      - scene: (full body:1.2), standing on a hill, windy, sunset
        characters: [mira]
        caption: The wind changed that evening.
      - scene: close-up, looking at viewer, smile
        characters: [mira]
        dialogue:
          - speaker: mira
            text: Something is coming.
"""


def init_project(directory: Path) -> list[Path]:
    files = {
        directory / "stories" / "example.yaml": EXAMPLE_STORY,
        directory / "characters" / "mira.yaml": EXAMPLE_CHARACTER,
    }
    existing = [p for p in files if p.exists() or p.is_symlink()]
    if existing:
        raise StoryboardError(
            f"{existing[0]} already exists; init does not overwrite files.",
            hint="choose an empty or new folder",
        )
    for path, text in files.items():
        write_user_file(path, text)
    (directory / "templates").mkdir(exist_ok=True)
    (directory / "output").mkdir(exist_ok=True)
    return list(files)
