"""Edit one panel's words (scene, caption, dialogue) in story-file text, keeping comments and formatting.

Pure: text in, text out. The new text is validated exactly as `storyboard validate` would validate the
file, so an edit that breaks the story fails with the same file:line:column messages and nothing is
written. Writing (and refusing writes based on an old version of the file) is the app layer's job.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.scalarstring import ScalarString
from ruamel.yaml.tokens import CommentToken

from storyboard.errors import StoryboardError
from storyboard.story.load import load_story_text
from storyboard.story.yaml_source import load_round_trip


@dataclass(frozen=True)
class LineEdit:
    """One existing dialogue line's new speaker (None or "" for narration) and text."""

    speaker: str | None
    text: str


def text_version(text: str) -> str:
    """A short hash of the file's text: an edit names the version it was based on."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _same_style(old: Any, new: str) -> Any:
    """The new string in the old scalar's style: a quoted or block scalar stays quoted or block."""
    if isinstance(old, ScalarString):
        return type(old)(new)
    return new


def _remove(node: CommentedMap, key: str) -> None:
    """Delete `key`, keeping the comment lines that follow its value: ruamel files them under the
    key before them, so a plain `del` would take a writer's comment about the next key with it."""
    if key not in node:
        return
    keys = list(node)
    at = keys.index(key)
    after = node.ca.items.get(key, [None, None, None, None])
    trailing = after[2] if len(after) > 2 else None
    del node[key]
    if trailing is None:
        return
    # Its own end-of-line comment ("# eol\n# next\n") went with it; the lines below it stay.
    trailing.value = (
        "\n" + trailing.value.split("\n", 1)[1] if not trailing.value.startswith("\n") else trailing.value
    )
    if not trailing.value.strip():
        return
    if at == 0:
        node.ca.comment = [None, [trailing]] if node.ca.comment is None else node.ca.comment
        return
    prev = keys[at - 1]
    slot = node.ca.items.setdefault(prev, [None, None, None, None])
    if slot[2] is None:
        slot[2] = trailing
    else:  # the key before has its own comment: keep both, its own first
        slot[2].value = slot[2].value.rstrip("\n") + "\n" + trailing.value.lstrip("\n")


def _set(node: CommentedMap, key: str, value: str | None, after: str | None) -> None:
    """Set, add (after the key `after`, or first when None) or, for an empty value, remove `key`."""
    if value is None or value == "":
        _remove(node, key)
        return
    if key in node:
        if node[key] != value:
            node[key] = _same_style(node[key], value)
        return
    pos = 0 if after is None else list(node).index(after) + 1 if after in node else len(node)
    node.insert(pos, key, value)


def _panel_node(text: str, path: Path, panel_id: str) -> tuple[Any, Any, CommentedMap]:
    """The round-trip YAML, its data and the panel's mapping in it."""
    loaded = load_story_text(text, path)  # resolves default ids like p1.3
    target = next(((pi - 1, ni - 1) for pi, ni, p in loaded.story.panels() if p.id == panel_id), None)
    if target is None:
        loaded.story.panel(panel_id)  # raises with suggestions
        raise AssertionError("unreachable")
    yaml, data = load_round_trip(text)
    node = data["pages"][target[0]]["panels"][target[1]]
    if not isinstance(node, CommentedMap):
        raise StoryboardError(f"{path}: panel {panel_id} is not a mapping; cannot edit it.")
    return yaml, data, node


def _dump_checked(yaml: Any, data: Any, path: Path) -> str:
    buf = io.StringIO()
    yaml.dump(data, buf)
    new_text = buf.getvalue()
    load_story_text(new_text, path)  # the same checks, and messages, as `storyboard validate`
    return new_text


DIRECTION_KEYS = ("init_image", "denoising_strength", "resize_mode", "inpaint", "control")


def _units(old: Any, new: list[dict[str, Any]]) -> CommentedSeq:
    """The ``control:`` list as `new` says. Units are matched to the written ones in order (a
    removed unit is deleted, not its neighbours shifted into its lines); a matched unit is changed
    in place (its style and comments stay); units added are flow mappings."""
    seq = old if isinstance(old, CommentedSeq) else CommentedSeq()
    was = [_unit_key(dict(u) if isinstance(u, CommentedMap) else u) for u in seq]
    ops = difflib.SequenceMatcher(a=was, b=[_unit_key(u) for u in new], autojunk=False).get_opcodes()
    # From the end, so the indexes of the operations still to do stay valid.
    for tag, i1, i2, j1, j2 in reversed(ops):
        if tag == "equal":
            continue
        pairs = min(i2 - i1, j2 - j1)
        for d in range(pairs):
            _set_unit(seq, i1 + d, new[j1 + d])
        for i in reversed(range(i1 + pairs, i2)):
            _drop_unit(seq, i)
        for j in range(j1 + pairs, j2):
            flow = CommentedMap(new[j])
            flow.fa.set_flow_style()
            seq.insert(i1 + j - j1, flow)
    return seq


