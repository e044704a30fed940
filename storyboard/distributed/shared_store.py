"""The content-addressed panel store as every Ray actor sees it: a shared folder or an fsspec URL.

Layout matches the output folder's own store (`cache/<h[:2]>/<h>.png`), so with the default (the
story's output folder) the driver's PanelStore finds what the actors wrote: a build killed on the
driver resumes like a local one. Beside each render, `<h>.json` records who made it: GPU kind and
library versions. They sit next to the job hash, not inside it, so a cluster of mixed GPUs shares one
cache and the hash means "these settings and files", as it does for a local build.

No file locks: NFS-style folders do not honour them reliably. A write goes to a temp file with a
name no other writer uses, then is linked into place: `link` fails when the name exists, so the first
finished render of a hash wins, readers never see half a file, and a second writer of the same hash
(two drivers, or a re-queued job) leaves the first one's bytes and provenance alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Protocol

from storyboard.writes import atomic_write_bytes


class SharedStore(Protocol):
    def has(self, job_hash: str) -> bool: ...

    def get(self, job_hash: str) -> bytes: ...

    def provenance(self, job_hash: str) -> dict[str, Any]: ...

    def put_once(self, job_hash: str, png: bytes, provenance: dict[str, Any]) -> bool:
        """Store the render unless the hash is there already; True when this call's bytes were kept."""
        ...


def _rel(job_hash: str, suffix: str) -> str:
    return f"cache/{job_hash[:2]}/{job_hash}{suffix}"


def _unique() -> str:
    # Host and pid make a leftover temp file traceable; the uuid makes it unique across the cluster.
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}"


def _meta(provenance: dict[str, Any]) -> bytes:
    return (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode()


class FolderStore:
    """A folder every node mounts at the same path (the output folder on one machine)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, job_hash: str, suffix: str = ".png") -> Path:
        return self.root / _rel(job_hash, suffix)

    def has(self, job_hash: str) -> bool:
        return self.path(job_hash).is_file()

    def get(self, job_hash: str) -> bytes:
        return self.path(job_hash).read_bytes()

    def provenance(self, job_hash: str) -> dict[str, Any]:
        try:
            data = json.loads(self.path(job_hash, ".json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def put_once(self, job_hash: str, png: bytes, provenance: dict[str, Any]) -> bool:
        dst = self.path(job_hash)
        if dst.is_file():
            return False
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.{_unique()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(png)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, dst)
                won = True
            except FileExistsError:
                won = False
            except OSError:
                # A filesystem without hard links: rename instead. Both writers hold complete files
                # of the same job, so the last rename wins and a reader still never sees half a file.
                os.replace(tmp, dst)
                won = True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if won:
            atomic_write_bytes(self.path(job_hash, ".json"), _meta(provenance))
        return won


class FsspecStore:
    """An fsspec URL (s3://, gs://, file://, memory://...): objects are written once, never changed.

    Object stores have no exclusive create, so two writers racing on one hash may both write; each
    object is complete (temp object, then move), and both hold a render of the same job.
    """

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = str(root).rstrip("/")

    def path(self, job_hash: str, suffix: str = ".png") -> str:
        return f"{self.root}/{_rel(job_hash, suffix)}"

    def has(self, job_hash: str) -> bool:
        return bool(self.fs.exists(self.path(job_hash)))

    def get(self, job_hash: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(job_hash)))

    def provenance(self, job_hash: str) -> dict[str, Any]:
        try:
            data = json.loads(self.fs.cat_file(self.path(job_hash, ".json")))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, path: str, data: bytes) -> None:
        tmp = f"{path}.{_unique()}.tmp"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def put_once(self, job_hash: str, png: bytes, provenance: dict[str, Any]) -> bool:
        dst = self.path(job_hash)
        if self.fs.exists(dst):
            return False
        self._write(dst, png)
        self._write(self.path(job_hash, ".json"), _meta(provenance))
        return True


def open_store(spec: str) -> SharedStore:
    """A folder path, or a URL with a scheme (file:// included) for fsspec."""
    if "://" in spec:
        return FsspecStore(spec)
    return FolderStore(Path(spec))
