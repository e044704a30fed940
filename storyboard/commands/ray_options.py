"""The `--ray [ADDRESS]`, `--ray-store`, `--ray-actors` and `--ray-cpu` options of build and render
(check --fix takes `--ray` alone)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

import typer

from storyboard.errors import StoryboardError

if TYPE_CHECKING:
    from storyboard.distributed import RayOptions

RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="[ADDRESS]",
        help="Render on Ray, one actor per GPU: alone, a local Ray over this machine's GPUs; with ADDRESS "
        "(auto, HOST:PORT, ray://HOST:PORT) that cluster. Needs pip install 'storyboard[ray]'.",
    ),
]
RayStoreOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-store",
        help="With --ray on a cluster: the shared panel store, a folder every node mounts at the same "
        "path or an fsspec URL (default: the output folder).",
    ),
]
RayActorsOpt = Annotated[
    int | None,
    typer.Option(
        "--ray-actors",
        min=1,
        metavar="N",
        help="With --ray: how many actors (default: one per GPU of the cluster; with --ray-cpu, one per "
        "this machine's torch thread count of the cluster's CPUs).",
    ),
]
RayCpuOpt = Annotated[
    bool,
    typer.Option(
        "--ray-cpu",
        help="With --ray: actors take no GPU and render on the CPU (a CPU-only cluster); slow, but the "
        "panels equal a local CPU build's.",
    ),
]
# `--ray` may stand alone; the parser wants a value, so main() gives the bare flag the value "local".
_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.-]+:\d+)$")


def ray_argv(argv: list[str]) -> list[str]:
    """`--ray` followed by something that is not an address becomes `--ray=local`."""
    out = []
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--ray" and (nxt is None or not _RAY_ADDRESS.match(nxt)):
            arg = "--ray=local"
        out.append(arg)
    return out


def ray_options(
    ray: str | None, store: str | None, actors: int | None = None, cpu: bool = False
) -> RayOptions | None:
    from storyboard.distributed import RayOptions, parse_address, require_ray

    if ray is None:
        for name, value in (("--ray-store", store), ("--ray-actors", actors), ("--ray-cpu", cpu or None)):
            if value is not None:
                raise StoryboardError(f"{name} is only used with --ray.")
        return None
    require_ray()  # the install hint before any model loads
    return RayOptions(address=parse_address(ray), store=store, actors=actors, gpus_per_actor=0 if cpu else 1)
