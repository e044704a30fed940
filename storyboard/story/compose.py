"""Compose each panel's full prompts from character, style and scene with sandboxed Jinja2 templates."""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from storyboard.errors import StoryboardError
from storyboard.prompt.parse import strip_comments
from storyboard.story.load import folder_above
from storyboard.story.schema import Panel, Story

BUILTIN_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
PACKAGED_TEMPLATES = Path(__file__).resolve().parents[1] / "data" / "templates"


@dataclass(frozen=True)
class ComposedPrompt:
    positive: str
    negative: str


def template_dirs(story_dir: Path) -> list[Path]:
    """Where templates are looked up, first match wins: the story's project, then the built-ins."""
    above = folder_above(story_dir)  # not story_dir.parent: "." and ".." have no lexical parent
    dirs = [story_dir / "templates", above / "templates", BUILTIN_TEMPLATES, PACKAGED_TEMPLATES]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


@lru_cache(maxsize=8)
def _environment(dirs: tuple[Path, ...]) -> SandboxedEnvironment:
    # Sandbox: a story may come from someone else, and its templates must not reach Python internals.
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )


def tidy(text: str) -> str:
    """One prompt part per line -> one comma-separated prompt; blank parts and stray commas dropped.

    `#` comments are removed first, per line, as WebUI does (scripts/comments.py): joining the lines
    first would let a comment swallow every part after it.
    """
    parts = []
    for line in strip_comments(text).splitlines():
        part = re.sub(r"\s+", " ", line).strip().strip(",").strip()
        if part:
            parts.append(part)
    return ", ".join(parts)


def panel_context(
    story: Story, page: int, index: int, panel: Panel, render_quality: str, render_negative: str
) -> dict[str, Any]:
    chars = []
    for cid in panel.characters:
        c = story.characters[cid]
        chars.append(
            {
                "id": cid,
                "name": c.name or cid,
                "triggers": list(c.triggers),
                "prompt": c.prompt,
                "negative": c.negative,
                "lora_tag": c.tag,
                "lora": c.lora,
                "weight": c.te,
            }
        )
    return {
        "quality": render_quality,
        "negative": render_negative,
        "scene": panel.scene,
        "characters": chars,
        "style": {
            "prompt": story.style.prompt,
            "negative": story.style.negative,
            "loras": [{"tag": s.tag, "lora": s.lora, "weight": s.te} for s in story.style.loras],
        },
        "panel": {
            "id": panel.id,
            "page": page,
            "index": index,
            "caption": panel.caption or "",
            "negative": panel.negative,
        },
        "story": {"title": story.title, "language": story.language},
    }


def compose(template: str, dirs: list[Path], context: dict[str, Any]) -> ComposedPrompt:
    env = _environment(tuple(dirs))
    return ComposedPrompt(
        positive=tidy(_render(env, f"prompts/{template}/positive.j2", context, template, dirs)),
        negative=tidy(_render(env, f"prompts/{template}/negative.j2", context, template, dirs)),
    )


def _render(
    env: SandboxedEnvironment, name: str, context: dict[str, Any], template: str, dirs: list[Path]
) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound:
        available = sorted({p.parent.name for d in dirs for p in (d / "prompts").glob("*/positive.j2")})
        raise StoryboardError(
            f"Prompt template {template!r} not found (looked for {name} in {', '.join(map(str, dirs))}).",
            hint=f"set render.template to one of: {', '.join(available) or 'default'}",
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise StoryboardError(
            f"{exc.filename or name}:{exc.lineno}: template syntax error: {exc.message}"
        ) from None
    except jinja2.exceptions.SecurityError as exc:
        raise StoryboardError(f"{_where(exc, name)}: template tried something unsafe: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise StoryboardError(
            f"{_where(exc, name)}: {exc.message}",
            hint="see templates/README.md for the variables a prompt template can use",
        ) from None


def _where(exc: BaseException, fallback: str) -> str:
    """Template file and line from Jinja's rewritten traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return f"{frame.filename}:{frame.lineno}"
    return fallback
