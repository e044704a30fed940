"""safetensors files whose bytes depend only on their tensors and metadata.

safetensors' writer keeps the metadata in a hash map, so the same tensors and metadata come out with
the metadata keys in a different order in each process. Full-file hashes (the render identity, the
panel cache) then change when a file is merely written again, and every panel using it re-renders.
Here the header is written once more with the metadata keys sorted: same JSON, same length, so the
tensor offsets stay valid.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save


def stable_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """`safetensors.torch.save` with the header's `__metadata__` keys in sorted order.

    >>> t = {"w": torch.zeros(2)}
    >>> stable_bytes(t, {"b": "1", "a": "2"}) == stable_bytes(t, {"a": "2", "b": "1"})
    True
    """
    data = save(dict(tensors), metadata=dict(metadata) if metadata else None)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > n:  # never: the same JSON re-ordered; keep the writer's own bytes if it were
        return data
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n :]


def save_file_stable(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write `tensors` (and `metadata`) to `path` with reproducible bytes."""
    Path(path).write_bytes(stable_bytes(tensors, metadata))
