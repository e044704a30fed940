"""Turn the face detailer on for one panel in the story file (what `check --fix` records when the
detailer brought the panel closer to its characters): `render: {detail: {}}`, comments kept."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from storyboard.story.edit import _dump_checked, _panel_node
from storyboard.writes import write_user_file


def _mapping(node: CommentedMap, key: str) -> CommentedMap:
    """node[key], made (an empty flow mapping, at the end) when it is not a mapping yet."""
    value = node.get(key)
    if not isinstance(value, CommentedMap):
        value = CommentedMap()
        value.fa.set_flow_style()
        node.insert(len(node), key, value)
    return value


def enable_detail_text(text: str, path: Path, panel_id: str) -> str:
    """`text` with the panel's `render.detail` set to ADetailer's defaults (an existing one is
    kept, only `enabled: false` removed)."""
    yaml, data, node = _panel_node(text, path, panel_id)
    render = _mapping(node, "render")
    detail = render.get("detail")
    if isinstance(detail, CommentedMap):
        detail.pop("enabled", None)
    else:
        flow = CommentedMap()
        flow.fa.set_flow_style()
        render["detail"] = flow
    return _dump_checked(yaml, data, path)


def enable_detail(story_path: Path, panel_id: str) -> None:
    text = story_path.read_text(encoding="utf-8")
    write_user_file(story_path, enable_detail_text(text, story_path, panel_id))


def face_seed_text(text: str, path: Path, panel_id: str, character: str, seed: int) -> str:
    """`text` with the panel's `render.detail.seeds.<character>` set to `seed` (the review page's
    "Re-draw face"): only that character's face changes on the next render. The panel's detail
    settings are kept; the panel must have the detailer on (its own or the story's)."""
    yaml, data, node = _panel_node(text, path, panel_id)
    _mapping(_mapping(_mapping(node, "render"), "detail"), "seeds")[character] = seed
    return _dump_checked(yaml, data, path)
