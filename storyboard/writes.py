"""Writes into an output folder: atomic (temp file in the same folder, then rename), so a reader or a
killed build sees the old file or the new one, never half of one; and confined to the output folder.

Every stage that writes under output/<story>/ (the panel store, layout, the check report) uses these.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from storyboard.errors import StoryboardError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, then rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def safe_child(root: Path, *parts: str) -> Path:
    """root/parts, refusing anything that would land outside root (a story never writes elsewhere)."""
    root_r = root.resolve()
    p = root_r.joinpath(*parts).resolve()
    if p != root_r and root_r not in p.parents:
        raise StoryboardError(f"Refusing to write {p}: it is outside the output folder {root_r}.")
    return p
