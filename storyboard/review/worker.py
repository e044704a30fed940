"""One render worker and its queue: requests run one at a time, in the order they came.

A GPU renders one thing at a time anyway, and the panel store allows one writer per output folder, so
a single thread does every render, candidate batch and layout. A request equal to one still waiting or
running (a double click, a second tab) joins that one instead of queueing a copy; renders already in
the content-addressed store are reused by the app layer, so nothing is rendered twice.
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from storyboard.app import review_ops
from storyboard.app.operations import MAX_RANDOM_SEED, layout
from storyboard.errors import StoryboardError
from storyboard.jobs import Renderer
from storyboard.story.load import load_story
from storyboard.story.plan import plan

JobKind = Literal["build", "render", "reroll", "candidates", "layout"]
JobState = Literal["queued", "running", "done", "failed"]
KEEP_FINISHED = 20  # finished jobs the page still lists

RendererFactory = Callable[[Callable[[str], None]], Renderer]


@dataclass
class Job:
    id: int
    kind: JobKind
    panel: str | None = None
    seeds: tuple[int, ...] = ()
    state: JobState = "queued"
    done: int = 0
    total: int = 0
    finished: list[int] = field(default_factory=list)  # candidate seeds written so far
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def same_request(self, kind: JobKind, panel: str | None, count: int) -> bool:
        if self.kind != kind or self.panel != panel:
            return False
        return kind != "candidates" or len(self.seeds) == count

    @property
    def label(self) -> str:
        what = {
            "build": "build missing panels",
            "render": f"render {self.panel}",
            "reroll": f"reroll {self.panel} (seed {self.seeds[0] if self.seeds else '?'})",
            "candidates": f"{len(self.seeds)} candidates of {self.panel}",
            "layout": "lay out pages",
        }[self.kind]
        return what


class RenderQueue:
    """The session's queue. `stamp` grows on every change, so the page can ask "anything new?"."""

    def __init__(
        self, story: Path, out: Path, renderer_factory: RendererFactory, rng: random.Random | None = None
    ) -> None:
        self.story, self.out = story, out
        self._factory = renderer_factory
        self._renderer: Renderer | None = None
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._jobs: list[Job] = []
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self.notes: list[str] = []
        self.stamp = 0
        self._thread = threading.Thread(target=self._run, name="storyboard-render", daemon=True)
        self._thread.start()

    # -- the page's side ------------------------------------------------------------------------
    def submit(self, kind: JobKind, panel: str | None = None, count: int = 0) -> Job:
        """Queue a request, or return the equal one already waiting or running."""
        if panel is not None:
            load_story(self.story).story.panel(panel)  # unknown id: a sentence, before queueing
        with self._lock:
            for job in self._jobs:
                if job.active and job.same_request(kind, panel, count):
                    return job
            job = Job(next(self._ids), kind, panel, self._seeds(kind, panel, count))
            job.total = len(job.seeds) or (1 if panel else 0)
            self._jobs.append(job)
            self._changed()
        self._queue.put(job)
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def latest_for(self, panel: str, kind: JobKind | None = None) -> Job | None:
        """The newest job for the panel, a build (which covers every panel) included; with `kind`,
        the newest job of that kind for the panel."""
        with self._lock:
            for job in reversed(self._jobs):
                if kind is not None:
                    if job.kind == kind and job.panel == panel:
                        return job
                elif job.panel == panel or job.kind == "build":
                    return job
        return None

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once nothing is queued or running (False if that takes longer than `timeout`)."""
        with self._cond:
            return self._cond.wait_for(lambda: not any(j.active for j in self._jobs), timeout)

    # -- the worker's side ----------------------------------------------------------------------
    def _seeds(self, kind: JobKind, panel: str | None, count: int) -> tuple[int, ...]:
        if kind == "reroll":
            return (self._rng.randrange(MAX_RANDOM_SEED),)
        if kind == "candidates" and panel is not None:
            # As `storyboard render -k`: the panel's current seed first, to compare against.
            current = next(j.seed for j in plan(load_story(self.story)) if j.panel_id == panel)
            return (current, *(self._rng.randrange(MAX_RANDOM_SEED) for _ in range(count - 1)))
        return ()

    def _changed(self) -> None:
        """Called with the lock held."""
        self.stamp += 1
        self._cond.notify_all()
        finished = [j for j in self._jobs if not j.active]
        for old in finished[:-KEEP_FINISHED]:
            self._jobs.remove(old)

    def _update(self, job: Job, **changes: object) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(job, k, v)
            self._changed()

    def _note(self, message: str) -> None:
        with self._lock:
            if message not in self.notes:
                self.notes.append(message)
            self._changed()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            self._update(job, state="running")
            try:
                self._do(job)
            except StoryboardError as exc:
                self._update(job, state="failed", error=str(exc))
            except Exception as exc:  # a bug: keep the worker alive and show it, with its type
                self._update(job, state="failed", error=f"{type(exc).__name__}: {exc}")
            else:
                self._update(job, state="done", done=job.total)

    def _progress(self, job: Job) -> Callable[[str, int, int], None]:
        return lambda _pid, done, total: self._update(job, done=done, total=total)

    def _do(self, job: Job) -> None:
        if self._renderer is None:
            self._renderer = self._factory(self._note)
        r, story, out = self._renderer, self.story, self.out
        if job.kind == "layout":
            layout(story, out, draft=review_ops.is_draft(r))
            return
        if job.kind == "build":
            review_ops.render_panels(story, out, r, progress=self._progress(job))
        elif job.kind == "render" and job.panel:
            review_ops.render_panels(story, out, r, only=[job.panel], progress=self._progress(job))
        elif job.kind == "reroll" and job.panel:
            seeds = {job.panel: job.seeds[0]}
            review_ops.render_panels(
                story, out, r, only=[job.panel], seeds=seeds, progress=self._progress(job)
            )
        elif job.kind == "candidates" and job.panel:

            def each(seed: int, _path: Path) -> None:
                self._update(job, finished=[*job.finished, seed], done=len(job.finished) + 1)

            review_ops.render_candidate_batch(story, out, r, job.panel, job.seeds, on_each=each)
