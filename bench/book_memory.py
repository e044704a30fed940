"""Peak memory and speed of a draft build as the book grows (issue 22: books of any length).

For each size (pages of 10 panels each) a story is written into a fresh project folder and built as a
user builds it: `storyboard build book.yaml --draft` in a subprocess, from the project folder, with a
relative path. Measured per build:

- peak memory: the most the build's process tree held at once (the proportional set size of the
  build and its children, pdftoppm included), polled from /proc every 20 ms; and the peak RSS of the
  build process itself (ru_maxrss from wait4), which a poll cannot miss.
- panels per second: of the render phase (from the first to the last progress line) and of the whole
  build (start to exit, layout of the PDF, CBZ and page PNGs included), plus the layout's seconds.

    python bench/book_memory.py                      # 10, 100 and 1,000 pages
    python bench/book_memory.py --pages 10 100 --json out.json
    python bench/book_memory.py --render-only --pages 1000    # render rate by tenth of the book

Prints a table and writes JSON (default: bench/book_memory.json is NOT written; give --json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PANELS_PER_PAGE = 10
# Ten panels a page: no shipped template has ten, so the book's project brings its own (a user's
# project may add templates in templates/layouts/).
TEN_GRID = (
    "name: ten-grid\ndescription: Five tiers of two panels.\ntiers:\n"
    + "  - {height: 1, columns: [1, 1]}\n" * 5
)
_PROGRESS = re.compile(r"rendered \S+ \((\d+)/(\d+)\)")


def book_yaml(pages: int, panels_per_page: int = PANELS_PER_PAGE, layout: str | None = None) -> str:
    """A story of `pages` pages, `panels_per_page` panels each, with dialogue and captions as a real
    script has (lettering is part of layout's cost); draft panels need no model files. `layout`: a
    flow mapping for the story's layout block (default: the defaults, A4 at 300 dpi, every format)."""
    lines = [
        f"title: Long Book {pages}",
        "author: bench",
        "characters:",
        "  ann: {name: Ann, lora: ann_v1, triggers: [ann]}",
        "  bo: {name: Bo, lora: bo_v1, triggers: [bo]}",
        "render: {width: 384, height: 256}",
        *([f"layout: {layout}"] if layout else []),
        "pages:",
    ]
    for p in range(1, pages + 1):
        lines.append("  - layout: ten-grid" if panels_per_page == 10 else "  -")
        lines.append("    panels:")
        for i in range(panels_per_page):
            pid = f"p{p}-{i + 1}"
            who = ("ann", "bo")[(p + i) % 2]
            lines.append(f"      - id: {pid}")
            lines.append(f"        scene: scene {p}.{i + 1}, street, day")
            lines.append(f"        characters: [{who}]")
            if i % 3 == 0:
                lines.append(f"        dialogue: [{{speaker: {who}, text: 'Line {p}.{i + 1}, said aloud.'}}]")
            elif i % 3 == 1:
                lines.append(f"        caption: Page {p}, panel {i + 1}.")
    return "\n".join(lines) + "\n"


def write_project(
    root: Path, pages: int, panels_per_page: int = PANELS_PER_PAGE, layout: str | None = None
) -> Path:
    """root/book.yaml plus the ten-panel template in root/templates/layouts/; returns the story."""
    (root / "templates" / "layouts").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "layouts" / "ten-grid.yaml").write_text(TEN_GRID)
    story = root / "book.yaml"
    story.write_text(book_yaml(pages, panels_per_page, layout))
    return story


