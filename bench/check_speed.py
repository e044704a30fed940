"""Time `storyboard check` per panel with the stand-in models (storyboard/check/standin.py).

The stand-ins keep the real models' input sizes (detector 640x640, CCIP 384x384), so image decoding,
resizing, pre/post-processing, assignment and scoring cost what they will with the real files; the
networks themselves are trivial here, so add the real models' inference time on top (not measurable
offline: the real CCIP caformer and YOLOv8m cannot be downloaded on this machine).

    python bench/check_speed.py                # 6 panels (the demo story's size), 512x768
    python bench/check_speed.py --panels 24 --runs 3

Prints JSON lines: cold (every panel embedded) and warm (all from the embedding cache) ms per panel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw  # noqa: E402

from storyboard.check.ccip import CcipBackend  # noqa: E402
from storyboard.check.detect import YoloDetector  # noqa: E402
from storyboard.check.run import run_check  # noqa: E402
from storyboard.check.standin import write_all  # noqa: E402
from storyboard.check.types import CharacterSpec, CheckInput, PanelSpec  # noqa: E402


def make_panels(root: Path, n: int, size: tuple[int, int]) -> CheckInput:
    colors = {"aki": (215, 40, 40), "ben": (40, 60, 210)}
    panels = []
    for i in range(n):
        chars = ("aki", "ben") if i % 3 == 2 else (("aki",) if i % 2 == 0 else ("ben",))
        img = Image.new("RGB", size, "white")
        d = ImageDraw.Draw(img)
        w = size[0] // 4
        for k, c in enumerate(chars):
            x0 = (k * 2 + i) % 4 * w
            d.rectangle([x0 + w // 8, size[1] // 8, x0 + 7 * w // 8, size[1] - 4], fill=colors[c])
        path = root / f"p{i}.png"
        img.save(path)
        panels.append(PanelSpec(panel_id=f"p{i}", image=path, characters=chars))
    chars_spec = {c: CharacterSpec(id=c, name=c) for c in colors}
    return CheckInput(title="bench", characters=chars_spec, panels=tuple(panels), out_dir=root / "check")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--panels", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        m = write_all(root / "models")
        backend = CcipBackend.open(m["ccip"], device=args.device)
        det = YoloDetector.open(m["detector"], device=args.device)
        inp = make_panels(root, args.panels, (args.width, args.height))
        cold, warm = [], []
        for r in range(args.runs):
            cache = root / f"cache{r}"
            t0 = time.perf_counter()
            run_check(inp, backend, det, cache)
            cold.append((time.perf_counter() - t0) * 1000 / args.panels)
            t0 = time.perf_counter()
            run_check(inp, backend, det, cache)
            warm.append((time.perf_counter() - t0) * 1000 / args.panels)
        for name, xs in (("cold", cold), ("warm", warm)):
            print(
                json.dumps(
                    {
                        "run": name,
                        "panels": args.panels,
                        "size": [args.width, args.height],
                        "device": args.device,
                        "ms_per_panel_median": round(statistics.median(xs), 2),
                        "ms_per_panel_all": [round(x, 2) for x in xs],
                        "models": "stand-in",
                    }
                )
            )


if __name__ == "__main__":
    main()
