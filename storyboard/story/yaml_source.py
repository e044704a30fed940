"""YAML loading that remembers where every value came from.

Validation errors must point at file, line and column. ruamel.yaml's round-trip loader keeps the
position of each mapping key and sequence item, so we load with it and look positions up by the
error's location path afterwards instead of threading positions through the models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from storyboard.errors import StoryboardError


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in a named file."""

    file: Path
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class YamlDocument:
    path: Path
    data: Any

    def position(self, loc: tuple[str | int, ...], *, value: bool = True) -> Position:
        """The position of the deepest node on `loc` that exists in the document.

        A missing field has no node of its own, so it points at its parent mapping; an unknown key
        points at the key itself (value=False); a bad value points at the value.
        """
        node: Any = self.data
        line, col = 0, 0
        if isinstance(node, (CommentedMap, CommentedSeq)):
            line, col = node.lc.line, node.lc.col
        for i, part in enumerate(loc):
            if isinstance(node, CommentedMap) and part in node:
                last = i == len(loc) - 1
                line, col = node.lc.value(part) if (last and value) else node.lc.key(part)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line, col = node.lc.item(part)
                node = node[part]
            else:
                break
        return Position(self.path, line + 1, col + 1)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


# Limits that refuse hostile or runaway files in well under a second. A 10,000-panel story is about
# 0.5 MB and 60,000 values; a story nests about 8 levels deep.
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_VALUES = 500_000  # counted with YAML aliases expanded, as the loader would expand them
MAX_DEPTH = 64


def load_yaml(path: Path) -> YamlDocument:
    """Read a YAML file; syntax errors become StoryboardError with the file, line and column."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise StoryboardError(f"{path} is a folder; give the story's .yaml file.")
        if size > MAX_FILE_BYTES:
            raise StoryboardError(
                f"{path} is {size / 1e6:.1f} MB; a story file may be at most {MAX_FILE_BYTES // 2**20} MB."
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoryboardError(f"{path}: file not found.") from None
    except UnicodeDecodeError as exc:
        raise StoryboardError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8.") from None
    except OSError as exc:
        raise StoryboardError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    return parse_yaml(text, path)


def _check_size(data: Any, path: Path) -> None:
    """Refuse documents whose aliases expand past MAX_VALUES values, that nest past MAX_DEPTH, or
    that contain themselves. Sizes are memoised per shared node, so a "billion laughs" document is
    measured in microseconds rather than expanded."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def walk(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise StoryboardError(f"{path}: values are nested more than {MAX_DEPTH} levels deep.")
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise StoryboardError(f"{path}: a YAML alias refers to a value that contains it.")
        active.add(key)
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += walk(child, depth + 1)
            if total > MAX_VALUES:
                raise StoryboardError(
                    f"{path}: the document expands to more than {MAX_VALUES:,} values "
                    "(YAML aliases repeating aliases?); a story needs far fewer."
                )
        active.discard(key)
        sizes[key] = total
        return total

    walk(data, 0)


def _check_nesting(text: str, path: Path) -> None:
    """Refuse deep nesting before parsing: ruamel's parser recurses per level and takes seconds to
    fail at a few hundred. Brackets in prompt text count too, which only over-counts."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(text):
        depth = depth + 1 if m.group() in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    indent = max((len(m.group()) for m in _INDENT.finditer(text)), default=0)
    if deepest > MAX_DEPTH or indent > 2 * MAX_DEPTH:
        raise StoryboardError(f"{path}: values are nested more than {MAX_DEPTH} levels deep.")


_BRACKETS = re.compile(r"[\[\]{}]")
_INDENT = re.compile(r"(?m)^[ \t]+")


def parse_yaml(text: str, path: Path) -> YamlDocument:
    if len(text) > MAX_FILE_BYTES:
        raise StoryboardError(
            f"{path}: the text is over {MAX_FILE_BYTES // 2**20} MB; a story needs far less."
        )
    _check_nesting(text, path)
    try:
        data = _yaml().load(text)
    except RecursionError:
        raise StoryboardError(f"{path}: values are nested too deeply to read.") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise StoryboardError(f"{where}: YAML syntax error: {problem}.") from None
    except Exception as exc:  # ruamel raises several unrelated types for duplicate keys etc.
        raise StoryboardError(f"{path}: could not read YAML: {exc}") from None
    _check_size(data, path)
    return YamlDocument(path, data)


def load_round_trip(text: str) -> tuple[YAML, Any]:
    """A ruamel round-trip loader set up to write the text back as its writer wrote it (quotes kept,
    long lines never re-wrapped, the file's own indents), and the loaded document. `pick` and the
    review page's edits both write through it, so untouched lines stay byte-identical."""
    from ruamel.yaml.util import load_yaml_guess_indent

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    _, indent, block_seq_indent = load_yaml_guess_indent(text)
    # ruamel's guess reports the sequence indent (dash to content) and the dash offset.
    yaml.indent(mapping=2, sequence=indent, offset=block_seq_indent)
    return yaml, yaml.load(text)
