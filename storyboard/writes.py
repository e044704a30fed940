"""Every write into an output folder goes through here: atomic (temp file in the same folder, then
rename), so a reader or a killed build sees the old file or the new one, never half of one; and
confined, so a story never writes anywhere but its own output folder.

Confinement: the path must lie lexically inside the root, and nothing between the root and the file
(the file included) may be a symlink. The root itself may be a symlink (an output folder a user put on
another disk); a symlink planted inside it (as `.lock`, `cache/` or `pages/`) is refused, never
followed. Temp files are named `.<name>.<random>.tmp`, so a resumed build can find and remove the
ones a killed build left (`remove_stale_temps`).

A user's own file (the story `pick`, `check --fix` and the review page change, the files `init`
creates) is written by `write_user_file` instead: at the path as typed, relative to the working
directory; through a symlink to the link's target (the link stays, as an editor's save keeps it);
with the file's permissions kept; and never over a file or into a folder marked read-only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from storyboard.errors import StoryboardError

TEMP_SUFFIX = ".tmp"


def _abs(path: Path) -> Path:
    # Lexical, not resolve(): the root may be a symlink and must stay what the user named.
    return Path(os.path.abspath(path))


def _refuse(path: Path, root: Path, why: str) -> StoryboardError:
    return StoryboardError(
        f"Refusing to write {path}: {why} (storyboard writes only inside {root}).",
        hint="remove the symlink or pick another output folder",
    )


def confined(root: Path, path: Path | str, *, make_parents: bool = False) -> Path:
    """`path` (absolute, or relative to `root`) checked to stay inside `root` with no symlink on the
    way, the final name included; with make_parents, missing folders are created (each checked)."""
    root_a = _abs(root)
    target = _abs(root_a / path)
    try:
        rel = target.relative_to(root_a)
    except ValueError:
        raise _refuse(target, root_a, "it is outside the output folder") from None
    if any(part == ".." for part in rel.parts):
        raise _refuse(target, root_a, "it is outside the output folder")
    current = root_a
    if make_parents:
        current.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(rel.parts):
        current = current / part
        last = i == len(rel.parts) - 1
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if last or not make_parents:
                continue
            with contextlib.suppress(FileExistsError):
                os.mkdir(current)
            st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            raise _refuse(target, root_a, f"{current} is a symlink")
    return target


def safe_child(root: Path, *parts: str) -> Path:
    """root/parts, refusing anything that would land outside root or pass through a symlink."""
    return confined(root, Path(*parts) if parts else Path("."))


def write_bytes(
    root: Path, path: Path | str, data: bytes, *, durable: bool = True, mode: int | None = None
) -> Path:
    """THE write: `data` into `path` inside `root`, atomically. Returns the path written.

    durable=False skips the fsync, for files that can be rebuilt (pages of a draft, thumbnails);
    mode: the new file's permission bits (default: 0o644 less the umask)."""
    target = confined(root, path, make_parents=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    # O_EXCL|O_NOFOLLOW: never through a link someone slipped in; the usual umask permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # before the rename: never visible with other bits
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_bytes(path: Path, data: bytes, *, root: Path | None = None) -> None:
    """write_bytes with `root` defaulting to the file's own folder (only the name is then checked).

    `path` is as the user typed it (relative to the working directory, or absolute); it is made
    absolute here so that a relative path is never joined to its own folder a second time."""
    target = _abs(path)
    write_bytes(_abs(root) if root is not None else target.parent, target, data)


def _not_writable(path: Path | str, what: str) -> StoryboardError:
    return StoryboardError(
        f"Cannot write {path}: {what}; nothing was changed.",
        hint="make it writable (chmod u+w) and run the command again",
    )


def _read_only(path: Path) -> bool:
    # The mode bits as well as access(): root may write anything, but a file nobody may write was
    # marked read-only on purpose, and storyboard honours that for root too.
    return not os.stat(path).st_mode & 0o222 or not os.access(path, os.W_OK)


def write_user_file(path: Path, text: str) -> Path:
    """Replace (or create) the user's file `path`, as typed, atomically; returns the file written.

    A symlink is followed to its target, which is replaced; the link itself stays. An existing file
    keeps its permission bits. A read-only file, or a folder where the file cannot be replaced
    (atomic replacement creates a temp file beside it), is a StoryboardError naming `path`."""
    target = Path(os.path.realpath(path))  # every link on the way, the file itself included
    shown = f"{path} (a link to {target})" if os.path.islink(path) else str(path)
    folder = target.parent
    mode: int | None = None
    if target.exists():
        if not target.is_file():
            raise StoryboardError(f"Cannot write {shown}: it is not a regular file; nothing was changed.")
        if _read_only(target):
            raise _not_writable(shown, "the file is read-only")
        mode = stat.S_IMODE(os.stat(target).st_mode)
    # The folder the temp file goes in, or (for a new project) the nearest one that exists and in
    # which the missing ones will be made.
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StoryboardError(f"Cannot write {path}: {existing} is not a folder; nothing was changed.")
    if _read_only(existing):
        typed = os.path.dirname(path) or "."
        where = typed if existing == folder and not os.path.islink(path) else str(existing)
        raise _not_writable(shown, f"the folder {where} is read-only")
    data = text.encode("utf-8")
    try:
        return write_bytes(folder, target, data, mode=mode)
    except PermissionError:
        raise _not_writable(shown, f"permission denied in {folder}") from None


def atomic_write_text(path: Path, text: str, *, root: Path | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), root=root)


def atomic_copy(src: Path, dst: Path, *, root: Path | None = None) -> None:
    atomic_write_bytes(dst, Path(src).read_bytes(), root=root)


def open_lock(root: Path) -> int:
    """A file descriptor on root/.lock, created if needed, never opened through a symlink."""
    path = confined(root, ".lock", make_parents=True)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise _refuse(path, _abs(root), f"{path} is a symlink") from None
        raise exc


@contextlib.contextmanager
def temp_dir(root: Path, prefix: str = "work") -> Iterator[Path]:
    """A scratch folder inside `root` (not the system temp folder), removed afterwards; one a killed
    process left is removed by the next remove_stale_temps."""
    base = confined(root, ".", make_parents=True)
    path = Path(tempfile.mkdtemp(prefix=f".{prefix}.", suffix=TEMP_SUFFIX, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_temps(root: Path, *, skip: tuple[str, ...] = ()) -> list[Path]:
    """Remove the `.*.tmp` files and folders a killed writer left under `root` (call with the lock
    held); top-level folders in `skip` (another store's, with its own lock) are left alone."""
    removed: list[Path] = []
    root_a = _abs(root)
    if not root_a.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root_a, followlinks=False):
        here = Path(dirpath)
        if here == root_a:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in list(dirnames):
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                dirnames.remove(name)
                p = here / name
                if not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        for name in filenames:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(here / name)
                    removed.append(here / name)
    return removed


def move_into(root: Path, src: Path, path: Path | str) -> Path:
    """A finished scratch file from a `temp_dir(root)` moved to `path` inside `root`, atomically
    (a rename on the same disk): write_bytes for files too large to hold in memory (a long book's
    PDF). `src` must lie inside `root`, as a temp_dir does."""
    source = confined(root, src)
    target = confined(root, path, make_parents=True)
    with open(source, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(source, target)
    return target
