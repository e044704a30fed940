"""`RayRenderer`: the Renderer protocol over a pool of Ray actors, one per GPU.

The app layer builds with it exactly as with a local renderer: `check` and `identity` run here on
the driver (file hashes: the same job hash as a local build), `render` yields finished panels in the
order they come back from the cluster; the driver alone writes the manifest and lays out pages.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from storyboard.distributed.connect import connect, stop_local
from storyboard.distributed.options import RayOptions, require_ray
from storyboard.distributed.schedule import Chunk, Scheduler
from storyboard.distributed.shared_store import open_store
from storyboard.distributed.throughput import WorkerStats, summary
from storyboard.distributed.worker import Done, RenderWorker, WorkerSpec
from storyboard.errors import StoryboardError
from storyboard.jobs import PanelJob, RenderedPanel, Renderer, RenderIdentity, job_hash
from storyboard.render.progress import RenderProgress, progress_enabled

Notify = Callable[[str], None]
DRAFT_ACTORS = 4  # drafts are cheap: more actors would only add start-up time


def _silent(_message: str) -> None:
    return None


@dataclass
class _Actor:
    handle: Any
    stats: WorkerStats
    model: object = None  # affinity: what its last chunk loaded and applied
    loras: object = None
    busy: bool = False
    dead: bool = False


class RayRenderer:
    """Renders on Ray actors; `local` answers check/identity, `spec` builds each actor's renderer."""

    def __init__(
        self,
        local: Renderer,
        spec: WorkerSpec,
        options: RayOptions,
        *,
        quiet: bool = True,
        notify: Notify = _silent,
    ) -> None:
        self.name = local.name
        self.local = local
        self.options = options
        self.quiet = quiet
        self.notify = notify
        self.store = open_store(spec.store)
        self.spec = spec
        self.started = False  # this renderer started Ray (a local instance), so it stops it too
        self.actors: list[_Actor] = []
        self.pending: list[Any] = []  # actor handles asked for, not yet up
        self.infos: list[dict[str, Any]] = []
        self.last_stats: list[WorkerStats] = []
        self.recovered: list[str] = []  # panels a dead actor finished, read back from the store

    def start(self) -> None:
        """Reach Ray and bring the actors up; render() calls it when there is something to render,
        so a build with every panel in the store never starts Ray."""
        if self.actors:
            return
        self.started = connect(self.options, self.notify) or self.started
        ray = require_ray()
        gpus = 0.0 if self.local.name == "draft" else self.options.gpus_per_actor
        count = self._default_actors(ray, gpus)
        remote = ray.remote(RenderWorker).options(
            num_gpus=gpus, num_cpus=self.options.cpus_per_actor, max_restarts=0, max_task_retries=0
        )
        each = f"{gpus:g} GPU each" if gpus else "on the CPU"
        self.notify(f"ray: starting {count} actor(s), {each}")
        self.pending = [remote.remote(self.spec) for _ in range(count)]
        # One round trip: every actor is up (its renderer built) before the first job is sent, and
        # a broken node shows here as an error rather than mid-build.
        infos = ray.get([h.info.remote() for h in self.pending])
        self.actors = [
            _Actor(h, WorkerStats(i["name"], i["gpu"])) for h, i in zip(self.pending, infos, strict=True)
        ]
        self.pending = []
        self.infos = infos

    def _default_actors(self, ray: Any, gpus: float) -> int:
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1))
        if self.options.actors:
            each, kind = (gpus, "GPU") if gpus else (self.options.cpus_per_actor, "CPU")
            need = self.options.actors * each
            have = resources.get(kind, 0)
            if need > have:  # Ray would wait for the missing ones forever
                raise StoryboardError(
                    f"--ray-actors {self.options.actors} needs {need:g} {kind}(s); "
                    f"the Ray cluster has {have:g}.",
                    hint="ask for fewer actors",
                )
            return self.options.actors
        if gpus == 0:
            if self.local.name == "draft":
                return max(1, min(DRAFT_ACTORS, cpus))
            return max(1, cpus // (self.spec.cpu_threads or 1))  # each actor runs that many torch threads
        count = int(resources.get("GPU", 0) // gpus)
        if count < 1:
            raise StoryboardError(
                "The Ray cluster has no GPU to render on.",
                hint="start Ray on a machine with GPUs, render on its CPUs with --ray-cpu, "
                "or build without --ray (or with --draft)",
            )
        return count

    # The Renderer protocol ------------------------------------------------------------------

    def check(self, jobs: Sequence[PanelJob]) -> None:
        self.local.check(jobs)

    def identity(self, job: PanelJob) -> RenderIdentity:
        return self.local.identity(job)

    def render(self, jobs: Sequence[PanelJob]) -> Iterator[RenderedPanel]:
        jobs = list(jobs)
        if not jobs:
            return
        self.check(jobs)
        hashes = {j.spec_digest(): job_hash(j, self) for j in jobs}
        todo = []
        for j in jobs:
            h = hashes[j.spec_digest()]
            if self.store.has(h):  # rendered already (another driver, a build killed after the write)
                yield self._from_store(j, h)
            else:
                todo.append(j)
        if not todo:
            return
        self.start()
        alive = [a for a in self.actors if not a.dead]
        sched = Scheduler.of(todo, max(1, len(alive)), self.options.max_attempts)
        t0 = time.perf_counter()
        with RenderProgress(len(todo), progress_enabled(self.quiet)) as bar:
            for panel in self._run(sched, hashes):
                bar.panels_done(1)
                yield panel
        self.last_stats = [a.stats for a in self.actors]
        self.notify(summary(self.last_stats, time.perf_counter() - t0))
        if sched.given_up:
            names = ", ".join(f"{f.panel_id} ({f.reason})" for f in sched.given_up)
            raise StoryboardError(
                f"{len(sched.given_up)} panel(s) failed {self.options.max_attempts} times: {names}.",
                hint="every other panel is finished and kept; fix the cause and run the same command again",
            )

    def _run(self, sched: Scheduler, hashes: dict[str, str]) -> Iterator[RenderedPanel]:
        ray = require_ray()
        inflight: dict[Any, tuple[_Actor, Chunk, float]] = {}
        while sched or inflight:
            for actor in self.actors:
                if actor.busy or actor.dead:
                    continue
                chunk = sched.next_for(actor.model, actor.loras)
                if chunk is None:
                    break
                keys = [hashes[j.spec_digest()] for j in chunk.jobs]
                ref = actor.handle.render.remote(list(chunk.jobs), keys)
                actor.busy, actor.model, actor.loras = True, chunk.model, chunk.loras
                inflight[ref] = (actor, chunk, time.perf_counter())
            if not inflight:
                raise StoryboardError(
                    "Every Ray actor died before the build finished.",
                    hint="finished panels are kept; run the same command again to resume",
                )
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            actor, chunk, started = inflight.pop(ref)
            actor.busy = False
            try:
                done: list[Done] = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                actor.dead = True
                yield from self._recover(sched, chunk, hashes, f"its actor died: {type(exc).__name__}")
                continue
            except ray.exceptions.RayTaskError as exc:
                actor.model = actor.loras = None  # unknown state after a failure: no affinity
                cause = exc.cause if exc.cause is not None else exc
                first = (str(cause).strip().splitlines() or [""])[0][:200]
                reason = f"{type(cause).__name__}: {first}"
                yield from self._recover(sched, chunk, hashes, reason)
                continue
            except ray.exceptions.RayError as exc:
                # Out of memory, a lost node or object: the actor is gone or cannot be trusted.
                actor.dead = True
                yield from self._recover(sched, chunk, hashes, f"{type(exc).__name__} on its actor")
                continue
            actor.stats.add(len(done), time.perf_counter() - started)
            for d in done:
                yield RenderedPanel(chunk.jobs[d.index], _image(d.png), d.infotext, d.seconds)

    def _recover(
        self, sched: Scheduler, chunk: Chunk, hashes: dict[str, str], reason: str
    ) -> Iterator[RenderedPanel]:
        """A failed chunk: panels it stored before failing are read back, the rest go back in line."""
        lost = []
        for j in chunk.jobs:
            h = hashes[j.spec_digest()]
            if self.store.has(h):
                self.recovered.append(j.panel_id)
                yield self._from_store(j, h)
            else:
                lost.append(j)
        sched.failed(lost, reason)

    def _from_store(self, job: PanelJob, h: str) -> RenderedPanel:
        png = self.store.get(h)
        image = _image(png)
        seconds = float(self.store.provenance(h).get("seconds", 0.0))
        return RenderedPanel(job, image, str(image.info.get("parameters", "")), seconds)

    def close(self) -> None:
        """Stop the actors (their checkpoints leave the GPUs); stop Ray too if this renderer started it."""
        ray = require_ray()
        for h in self.pending:  # stopped while they were starting
            ray.kill(h)
        self.pending = []
        for a in self.actors:
            if not a.dead:
                ray.kill(a.handle)
            a.dead = True
        if self.started:
            stop_local(ray)
            self.started = False


def _image(png: bytes) -> Image.Image:
    """The panel, decoded only when used: when the actor stored it in the driver's own store, the
    build never looks at the pixels, and a 1024x1536 decode costs the driver ~70 ms a panel."""
    return Image.open(io.BytesIO(png))
