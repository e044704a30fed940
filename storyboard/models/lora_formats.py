"""Read kohya / LyCORIS LoRA files into typed modules.

A LoRA file is a flat state dict whose keys look like ``lora_unet_<module>.<suffix>``. We group the
keys by module name, recognise the network type from the suffixes (the same tests WebUI's
``network_*.py`` ``create_module`` use) and keep the tensors on the CPU. Parsed files are cached in a
small LRU keyed by (path, mtime, size) so switching LoRA sets never re-reads a file that did not change.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from storyboard.errors import ModelError
from storyboard.models.pickle_gate import load_pickle

PICKLE_SUFFIXES = {".pt", ".ckpt", ".pth", ".bin"}
# Key prefixes of the components a kohya LoRA can touch, longest first so "lora_te1_" wins over "lora_te_".
NAME_PREFIXES = ("lora_unet_", "lora_te1_", "lora_te2_", "lora_te_")

# peft-style names some converters write inside kohya-named modules; WebUI accepts them as up/down.
_ALIASES = {
    "lora_A.weight": "lora_down.weight",
    "lora_B.weight": "lora_up.weight",
    "lora.down.weight": "lora_down.weight",
    "lora.up.weight": "lora_up.weight",
}


@dataclass
class LoraModule:
    """One patched layer: its kohya name, network type and raw tensors (suffix -> tensor)."""

    name: str
    type: str  # "lora" | "loha" | "lokr" | "full"
    tensors: dict[str, torch.Tensor]
    alpha: float | None = None
    scale: float | None = None

    @property
    def dim(self) -> int | None:
        """The rank WebUI divides alpha by (None where the type has no rank)."""
        t = self.tensors
        if self.type == "lora":
            return int(t["lora_down.weight"].shape[0])
        if self.type == "loha":
            return int(t["hada_w1_b"].shape[0])
        if self.type == "lokr":
            # WebUI: w2b's rank wins over w1b's; a LoKr with both factors full has no rank (scale 1).
            if "lokr_w2_b" in t:
                return int(t["lokr_w2_b"].shape[0])
            if "lokr_w1_b" in t:
                return int(t["lokr_w1_b"].shape[0])
        return None

    @property
    def component_prefix(self) -> str:
        for p in NAME_PREFIXES:
            if self.name.startswith(p):
                return p
        return ""

    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors.values())


@dataclass
class LoraNetwork:
    """A parsed LoRA file."""

    path: Path
    metadata: dict[str, str]
    modules: dict[str, LoraModule]
    # Module names whose type we do not apply (IA3, DoRA, GLoRA, OFT, ...), and stray keys.
    unsupported: list[str] = field(default_factory=list)
    mtime_ns: int = 0
    size: int = 0
    _device_cache: dict[tuple[str, str], dict[str, dict[str, torch.Tensor]]] = field(
        default_factory=dict, repr=False
    )

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def key(self) -> tuple[str, int, int]:
        """Identity of the file contents (path, mtime, size): equal keys mean the same deltas."""
        return (str(self.path), self.mtime_ns, self.size)

    def types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.modules.values():
            counts[m.type] = counts.get(m.type, 0) + 1
        return counts

    def tensors_on(self, device: torch.device, dtype: torch.dtype) -> dict[str, dict[str, torch.Tensor]]:
        """All module tensors on ``device``/``dtype``, moved once and kept resident for fast switching."""
        ck = (str(device), str(dtype))
        cached = self._device_cache.get(ck)
        if cached is None:
            cached = {
                name: {k: v.to(device=device, dtype=dtype, non_blocking=True) for k, v in m.tensors.items()}
                for name, m in self.modules.items()
            }
            self._device_cache[ck] = cached
        return cached

    def drop_device_copies(self) -> None:
        self._device_cache.clear()


def _classify(suffixes: set[str]) -> str | None:
    if "lora_up.weight" in suffixes and "lora_down.weight" in suffixes:
        return "lora"
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= suffixes:
        return "loha"
    has1 = "lokr_w1" in suffixes or {"lokr_w1_a", "lokr_w1_b"} <= suffixes
    has2 = "lokr_w2" in suffixes or {"lokr_w2_a", "lokr_w2_b"} <= suffixes
    if has1 and has2:
        return "lokr"
    if "diff" in suffixes:
        return "full"
    return None


# Module parts WebUI's types use that we do not (yet) apply; a module carrying them is reported.
_UNSUPPORTED_SUFFIXES = {"dora_scale", "on_input", "a1.weight", "oft_blocks", "oft_diag", "w_norm", "b_norm"}


def parse_state_dict(sd: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> LoraNetwork:
    """Group a flat LoRA state dict into modules (pure; no disk access)."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    stray: list[str] = []
    for key, tensor in sd.items():
        if "." not in key or not key.startswith(NAME_PREFIXES):
            stray.append(key)
            continue
        name, suffix = key.split(".", 1)
        groups.setdefault(name, {})[_ALIASES.get(suffix, suffix)] = tensor
    modules: dict[str, LoraModule] = {}
    unsupported: list[str] = list(stray)
    for name, tensors in groups.items():
        kind = _classify(set(tensors))
        if kind is None or _UNSUPPORTED_SUFFIXES & set(tensors):
            unsupported.append(name)
            continue
        alpha = tensors.pop("alpha", None)
        scale = tensors.pop("scale", None)
        modules[name] = LoraModule(
            name=name,
            type=kind,
            tensors=tensors,
            alpha=float(alpha.float().item()) if alpha is not None else None,
            scale=float(scale.float().item()) if scale is not None else None,
        )
    return LoraNetwork(path=path, metadata=metadata, modules=modules, unsupported=unsupported)


