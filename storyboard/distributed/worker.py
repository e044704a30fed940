"""What runs inside one Ray actor: a renderer kept for the actor's life, so its checkpoint loads once
and stays on its GPU, and the LoRA set of its last chunk stays applied for the next one.

Plain Python (Ray wraps the class at run time), so this module imports without Ray installed.
Each finished panel goes to the shared store at once, before the next one starts: when the actor
dies mid-chunk, the driver finds the finished ones there and does not send them again.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from storyboard.distributed.shared_store import open_store
from storyboard.jobs import PanelJob, Renderer

if TYPE_CHECKING:
    from PIL import Image

Encode = Callable[["Image.Image", str], bytes]
LIBRARIES = ("storyboard", "torch", "diffusers", "transformers", "safetensors", "ray")


@dataclass(frozen=True)
class WorkerSpec:
    factory: Callable[[], Renderer]  # picklable: a class or functools.partial, built in the actor
    store: str  # shared store: folder or fsspec URL
    encode: Encode  # image + infotext -> the PNG bytes a local build writes
    cpu_threads: int | None = None


@dataclass(frozen=True)
class Done:
    index: int  # which job of the chunk this is (two panels may share one pixel spec)
    job_hash: str
    png: bytes
    infotext: str
    seconds: float
    kept: bool  # False when another writer stored this hash first


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def gpu_kind(device: object) -> str:
    """The accelerator's name ("NVIDIA H200"), or the CPU's when the renderer runs on one."""
    if getattr(device, "type", None) == "cuda" and "torch" in sys.modules:
        import torch

        return str(torch.cuda.get_device_name(device))  # type: ignore[arg-type]
    return f"cpu ({platform.machine()})"


class RenderWorker:
    def __init__(self, spec: WorkerSpec) -> None:
        if spec.cpu_threads:
            import torch

            torch.set_num_threads(spec.cpu_threads)
        self.renderer = spec.factory()
        self.store = open_store(spec.store)
        self.encode = spec.encode
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        device = getattr(self.renderer, "device", None)
        self.facts: dict[str, Any] = {
            "host": socket.gethostname(),
            "device": str(device) if device is not None else self.renderer.name,
            "gpu": gpu_kind(device),
            "libraries": library_versions(),
        }

    def info(self) -> dict[str, Any]:
        """Who this actor is, and which storyboard it imported (checked by the driver and tests)."""
        import storyboard

        threads = None
        if "torch" in sys.modules:
            import torch

            threads = torch.get_num_threads()
        return {**self.facts, "name": self.name, "module": storyboard.__file__, "threads": threads}

    def render(self, jobs: list[PanelJob], hashes: list[str]) -> list[Done]:
        out = []
        left = dict(enumerate(jobs))
        for r in self.renderer.render(jobs):
            index = _which(left, r.job)
            h = hashes[index]
            png = self.encode(r.image, r.infotext)
            record = {
                **self.facts,
                "job_hash": h,
                "panel": r.job.panel_id,
                "seed": r.job.seed,
                "seconds": round(r.seconds, 3),
                "actor": self.name,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            kept = self.store.put_once(h, png, record)
            out.append(Done(index, h, png, r.infotext, r.seconds, kept))
        if len(out) != len(jobs):
            raise RuntimeError(f"the renderer returned {len(out)} of the {len(jobs)} panels it was given")
        return out


def _which(left: dict[int, PanelJob], job: PanelJob) -> int:
    """The index of a rendered job among those not yet returned: the same object when the renderer
    kept it, else the first equal one (equal jobs render equal pixels, so either answer is right)."""
    found = next((i for i, j in left.items() if j is job), None)
    if found is None:
        found = next(i for i, j in left.items() if j == job)
    del left[found]
    return found
