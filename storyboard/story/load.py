"""Load and validate a story file, turning every mistake into file:line:column messages.

Characters may be written inline or as a name of a file in a `characters/` folder (beside the story or
one level up, so `stories/` and `characters/` can sit side by side in a project). Such files are
validated on their own so their errors name their own file.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from storyboard.errors import StoryboardError
from storyboard.story.schema import Character, LoraSpec, RenderSettings, Story
from storyboard.story.yaml_source import YamlDocument, load_yaml, parse_yaml


@dataclass(frozen=True)
class LoadedStory:
    story: Story
    path: Path
    # Per panel id: the render settings after that panel's overrides.
    panel_render: dict[str, RenderSettings]
    # The parsed file, for positions of problems found after loading (missing model files...).
    doc: YamlDocument | None = field(default=None, compare=False, repr=False)
    # Things that are allowed but probably not meant, each with its position.
    warnings: tuple[str, ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def slug(self) -> str:
        return story_slug(self.path)


def story_slug(path: Path) -> str:
    """The output folder name for a story: its file stem, made safe as a single path component."""
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in path.stem).strip(".-") or "story"
    return stem


class StoryError(StoryboardError):
    """One or more validation problems, each with its position."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        n = len(problems)
        head = "1 problem" if n == 1 else f"{n} problems"
        super().__init__(f"Story file has {head}:\n" + "\n".join(f"  {p}" for p in problems))


def folder_above(folder: Path) -> Path:
    """The folder that holds `folder`, kept relative when it is: `Path(".").parent` is "." and
    `Path("..").parent` is ".", so a story typed as `demo.yaml` or `../demo.yaml` needs this."""
    return Path(os.path.normpath(folder / os.pardir))


def character_search_dirs(story_path: Path) -> list[Path]:
    here = story_path.parent
    return [here / "characters", folder_above(here) / "characters"]


def load_story(path: Path) -> LoadedStory:
    path = Path(path)
    doc = load_yaml(path)
    return _validate(doc)


def load_story_text(text: str, path: Path) -> LoadedStory:
    """For tests and `init`: validate text as if it were the file at `path`."""
    return _validate(parse_yaml(text, path))


def _validate(doc: YamlDocument) -> LoadedStory:
    data = doc.data
    if not isinstance(data, dict):
        raise StoryError([f"{doc.position(())}: the story must be a mapping with title, characters, pages."])
    problems: list[str] = []
    raw = _plain(data)
    chars = raw.get("characters")
    if isinstance(chars, dict):
        for cid, entry in list(chars.items()):
            if isinstance(entry, str):
                loaded = _load_character_file(doc, cid, entry, problems)
                if loaded is not None:
                    chars[cid] = loaded
    try:
        story = Story.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_format_errors(exc, doc, Story))
        raise StoryError(problems) from None
    problems.extend(_reference_problems(story, doc))
    if problems:
        raise StoryError(problems)
    panel_render = _panel_render_settings(story, doc)
    return LoadedStory(
        story=story,
        path=doc.path,
        panel_render=panel_render,
        doc=doc,
        warnings=tuple(_weight_warnings(story, doc)),
    )


# WebUI users' LoRA weights stay within about this range; beyond it a render is usually noise.
USUAL_LORA_WEIGHT = 3.0


def _weight_warnings(story: Story, doc: YamlDocument) -> list[str]:
    out = []
    specs: list[tuple[tuple[str | int, ...], LoraSpec]] = [
        (("characters", cid), c) for cid, c in story.characters.items()
    ]
    specs += [(("style", "loras", i), spec) for i, spec in enumerate(story.style.loras)]
    for loc, spec in specs:
        for name in ("weight", "te_weight", "unet_weight"):
            w = getattr(spec, name)
            if w is not None and math.isfinite(w) and abs(w) > USUAL_LORA_WEIGHT:
                out.append(
                    f"{doc.position(loc + (name,))}: {_dotted(loc)}.{name} is {w:g}; LoRA weights beyond "
                    f"-{USUAL_LORA_WEIGHT:g}..{USUAL_LORA_WEIGHT:g} usually give a noisy or black image."
                )
    return out


def setting_location(loaded: LoadedStory, panel_id: str, path: tuple[str, ...]) -> tuple[str | int, ...]:
    """Where the story sets `path` (e.g. ("render", "model")) for a panel: the panel's own render
    override when it has one, else the story-wide setting."""
    for pi, page in enumerate(loaded.story.pages):
        for ni, panel in enumerate(page.panels):
            if panel.id != panel_id:
                continue
            node: object = panel.render
            for part in path[1:]:
                if not isinstance(node, dict) or part not in node:
                    break
                node = node[part]
            else:
                return ("pages", pi, "panels", ni, *path)
    return path


def lora_location(loaded: LoadedStory, panel_id: str, owner: str, name: str) -> tuple[str | int, ...]:
    """Where the story names a LoRA use: the character's or style's `lora:`, or the panel's scene."""
    if owner.startswith("character:"):
        return ("characters", owner.removeprefix("character:"), "lora")
    if owner == "style":
        for i, spec in enumerate(loaded.story.style.loras):
            if spec.tag_name == name:
                return ("style", "loras", i, "lora")
        return ("style", "loras")
    for pi, page in enumerate(loaded.story.pages):
        for ni, panel in enumerate(page.panels):
            if panel.id == panel_id:
                return ("pages", pi, "panels", ni, "scene")
    return ()


def position_of(loaded: LoadedStory, loc: tuple[str | int, ...]) -> str:
    """file:line:column of `loc` in the story (the file alone when the story was not parsed here)."""
    return str(loaded.doc.position(loc)) if loaded.doc is not None else str(loaded.path)


