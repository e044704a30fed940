"""Cold start for bench/speed.py: a new process runs the CLI's build of a one-panel story.

    python bench/cold_start.py STORY OUT RESULT.json     # the child: what bench/speed.py starts

The parent times it from start to exit (the first panel PNG is written by then) and reads the
child's peak RSS from the kernel (os.wait4); the child adds its peak CUDA memory. Running apart is
also what makes the low-memory figure honest on a CPU: a process's peak RSS only grows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def cold_start(tmp: Path, story_text: str, low_memory: bool) -> dict[str, Any]:
    """A new process runs the CLI's build of a one-panel story; seconds to its exit, its peak memory."""
    tag = "low" if low_memory else "cold"
    story = tmp / f"speed-{tag}.yaml"
    story.write_text(story_text)
    out, res = tmp / f"out-{tag}", tmp / f"{tag}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if not low_memory:
        env["STORYBOARD_CACHE_DIR"] = str(tmp / "empty-hash-cache")  # a first run hashes the files
    cmd = [sys.executable, str(Path(__file__).resolve()), str(story), str(out), str(res)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not list(out.glob("*/panels/p01.png")):
        raise SystemExit(f"the {tag} child failed (exit {proc.returncode})")
    child = json.loads(res.read_text())
    peak = child["cuda_peak_gib"] if child["cuda_peak_gib"] is not None else usage.ru_maxrss / 2**20
    kind = "cuda_allocated" if child["cuda_peak_gib"] is not None else "cpu_rss_process"
    return {
        "seconds": seconds,
        "peak_mem_gib": peak,
        "mem_kind": kind,
        "hash_cache": "warm" if low_memory else "empty",
    }


def child(story: str, out: str, res: str) -> None:
    """The cold-start process: exactly the CLI's build (imports included), then its GPU peak."""
    from storyboard import cli

    sys.argv = ["storyboard", "build", story, "--out", out, "--require-models"]
    cli.main()
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    Path(res).write_text(json.dumps({"cuda_peak_gib": peak}))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    child(*sys.argv[1:4])
