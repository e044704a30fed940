"""File hashes as Stable Diffusion WebUI (A1111) writes them in infotext.

Hashing a 2-7 GB checkpoint takes seconds, so full-file sha256 values are cached in a small JSON file
keyed by (absolute path, size, mtime_ns): an edited or replaced file misses the cache by itself.
WebUI's own hash rules live in ``modules/hashes.py`` and ``modules/sd_models.py`` (see a1111.md §2).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from storyboard.errors import ModelError
from storyboard.models.registry import safetensors_metadata

_CHUNK = 1 << 20


def cache_file() -> Path:
    """Where full-file hashes are remembered: $STORYBOARD_CACHE_DIR/hashes.json or ~/.cache/storyboard."""
    base = os.environ.get("STORYBOARD_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "storyboard"
    return root / "hashes.json"


def _cache_key(path: Path, kind: str) -> str:
    st = path.stat()
    # Full-file sha256 keys keep their original form so existing caches stay valid.
    suffix = "" if kind == "sha256" else f"|{kind}"
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}{suffix}"


def _read_cache(file: Path) -> dict[str, str]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # A missing or corrupt cache only costs a re-hash.
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_cache(file: Path, data: dict[str, str]) -> None:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".hashes-", suffix=".json", dir=file.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=0, sort_keys=True)
        os.replace(tmp, file)
    except OSError:
        # A read-only cache dir must not stop a render; the hash is still correct, just not remembered.
        pass


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ModelError(f"Cannot read model file {path}: {exc.strerror or exc}.") from exc


def _hash_stream(fh: BinaryIO, limit: int | None = None) -> str:
    h = hashlib.sha256()
    left = limit
    while left is None or left > 0:
        chunk = fh.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        if left is not None:
            left -= len(chunk)
    return h.hexdigest()


def _cached(p: Path, kind: str, compute: Callable[[BinaryIO], str]) -> str:
    """A hash of an open file, remembered by (absolute path, size, mtime_ns, kind)."""
    with _open(p) as fh:
        key = _cache_key(p, kind)
        file = cache_file()
        cache = _read_cache(file)
        if key in cache:
            return cache[key]
        digest = compute(fh)
    cache = _read_cache(file)  # re-read: another process may have added entries meanwhile
    cache[key] = digest
    _write_cache(file, cache)
    return digest


def sha256_file(path: str | Path) -> str:
    """Full sha256 of a file (hex), cached by (absolute path, size, mtime_ns)."""
    return _cached(Path(path), "sha256", _hash_stream)


def model_hash(path: str | Path) -> str:
    """WebUI "Model hash" (and Civitai AutoV2): sha256 of the whole file, first 10 hex digits."""
    return sha256_file(path)[:10]


def model_hash_v1(path: str | Path) -> str:
    """WebUI's old model hash (Civitai AutoV1): sha256 of 64 KiB at offset 1 MiB, first 8 digits."""
    with _open(Path(path)) as fh:
        fh.seek(0x100000)
        return _hash_stream(fh, 0x10000)[:8]


def addnet_hash_safetensors(path: str | Path) -> str:
    """sha256 of a .safetensors file's tensor bytes, skipping the 8-byte length and JSON header.

    This is kohya's / WebUI's ``addnet_hash_safetensors``: it ignores the metadata, so renaming a
    LoRA's output name or editing its tags does not change the hash.
    """
    p = Path(path)

    def after_header(fh: BinaryIO) -> str:
        head = fh.read(8)
        if len(head) != 8:
            raise ModelError(f"{p} is not a safetensors file: it is shorter than its 8-byte header.")
        fh.seek(8 + int.from_bytes(head, "little"))
        return _hash_stream(fh)

    return _cached(p, "addnet", after_header)


def lora_hash(path: str | Path) -> str:
    """WebUI "Lora hashes" value: metadata ``sshs_model_hash``, else the addnet hash; 12 hex digits."""
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        meta = safetensors_metadata(p)
        stored = meta.get("sshs_model_hash")
        if stored:
            return stored[:12]
        return addnet_hash_safetensors(p)[:12]
    # WebUI hashes non-safetensors networks by the whole file.
    return sha256_file(p)[:12]


def embedding_hash(path: str | Path) -> str:
    """WebUI "TI hashes" value: sha256 of the whole embedding file, 12 hex digits."""
    return sha256_file(path)[:12]
