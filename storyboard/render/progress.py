"""Render progress on stderr: one bar for the build's panels, one for the current batch's steps.

Off when asked to be quiet, under CI, or when stderr is not a terminal, so logs and tests stay clean.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any


def progress_enabled(quiet: bool) -> bool:
    return not quiet and not os.environ.get("CI") and sys.stderr.isatty()


class RenderProgress:
    """``with RenderProgress(total_panels, enabled) as p: p.start_pass(...); p.step(); p.panels_done(n)``."""

    def __init__(self, total_panels: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total_panels
        self._progress: Any = None
        self._panels: Any = None
        self._steps: Any = None

    def __enter__(self) -> RenderProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._panels = self._progress.add_task("panels", total=self.total)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None

    def start_pass(self, label: str, steps: int) -> None:
        if self._progress is None:
            return
        if self._steps is not None:
            self._progress.remove_task(self._steps)
        self._steps = self._progress.add_task(label, total=steps)

    def step(self) -> None:
        if self._progress is not None and self._steps is not None:
            self._progress.advance(self._steps)

    def panels_done(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._panels, n)
