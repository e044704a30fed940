"""YAML loading that remembers where every value came from.

Validation errors must point at file, line and column. ruamel.yaml's round-trip loader keeps the
position of each mapping key and sequence item, so we load with it and look positions up by the
error's location path afterwards instead of threading positions through the models.
"""

from __future__ import annotations

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


def load_yaml(path: Path) -> YamlDocument:
    """Read a YAML file; syntax errors become StoryboardError with the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoryboardError(f"{path}: file not found.") from None
    except UnicodeDecodeError as exc:
        raise StoryboardError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8.") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise StoryboardError(f"{where}: YAML syntax error: {problem}.") from None
    except Exception as exc:  # ruamel raises several unrelated types for duplicate keys etc.
        raise StoryboardError(f"{path}: could not read YAML: {exc}") from None
    return YamlDocument(path, data)
