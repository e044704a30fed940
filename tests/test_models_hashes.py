from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from storyboard.errors import ModelError
from storyboard.models import hashes


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("STORYBOARD_CACHE_DIR", str(cache))
    return cache


def _big_file(path: Path, size: int = 0x100000 + 0x20000, seed: int = 1) -> bytes:
    data = torch.randint(0, 256, (size,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    blob = bytes(data.tolist())
    path.write_bytes(blob)
    return blob


def test_model_hash_is_sha256_prefix(tmp_path: Path) -> None:
    f = tmp_path / "m.safetensors"
    blob = _big_file(f)
    full = hashlib.sha256(blob).hexdigest()
    assert hashes.sha256_file(f) == full
    assert hashes.model_hash(f) == full[:10]


def test_model_hash_v1_hashes_64k_at_1m(tmp_path: Path) -> None:
    f = tmp_path / "m.ckpt"
    blob = _big_file(f, seed=2)
    assert hashes.model_hash_v1(f) == hashlib.sha256(blob[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]


def _lora_file(path: Path, metadata: dict[str, str] | None) -> bytes:
    save_file({"a.lora_down.weight": torch.arange(12.0).reshape(3, 4)}, str(path), metadata=metadata)
    return path.read_bytes()


def test_addnet_hash_skips_header_and_ignores_metadata(tmp_path: Path) -> None:
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    blob_a = _lora_file(a, {"ss_output_name": "one"})
    _lora_file(b, {"ss_output_name": "a much longer output name", "ss_x": "1"})
    n = int.from_bytes(blob_a[:8], "little")
    expected = hashlib.sha256(blob_a[8 + n :]).hexdigest()
    assert hashes.addnet_hash_safetensors(a) == expected
    assert hashes.addnet_hash_safetensors(b) == expected
    assert hashes.addnet_hash_safetensors(a) != hashlib.sha256(blob_a).hexdigest()


def test_lora_hash_prefers_sshs_model_hash(tmp_path: Path) -> None:
    f = tmp_path / "l.safetensors"
    _lora_file(f, {"sshs_model_hash": "0123456789abcdef0123"})
    assert hashes.lora_hash(f) == "0123456789ab"
    g = tmp_path / "g.safetensors"
    blob = _lora_file(g, {"ss_output_name": "g"})
    n = int.from_bytes(blob[:8], "little")
    assert hashes.lora_hash(g) == hashlib.sha256(blob[8 + n :]).hexdigest()[:12]


def test_embedding_hash_is_full_sha256_12(tmp_path: Path) -> None:
    f = tmp_path / "EasyNegative.safetensors"
    blob = _lora_file(f, None)
    assert hashes.embedding_hash(f) == hashlib.sha256(blob).hexdigest()[:12]


def test_cache_keyed_by_path_size_mtime(tmp_path: Path, _cache_dir: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"A" * 100)
    first = hashes.sha256_file(f)
    st = f.stat()
    cache = json.loads((_cache_dir / "hashes.json").read_text())
    assert list(cache.values()) == [first]
    # Same size and mtime: the cache answers (the stale value proves it was not re-read).
    f.write_bytes(b"B" * 100)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert hashes.sha256_file(f) == first
    # A new mtime misses the cache.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert hashes.sha256_file(f) == hashlib.sha256(b"B" * 100).hexdigest()
    assert len(json.loads((_cache_dir / "hashes.json").read_text())) == 2


def test_corrupt_cache_is_ignored(tmp_path: Path, _cache_dir: Path) -> None:
    _cache_dir.mkdir()
    (_cache_dir / "hashes.json").write_text("{not json")
    f = tmp_path / "m.bin"
    f.write_bytes(b"xyz")
    assert hashes.sha256_file(f) == hashlib.sha256(b"xyz").hexdigest()
    assert json.loads((_cache_dir / "hashes.json").read_text())  # rewritten as valid JSON


def test_missing_file_is_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="nope.safetensors"):
        hashes.model_hash(tmp_path / "nope.safetensors")


def test_addnet_hash_is_cached_separately_from_sha256(tmp_path: Path, _cache_dir: Path) -> None:
    f = tmp_path / "l.safetensors"
    save_file({"w": torch.arange(6.0)}, str(f))
    addnet = hashes.addnet_hash_safetensors(f)
    full = hashes.sha256_file(f)
    assert (
        addnet != full
        and addnet
        == hashlib.sha256(f.read_bytes()[8 + int.from_bytes(f.read_bytes()[:8], "little") :]).hexdigest()
    )
    cache = json.loads((_cache_dir / "hashes.json").read_text())
    assert sorted(cache.values()) == sorted([addnet, full])
    # the LoRA hash comes from the cache: a stale cached value proves the file was not re-read
    key = next(k for k, v in cache.items() if v == addnet)
    cache[key] = "f" * 64
    (_cache_dir / "hashes.json").write_text(json.dumps(cache))
    assert hashes.lora_hash(f) == "f" * 12
