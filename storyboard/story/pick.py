"""`storyboard pick`: write a chosen seed into the story file, keeping its comments and formatting."""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from storyboard.errors import StoryboardError
from storyboard.story.load import load_story
from storyboard.story.schema import MAX_SEED
from storyboard.story.yaml_source import load_round_trip
from storyboard.writes import write_user_file


def pick_seed(story_path: Path, panel_id: str, seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise StoryboardError(f"Seed {seed} is out of range; WebUI seeds are 0 to {MAX_SEED}.")
    loaded = load_story(story_path)  # validates, and resolves default ids like p1.3
    target = None
    for pi, ni, panel in loaded.story.panels():
        if panel.id == panel_id:
            target = (pi - 1, ni - 1)
    if target is None:
        loaded.story.panel(panel_id)  # raises with suggestions
        return
    text = story_path.read_text(encoding="utf-8")
    yaml, data = load_round_trip(text)
    node = data["pages"][target[0]]["panels"][target[1]]
    if not isinstance(node, CommentedMap):
        raise StoryboardError(f"{story_path}: panel {panel_id} is not a mapping; cannot set its seed.")
    if "seed" in node:
        node["seed"] = seed
    else:
        # After the scene line, where writers look for it; flow-style panels stay flow-style.
        pos = list(node).index("scene") + 1 if "scene" in node else len(node)
        node.insert(pos, "seed", seed)
    buf = io.StringIO()
    yaml.dump(data, buf)
    write_user_file(story_path, buf.getvalue())  # as typed; a symlinked story: its target