def _load_file(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ModelError(
                f"LoRA file {path} is not a readable .safetensors file ({exc}).",
                hint="re-download the file or point to the right one",
            ) from exc
        return sd, meta
    if suffix in PICKLE_SUFFIXES:
        obj: Any = load_pickle(path, allow_pickle=allow_pickle, what="LoRA file")
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ModelError(f"LoRA file {path} does not hold a state dict.")
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}
    raise ModelError(
        f"{path} is not a LoRA file this tool reads (expected .safetensors).",
        hint="LoRA files end in .safetensors (or .pt/.ckpt with allow_pickle)",
    )


_CACHE: OrderedDict[tuple[str, int, int, bool], LoraNetwork] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 16


def read_lora(path: str | Path, *, allow_pickle: bool = False, pin_memory: bool = False) -> LoraNetwork:
    """Parse a LoRA file (cached by path, mtime and size; tensors on CPU)."""
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise ModelError(f"LoRA file {path} does not exist.", hint="check the path or --lora-dir") from exc
    ck = (str(p), st.st_mtime_ns, st.st_size, allow_pickle)
    with _CACHE_LOCK:
        hit = _CACHE.get(ck)
        if hit is not None:
            _CACHE.move_to_end(ck)
            return hit
    sd, meta = _load_file(p, allow_pickle)
    if pin_memory and torch.cuda.is_available():
        sd = {k: v.pin_memory() for k, v in sd.items()}
    net = parse_state_dict(sd, meta, p)
    net.mtime_ns, net.size = st.st_mtime_ns, st.st_size
    if not net.modules:
        raise ModelError(
            f"{p} holds no LoRA modules this tool understands "
            f"({len(sd)} tensors; first keys: {', '.join(list(sd)[:3])}).",
            hint="only kohya-style lora_unet_/lora_te_ LoRA, LoCon, LoHa and LoKr files are supported",
        )
    with _CACHE_LOCK:
        _CACHE[ck] = net
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return net


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def metadata_json(meta: dict[str, str], key: str) -> Any:
    """A metadata value that kohya stores as JSON text, or None when missing or malformed."""
    raw = meta.get(key)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return None