def _load_character_file(doc: YamlDocument, cid: str, ref: str, problems: list[str]) -> Character | None:
    dirs = character_search_dirs(doc.path)
    name = ref if ref.endswith((".yaml", ".yml")) else f"{ref}.yaml"
    if Path(name).is_absolute() or ".." in Path(name).parts:
        problems.append(
            f"{doc.position(('characters', cid))}: characters.{cid}: {ref!r} must be a file name "
            f"in a characters/ folder, not a path"
        )
        return None
    for d in dirs:
        candidate = d / name
        if candidate.is_file():
            cdoc = load_yaml(candidate)
            if not isinstance(cdoc.data, dict):
                problems.append(
                    f"{cdoc.position(())}: a character file must be a mapping (lora, triggers...)."
                )
                return None
            try:
                char = Character.model_validate(_plain(cdoc.data))
            except ValidationError as exc:
                problems.extend(_format_errors(exc, cdoc, Character))
                return None
            # A character file's reference images sit beside it, wherever the story that uses it is.
            home = [r.expanduser() for r in char.references]
            refs = [r if r.is_absolute() else candidate.parent / r for r in home]
            return char.model_copy(update={"references": refs})
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.y*ml")})
    close = get_close_matches(ref, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else f" Available: {', '.join(known) or 'none'}."
    problems.append(
        f"{doc.position(('characters', cid))}: characters.{cid}: no character file {name!r} in "
        f"{' or '.join(str(d) for d in dirs)}.{hint}"
    )
    return None


def _reference_problems(story: Story, doc: YamlDocument) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for pi, page in enumerate(story.pages):
        for ni, panel in enumerate(page.panels):
            assert panel.id is not None
            loc: tuple[str | int, ...] = ("pages", pi, "panels", ni)
            if panel.id in seen:
                problems.append(
                    f"{doc.position(loc + ('id',))}: {_dotted(loc)}.id: panel id {panel.id!r} is used twice "
                    f"(also {seen[panel.id]}); give each panel its own id."
                )
            seen[panel.id] = _dotted(loc)
            for k, cid in enumerate(panel.characters):
                if cid not in story.characters:
                    close = get_close_matches(cid, list(story.characters), n=1)
                    hint = f" Did you mean '{close[0]}'?" if close else ""
                    problems.append(
                        f"{doc.position(loc + ('characters', k))}: {_dotted(loc)}.characters[{k}]: unknown "
                        f"character '{cid}'.{hint} Characters: {', '.join(story.characters) or 'none'}."
                    )
            for k, line in enumerate(panel.dialogue):
                if line.speaker and story.characters and line.speaker not in story.characters:
                    names = {c.name for c in story.characters.values() if c.name}
                    if line.speaker not in names:
                        close = get_close_matches(line.speaker, list(story.characters), n=1)
                        hint = f" Did you mean '{close[0]}'?" if close else ""
                        problems.append(
                            f"{doc.position(loc + ('dialogue', k, 'speaker'))}: {_dotted(loc)}.dialogue[{k}]"
                            f".speaker: unknown speaker '{line.speaker}'.{hint} Use a character id or name."
                        )
    return problems


def _panel_render_settings(story: Story, doc: YamlDocument) -> dict[str, RenderSettings]:
    """Apply each panel's `render:` overrides on top of the story's render settings."""
    base = story.render.model_dump(exclude_unset=False)
    out: dict[str, RenderSettings] = {}
    problems: list[str] = []
    for pi, page in enumerate(story.pages):
        for ni, panel in enumerate(page.panels):
            assert panel.id is not None
            if not panel.render:
                out[panel.id] = story.render
                continue
            merged = _deep_merge(base, panel.render)
            try:
                out[panel.id] = RenderSettings.model_validate(merged)
            except ValidationError as exc:
                prefix = ("pages", pi, "panels", ni, "render")
                problems.extend(_format_errors(exc, doc, RenderSettings, prefix=prefix))
    if problems:
        raise StoryError(problems)
    return out


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists (pydantic wants plain data)."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, (int, float)) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# --- error formatting ------------------------------------------------------------------------------


def _format_errors(
    exc: ValidationError, doc: YamlDocument, root: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        full = prefix + loc
        field = _dotted(full)
        kind = err["type"]
        pos = doc.position(full, value=kind != "extra_forbidden")
        if kind == "extra_forbidden":
            name = str(loc[-1])
            allowed = _fields_at(root, loc[:-1])
            close = get_close_matches(name, allowed, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            known = f" Allowed here: {', '.join(allowed)}." if allowed and not close else ""
            parent = _dotted(full[:-1])
            out.append(f"{pos}: {parent + ': ' if parent else ''}unknown key '{name}'.{hint}{known}")
            continue
        if kind == "missing":
            out.append(f"{pos}: {field}: required field is missing; add '{loc[-1]}:' here.")
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) or kind.startswith("value_error") else f" (got {got!r})"
        where = f"{field}: " if field else ""
        out.append(f"{pos}: {where}{msg}{shown}.")
    return out


def _dotted(loc: tuple[str | int, ...]) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s


def _fields_at(model: Any, loc: tuple[str | int, ...]) -> list[str]:
    """Field names of the model found by walking `loc` through model fields, lists and dicts."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(str(part))
            if f is None:
                return []
            tp = f.annotation
        elif typing.get_origin(tp) in (list, tuple):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """Optional[X] / X | None -> X (the first model-ish member of a union)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                return a
        return args[0] if args else tp
    return tp
