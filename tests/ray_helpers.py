"""Renderers the Ray tests run inside actors (imported there by name: tests/ is on the workers' path).

`MarkingRenderer` renders as DiffusersRenderer does and leaves one marker file per finished panel, so a
test counts renders across processes, including renders in an actor that was killed afterwards.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from storyboard.jobs import PanelJob, RenderedPanel
from storyboard.render.engine import DiffusersRenderer


class MarkingRenderer(DiffusersRenderer):
    def __init__(self, base_dir: Path, marks: str, *, kill_token: str | None = None, fail: str = "") -> None:
        super().__init__(base_dir, quiet=True, device="cpu")
        self.marks = Path(marks)
        self.kill_token = kill_token
        self.fail = fail

    def render(self, jobs: Sequence[PanelJob]) -> Iterator[RenderedPanel]:
        for job in jobs:
            if job.panel_id == self.fail:
                (self.marks / f"tried-{job.panel_id}.{uuid.uuid4().hex}").touch()
                raise RuntimeError(f"cannot render {job.panel_id} (test)")
            for panel in super().render([job]):
                (self.marks / f"{panel.job.panel_id}.{os.getpid()}.{uuid.uuid4().hex}").touch()
                yield panel
            # Resumed: the caller has stored that panel. The first actor here takes the token and dies
            # the way an out-of-memory kill ends it, before starting its next panel.
            if self.kill_token and _take(self.kill_token):
                os.kill(os.getpid(), signal.SIGKILL)


def _take(token: str) -> bool:
    try:
        os.rename(token, token + ".taken")  # atomic: exactly one actor gets it
    except FileNotFoundError:
        return False
    return True


def marks_by_panel(marks: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in marks.iterdir():
        if not f.name.startswith("tried-"):
            pid = f.name.split(".")[0]
            counts[pid] = counts.get(pid, 0) + 1
    return counts
