"""The panel store: plain files under output/<story>/, written atomically, guarded by a lock.

Layout of a story's output folder:
  cache/<h[:2]>/<h>.png   every render ever made, keyed by job hash (content-addressed)
  panels/<id>.png         the current image of each panel (a copy of its cache entry)
  manifest.json           per panel: job hash, seed, prompts, LoRAs, file, timings
  .lock                   held while a build writes here
  draft/                  a draft build's own store (same layout), so drafts never replace renders

Every write goes through storyboard.writes (atomic, confined to the folder, no symlinks followed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from storyboard.errors import StoryboardError
from storyboard.jobs import Manifest
from storyboard.writes import confined, open_lock, remove_stale_temps, safe_child, write_bytes


class PanelStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.panels_dir = root / "panels"
        self.cache_dir = root / "cache"
        self.manifest_path = root / "manifest.json"

    def cache_path(self, job_hash: str) -> Path:
        return self.cache_dir / job_hash[:2] / f"{job_hash}.png"

    def has(self, job_hash: str) -> bool:
        return self.cache_path(job_hash).is_file()

    def panel_path(self, panel_id: str) -> Path:
        return safe_child(self.root, "panels", f"{panel_id}.png")

    def put(self, job_hash: str, png: bytes) -> Path:
        return write_bytes(self.root, self.cache_path(job_hash), png)

    def publish(self, panel_id: str, job_hash: str) -> Path:
        """Make panels/<id>.png the cached render."""
        return self.copy_out(job_hash, self.panel_path(panel_id))

    def copy_out(self, job_hash: str, dst: Path) -> Path:
        """Make `dst` (inside this folder) hold the cached render; untouched when it already holds
        those bytes, so its timestamp says when the picture last changed."""
        data = self.cache_path(job_hash).read_bytes()
        if dst.is_file() and dst.stat().st_size == len(data) and dst.read_bytes() == data:
            return dst
        return write_bytes(self.root, dst, data)

    def read_manifest(self) -> Manifest:
        """The manifest (typed, version-checked); an empty one when none was written yet."""
        try:
            text = confined(self.root, self.manifest_path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return Manifest()
        return Manifest.parse(text, str(self.manifest_path))

    def write_manifest(self, manifest: Manifest) -> None:
        write_bytes(self.root, self.manifest_path, manifest.dumps().encode("utf-8"))

    @contextlib.contextmanager
    def lock(self, *, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """One writer per output folder. A second build waits (saying who holds it) or fails at once.
        Once held, temp files a killed build left are removed (no writer can be using them)."""
        fd = open_lock(self.root)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                if not wait:
                    raise StoryboardError(
                        f"{self.root} is being built by {holder}.",
                        hint="wait for it to finish, or run again without --no-wait to queue behind it",
                    ) from None
                if on_wait:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}".encode(), 0)
            remove_stale_temps(self.root, skip=("draft",))
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
