"""What `--ray` asks for, and the one sentence a user gets when Ray is not installed."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from storyboard.errors import StoryboardError

INSTALL = "pip install 'storyboard[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """How a build reaches Ray.

    ``address`` None starts a local Ray instance over this machine's GPUs; otherwise it is joined
    ("auto", "HOST:6379", "ray://HOST:10001"). ``store`` is the shared panel store the actors write
    to: a folder every node mounts at the same path, or an fsspec URL; None means the story's output
    folder (right on one machine, and on a cluster whose output folder is a shared mount).
    ``gpus_per_actor`` 0 runs CPU actors (tests, draft renders); ``cpu_threads`` is their torch
    thread count, by default this process's own, because CPU matmuls sum in a thread-dependent order
    and a CPU render under Ray should repeat a local CPU render byte for byte.
    """

    address: str | None = None
    store: str | None = None
    actors: int | None = None  # None: one per GPU of the cluster (draft: one per CPU, at most 4)
    gpus_per_actor: float = 1.0
    cpus_per_actor: float = 1.0
    cpu_threads: int | None = None
    max_attempts: int = 2  # a job that fails (or kills its actor) this many times is reported


def parse_address(value: str | None) -> str | None:
    """The CLI's `--ray` value: "local" (the flag alone) starts Ray here; anything else is joined."""
    if value is None or value.strip() in ("", "local"):
        return None
    return value.strip()


def require_ray() -> ModuleType:
    """The ray module, or a StoryboardError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise StoryboardError(f"--ray needs Ray, which is not installed here: run {INSTALL}.") from None
    return ray
