"""Per-actor counts for the end-of-build line: panels, busy seconds, throughput."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class WorkerStats:
    name: str
    gpu: str
    panels: int = 0
    busy: float = 0.0  # seconds between sending a chunk and its result arriving

    def add(self, panels: int, seconds: float) -> None:
        self.panels += panels
        self.busy += seconds


def summary(stats: Sequence[WorkerStats], wall: float) -> str:
    """One line per actor, then the cluster's total: what `--ray` prints when rendering ends."""
    total = sum(s.panels for s in stats)
    lines = [f"ray: {total} panel(s) on {len(stats)} actor(s) in {wall:.1f}s"]
    for s in stats:
        rate = f"{s.panels / s.busy * 60:.1f} panels/min" if s.busy > 0 else "idle"
        lines.append(f"  {s.name} [{s.gpu}]: {s.panels} panel(s), busy {s.busy:.1f}s, {rate}")
    return "\n".join(lines)