def _memory(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between their sharers), or RSS where the
    kernel has no smaps_rollup. RSS would count the build twice for the instant a pdftoppm child is
    forked from it and still shares its pages."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _tree_memory(pid: int) -> int:
    """Memory of pid and every descendant (children found through /proc/*/stat's ppid)."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    return sum(_memory(p) for p in tree)


@dataclass
class Run:
    pages: int
    panels: int
    exit_code: int
    seconds: float
    render_seconds: float
    layout_seconds: float
    render_panels_per_s: float
    build_panels_per_s: float
    peak_tree_pss_mib: float
    maxrss_mib: float
    load_before: float
    load_after: float


def run_build(project: Path, storyboard: list[str], pages: int) -> Run:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CI="1")
    panels = pages * PANELS_PER_PAGE
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*storyboard, "build", "book.yaml", "--draft"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    marks: list[tuple[float, int]] = []  # (time, panels done) of each progress line
    tail: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = _PROGRESS.search(line)
            if m:
                marks.append((time.monotonic(), int(m.group(1))))
            tail.append(line)
            del tail[:-20]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak = 0
    status = None
    while status is None:
        peak = max(peak, _tree_memory(proc.pid))
        done_pid, st, usage = os.wait4(proc.pid, os.WNOHANG)
        if done_pid:
            status = (st, usage)
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    reader.join()
    st, usage = status
    proc.returncode = os.waitstatus_to_exitcode(st)
    if proc.returncode != 0:
        sys.stderr.write("".join(tail))
    # Render phase: from the first progress line to the last, so import and planning time (the same
    # at every size but for planning) stay out of the panels-per-second figure; layout follows it.
    (t_first, n_first), (t_last, n_last) = (marks[0], marks[-1]) if marks else ((t0, 0), (t0, 0))
    render_s = t_last - t_first
    return Run(
        pages=pages,
        panels=panels,
        exit_code=proc.returncode,
        seconds=round(elapsed, 2),
        render_seconds=round(t_last - t0, 2),
        layout_seconds=round(t0 + elapsed - t_last, 2),
        render_panels_per_s=round((n_last - n_first) / render_s, 1) if render_s > 0 else 0.0,
        build_panels_per_s=round(panels / elapsed, 2),
        peak_tree_pss_mib=round(peak / 2**20, 1),
        maxrss_mib=round(usage.ru_maxrss / 1024, 1),  # kB on Linux
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (from /proc/PID/stat), 0 once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def render_rates(
    project: Path, storyboard: list[str], panels: int, blocks: int = 10
) -> tuple[list[float], list[float]]:
    """Panels per second of each tenth of a draft book's render phase, in one build, with no memory
    polling beside it (reading a big process's PSS every 20 ms costs CPU that grows with the process):
    a rate that falls from block to block is work per panel that grows with the book. The build is
    stopped with SIGTERM once the last panel is rendered (it keeps them all), skipping the layout.

    Returns the rates by wall clock and by the build's own CPU time: on a shared machine the wall
    clock rate moves with the load, panels per CPU-second only with the work a panel costs."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CI="1")
    proc = subprocess.Popen(
        [*storyboard, "build", "book.yaml", "--draft"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    marks: list[tuple[float, int]] = []  # (time, panels done) of each progress line
    cpu_marks: list[tuple[float, int]] = []  # (CPU seconds, panels done)
    for line in proc.stderr:
        m = _PROGRESS.search(line)
        if m:
            marks.append((time.monotonic(), int(m.group(1))))
            cpu_marks.append((_cpu_seconds(proc.pid), int(m.group(1))))
            if marks[-1][1] >= panels:
                proc.terminate()
                break
    proc.wait()

    def by_block(clock: list[tuple[float, int]]) -> list[float]:
        def at(n: int) -> tuple[float, int]:  # the first progress line with at least n panels done
            return next(mk for mk in clock if mk[1] >= n)

        rates = []
        for b in range(blocks):
            if not clock or clock[-1][1] < (b + 1) * panels // blocks:
                break
            (t0, n0), (t1, n1) = at(max(b * panels // blocks, clock[0][1])), at((b + 1) * panels // blocks)
            if t1 > t0:  # the first block is measured from the first progress line
                rates.append(round((n1 - n0) / (t1 - t0), 1))
        return rates

    return by_block(marks), by_block(cpu_marks)


def machine() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "mem_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep", type=Path, help="build in this folder (kept) instead of a temporary one")
    ap.add_argument(
        "--storyboard", default=None, help="the command to run (default: this Python's -m storyboard.cli)"
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="per pages: the render rate of each tenth of the book (no memory figures, no layout)",
    )
    args = ap.parse_args()
    storyboard = args.storyboard.split() if args.storyboard else [sys.executable, "-m", "storyboard.cli"]
    if args.render_only:
        with tempfile.TemporaryDirectory(prefix="book-rate-") as tmp:
            for pages in args.pages:
                project = Path(tmp) / f"book-{pages}"
                write_project(project, pages)
                wall, cpu = render_rates(project, storyboard, pages * PANELS_PER_PAGE)
                print(f"{pages:>6} pages, panels/s by tenth of the render: {wall}", flush=True)
                print(f"{pages:>6} pages, panels per CPU-second by tenth:   {cpu}", flush=True)
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="book-memory-") as tmp:
        base = args.keep.resolve() if args.keep else Path(tmp)
        for pages in args.pages:
            project = base / f"book-{pages}"
            write_project(project, pages)
            run = run_build(project, storyboard, pages)
            runs.append(run)
            print(json.dumps(asdict(run)), file=sys.stderr, flush=True)
    header = f"{'pages':>6} {'panels':>7} {'tree MiB':>9} {'maxrss MiB':>10} {'render p/s':>10} "
    header += f"{'build p/s':>9} {'layout s':>9} {'total s':>8} {'load':>10}"
    print(header)
    for r in runs:
        print(
            f"{r.pages:>6} {r.panels:>7} {r.peak_tree_pss_mib:>9.0f} {r.maxrss_mib:>10.0f} "
            f"{r.render_panels_per_s:>10.1f} {r.build_panels_per_s:>9.2f} {r.layout_seconds:>9.1f} "
            f"{r.seconds:>8.1f} {r.load_before:>4.2f}-{r.load_after:<4.2f}"
            + ("" if r.exit_code == 0 else f"  exit {r.exit_code}")
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "runs": [asdict(r) for r in runs]}, indent=2))
    if any(r.exit_code for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
