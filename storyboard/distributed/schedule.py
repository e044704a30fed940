"""Which actor renders what next: pure bookkeeping, so it is tested without Ray.

Jobs are grouped as the local engine groups them (`render/batching.group_jobs`: one checkpoint, one
LoRA set, one set of sampler settings per group). A group is cut into chunks so every actor has work
(one chunk is one call to an actor, rendered as the local engine would render those jobs). An idle
actor takes the first chunk whose LoRA set it already has applied, else one of its loaded checkpoint,
else the first in line: switching LoRAs is cheap, loading a checkpoint is the dear part.

A chunk that fails (its actor died, or it raised) is put back job by job, so the next failure names
one panel; a job that has failed `max_attempts` times is given up and reported.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from storyboard.jobs import PanelJob
from storyboard.render.batching import MAX_BATCH, group_jobs, model_key


@dataclass(frozen=True)
class Chunk:
    jobs: tuple[PanelJob, ...]
    model: Hashable  # the checkpoint (and VAE) the jobs need
    loras: Hashable  # the LoRA set applied for them

    @property
    def panel_ids(self) -> list[str]:
        return [j.panel_id for j in self.jobs]


def affinity(job: PanelJob) -> tuple[Hashable, Hashable]:
    return model_key(job), tuple((u.name, u.te, u.unet) for u in job.lora_set)


def make_chunks(jobs: Sequence[PanelJob], actors: int, max_size: int = MAX_BATCH) -> list[Chunk]:
    """Each group cut into about equal chunks, as many as there are actors (no chunk over max_size)."""
    chunks = []
    for group in group_jobs(jobs):
        pieces = max(1, min(actors, len(group)), math.ceil(len(group) / max_size))
        size = math.ceil(len(group) / pieces)
        for i in range(0, len(group), size):
            part = tuple(group[i : i + size])
            chunks.append(Chunk(part, *affinity(part[0])))
    return chunks


@dataclass
class Failure:
    panel_id: str
    reason: str


@dataclass
class Scheduler:
    chunks: deque[Chunk]
    max_attempts: int = 2
    attempts: dict[str, int] = field(default_factory=dict)  # by job spec digest
    given_up: list[Failure] = field(default_factory=list)

    @classmethod
    def of(cls, jobs: Sequence[PanelJob], actors: int, max_attempts: int = 2) -> Scheduler:
        return cls(deque(make_chunks(jobs, actors)), max_attempts)

    def __bool__(self) -> bool:
        return bool(self.chunks)

    def next_for(self, model: Hashable | None, loras: Hashable | None) -> Chunk | None:
        """The chunk an actor holding `model` with `loras` applied should take next."""
        if not self.chunks:
            return None
        same_loras = [c for c in self.chunks if c.model == model and c.loras == loras]
        same_model = [c for c in self.chunks if c.model == model]
        for found in (same_loras, same_model):
            if found:
                self.chunks.remove(found[0])
                return found[0]
        return self.chunks.popleft()

    def failed(self, jobs: Sequence[PanelJob], reason: str) -> None:
        """Count a failed try per job; those with tries left go back in front, one job per chunk."""
        retry = []
        for job in jobs:
            key = job.spec_digest()
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] >= self.max_attempts:
                self.given_up.append(Failure(job.panel_id, reason))
            else:
                retry.append(Chunk((job,), *affinity(job)))
        self.chunks.extendleft(reversed(retry))
