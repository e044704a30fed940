"""Rendering on a Ray cluster (`--ray`): one actor per GPU behind the ordinary Renderer protocol.

    app.make_renderer --ray--> ray_renderer(local renderer) -> RayRenderer
        check / identity: on the driver (same job hashes as a local build)
        render: chunks of like jobs -> actors (RenderWorker: a renderer kept for the actor's life)
                -> each panel into the shared store at once -> back to the driver -> app/build

Ray is optional (`pip install 'storyboard[ray]'`): this package imports without it, and asking for
`--ray` without it is a one-sentence error (`options.require_ray`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from storyboard.distributed.options import INSTALL, RayOptions, parse_address, require_ray
from storyboard.distributed.worker import Encode, WorkerSpec
from storyboard.jobs import Renderer

if TYPE_CHECKING:
    from storyboard.distributed.renderer import Notify, RayRenderer

__all__ = ["INSTALL", "RayOptions", "parse_address", "ray_renderer", "require_ray"]


def ray_renderer(
    local: Renderer,
    base_dir: Path,
    options: RayOptions,
    *,
    store: Path,
    encode: Encode,
    quiet: bool = True,
    notify: Notify | None = None,
) -> RayRenderer:
    """A RayRenderer rendering what `local` renders (draft or diffusers), writing to `options.store`
    or else to `store` (the story's output folder). Model paths must be the same on every node."""
    require_ray()  # before torch loads: the missing-Ray sentence should come at once
    from storyboard.distributed.renderer import RayRenderer

    threads = options.cpu_threads
    if local.name == "draft":
        from storyboard.render.draft import DraftRenderer

        spec = WorkerSpec(DraftRenderer, options.store or str(store), encode)
        identity: Renderer = local
    else:
        import torch

        from storyboard.render.engine import DiffusersRenderer

        # The driver hashes jobs for the actors' device (cuda/float16 on GPUs), whatever it has itself.
        device = "cuda" if options.gpus_per_actor > 0 else "cpu"
        if device == "cpu" and threads is None:
            threads = torch.get_num_threads()
        factory = partial(DiffusersRenderer, base_dir, quiet=True, device=device)
        spec = WorkerSpec(factory, options.store or str(store), encode, threads if device == "cpu" else None)
        identity = factory()
    kwargs = {"notify": notify} if notify is not None else {}
    return RayRenderer(identity, spec, options, quiet=quiet, **kwargs)
