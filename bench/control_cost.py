"""Per-panel cost of one ControlNet unit against none, on the tiny model (or any story panel size).

    python bench/control_cost.py [--device cpu|cuda] [--repeat 5] [--size 64]

Writes the tiny model to a temporary folder, renders the same panel (DPM++ 2M, 8 steps, no hires)
without a unit and with one (module none, weight 1), each `--repeat` times after one warm-up, and
prints the median seconds per panel and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from storyboard.render.engine import DiffusersRenderer
from storyboard.story.load import load_story
from storyboard.story.plan import plan

STORY = """\
title: Cost
render: {{model: tiny-sd, sampler: DPM++ 2M, steps: 8, width: {s}, height: {s}, webui_root: {root}}}
pages:
  - panels: [{{id: none, seed: 1, scene: 1girl}}]
  - panels: [{{id: one, seed: 1, scene: 1girl, control: [{{image: pose.png, model: tiny-control}}]}}]
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    from storyboard.models.tiny import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = write_tiny_model(root / "webui", loras=False)
        im = Image.new("RGB", (args.size, args.size))
        mid = args.size // 2
        ImageDraw.Draw(im).line([(mid, 4), (mid, args.size - 4)], fill=(255, 0, 0), width=3)
        im.save(root / "pose.png")
        (root / "s.yaml").write_text(STORY.format(s=args.size, root=tiny.root))
        jobs = {j.panel_id: j for j in plan(load_story(root / "s.yaml"))}
        r = DiffusersRenderer(root, quiet=True, device=args.device)
        times: dict[str, list[float]] = {"none": [], "one": []}
        for k in range(args.repeat + 1):
            for pid in ("none", "one"):
                t0 = time.perf_counter()
                list(r.render([jobs[pid]]))
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if k:
                    times[pid].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"device {args.device}, {args.size}x{args.size}, 8 steps, median of {args.repeat}:")
        print(f"  no ControlNet: {med['none'] * 1000:.1f} ms/panel")
        print(f"  one unit:      {med['one'] * 1000:.1f} ms/panel  (x{med['one'] / med['none']:.2f})")


if __name__ == "__main__":
    main()