def _unit_key(unit: Any) -> str:
    return json.dumps(unit, sort_keys=True, default=str)


def _set_unit(seq: CommentedSeq, k: int, unit: dict[str, Any]) -> None:
    node = seq[k]
    if not isinstance(node, CommentedMap):
        node = CommentedMap()
        node.fa.set_flow_style()
        seq[k] = node
    for gone in [key for key in node if key not in unit]:
        del node[gone]
    for key, v in unit.items():
        if key not in node or node[key] != v:
            _put(node, key, v)


def _drop_unit(seq: CommentedSeq, k: int) -> None:
    """Delete unit `k`, keeping the comment lines below it: ruamel files them under the unit's
    last key, though they introduce the next unit."""
    node = seq[k]
    last = list(node)[-1] if isinstance(node, CommentedMap) and len(node) else None
    slot = node.ca.items.get(last, []) if last is not None else []
    trailing = slot[2] if len(slot) > 2 else None
    del seq[k]
    if trailing is None or "\n" not in trailing.value:
        return
    below = trailing.value.split("\n", 1)[1]  # its own end-of-line comment goes with it
    if not below.strip():
        return
    if k > 0 and isinstance(seq[k - 1], CommentedMap) and len(seq[k - 1]):
        prev = seq[k - 1]
        into = prev.ca.items.setdefault(list(prev)[-1], [None, None, None, None])
        if into[2] is None:
            trailing.value = "\n" + below
            into[2] = trailing
        else:  # the unit before has its own comment: keep both, its own first
            into[2].value = into[2].value.rstrip("\n") + "\n" + below
        return
    # Above the list's new first unit, each line where it was written (the first line's
    # indentation becomes the token's column; ruamel writes the others as they are).
    below = below.lstrip("\n")
    col = len(below) - len(below.lstrip(" "))
    token = CommentToken(below.lstrip(" "), CommentMark(col))
    if seq.ca.comment is None:
        seq.ca.comment = [None, [token]]
    else:
        seq.ca.comment[1] = [*(seq.ca.comment[1] or []), token]


def _put(node: CommentedMap, key: str, value: Any) -> None:
    if key in node:
        node[key] = value
    else:
        node.insert(len(node), key, value)


def direct_panel_text(text: str, path: Path, panel_id: str, direction: dict[str, Any]) -> str:
    """`text` with the panel's img2img / inpaint keys (``DIRECTION_KEYS``) set as `direction`
    says: a key missing or None there is removed; an ``inpaint`` mapping (and each ``control`` unit
    of a list) is written in flow style.
    Raises StoryError (validate's messages) when the result is not a valid story."""
    yaml, data, node = _panel_node(text, path, panel_id)
    for key in DIRECTION_KEYS:
        value = direction.get(key)
        if value is None:
            _remove(node, key)
            continue
        if isinstance(value, dict):
            flow = CommentedMap(value)
            flow.fa.set_flow_style()
            value = flow
        elif isinstance(value, list):
            value = _units(node.get(key), value)
        if key in node:
            node[key] = value
        else:
            node.insert(len(node), key, value)
    return _dump_checked(yaml, data, path)


def edit_panel_text(
    text: str,
    path: Path,
    panel_id: str,
    *,
    scene: str | None = None,
    caption: str | None = None,
    dialogue: list[LineEdit] | None = None,
) -> str:
    """`text` with the panel's scene, caption (empty removes it) and dialogue lines replaced.

    `None` leaves a field as it is. Dialogue edits change existing lines only, one per line, in order.
    Raises StoryError (validate's messages, positions in `path`) when the result is not a valid story.
    """
    yaml, data, node = _panel_node(text, path, panel_id)
    if scene is not None:
        if "scene" not in node:
            raise StoryboardError(f"{path}: panel {panel_id} has no scene to edit.")
        if node["scene"] != scene:
            node["scene"] = _same_style(node["scene"], scene)
    if caption is not None:
        _set(node, "caption", caption, after="scene")
    if dialogue is not None:
        lines = node.get("dialogue") or []
        if len(dialogue) != len(lines):
            raise StoryboardError(
                f"{path}: panel {panel_id} has {len(lines)} dialogue line(s); the edit gave {len(dialogue)}."
            )
        for k, (line, new) in enumerate(zip(lines, dialogue, strict=True)):
            if not isinstance(line, CommentedMap):
                raise StoryboardError(f"{path}: {panel_id} dialogue line {k + 1} is not a mapping.")
            # A speaker added to a narration line goes first, where writers put it.
            _set(line, "speaker", new.speaker.strip() if new.speaker else None, after=None)
            if line.get("text") != new.text:
                line["text"] = _same_style(line.get("text"), new.text)
    return _dump_checked(yaml, data, path)
