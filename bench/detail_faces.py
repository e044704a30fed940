"""Time the face detailer's re-draws: faces batched (one sampling loop, each face's own LoRA added per
sample) against one at a time (each face's LoRA set merged), on the same faces of one picture.

Workload: bench/render_panel.py's SD1.5-size random checkpoint, 448x640, DPM++ 2S a Karras, 20 steps
at denoising 0.4 (9 steps), "only masked" with padding 32; FACES faces (default 4, two rows of two,
regions apart) alternating the two character LoRAs (rank 32), the style LoRA (rank 64, 0.6) on every
face; fp16 on CUDA.

    python bench/detail_faces.py                # cuda if available
    python bench/detail_faces.py --tiny         # the tiny test model at 128x128, 2 faces (CPU smoke)

Prints JSON lines: {"event": "setup"}, then {"event": "run", "mode": "one_at_a_time" | "batched",
"faces", "seconds", "per_face"} per repeat (the first of each mode is a warm-up, not printed), then
{"event": "compare", "max_diff", "mean_diff"}: batched vs one at a time, in 0-255 levels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from render_panel import NEGATIVE, PROMPT, write_full_model  # noqa: E402

from storyboard.jobs import PanelJob  # noqa: E402
from storyboard.prompt.extra_networks import LoraUse  # noqa: E402
from storyboard.render.detail import face_batches, face_job, face_region  # noqa: E402
from storyboard.render.engine import DiffusersRenderer, default_device  # noqa: E402
from storyboard.story.detail import Detail, DetailJob, DetailTarget  # noqa: E402
from storyboard.story.schema import RenderSettings  # noqa: E402


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def boxes(n: int, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """n face boxes of w/7 pixels, two per row, spread so their padded regions stay apart."""
    side = w // 7
    out = []
    for i in range(n):
        cx = w // 4 if i % 2 == 0 else 3 * w // 4
        cy = h // 4 + (i // 2) * (h // 2)
        out.append((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random model at 128x128 (CPU smoke run)")
    ap.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    ap.add_argument("--faces", type=int, default=None, help="faces in the picture (default 4; tiny 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per mode")
    args = ap.parse_args()
    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny ops gain nothing from threads on a busy CPU
    with tempfile.TemporaryDirectory(prefix="storyboard-bench-") as tmp:
        root = Path(tmp) / "webui"
        t0 = time.perf_counter()
        if args.tiny:
            from storyboard.models.tiny import write_tiny_model

            write_tiny_model(root)
            model, chars, style = "tiny-sd", ("tiny_character_v1", "tiny-style"), None
            width, height, steps, faces = 128, 128, 4, args.faces or 2
        else:
            model, _ = write_full_model(root, device)
            chars, style = ("character", "character2"), "style"
            width, height, steps, faces = 448, 640, 20, args.faces or 4
        emit(
            event="setup",
            device=str(device),
            tiny=args.tiny,
            write_model_s=round(time.perf_counter() - t0, 3),
        )
        settings = RenderSettings(
            model=model, sampler="DPM++ 2S a Karras", steps=steps, cfg_scale=7, width=width, height=height,
            clip_skip=2, webui_root=root,
        )  # fmt: skip
        shared = (LoraUse(style, 0.6, 0.6),) if style else ()
        targets = []
        for i in range(faces):
            name = chars[i % 2]
            tags = f" <lora:{name}:1>" + (f" <lora:{style}:0.6>" if style else "")
            loras = (LoraUse(name, 1.0, 1.0), *shared)
            targets.append(DetailTarget(f"c{i}", PROMPT + f", face {i}" + tags, loras))  # type: ignore[arg-type]
        # The tiny picture is small: a padding of 8 keeps its two faces' regions apart.
        pad = 8 if args.tiny else 32
        detail = DetailJob(Detail(denoising_strength=0.4, inpaint_only_masked_padding=pad), tuple(targets))
        panel = PanelJob("p", 1, 0, PROMPT, NEGATIVE, (), 3447412781, settings, detail=detail)  # type: ignore[arg-type]
        rng = np.random.default_rng(0)
        picture = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        jobs = [
            face_job(panel, t, b, (width, height), i)
            for i, (t, b) in enumerate(zip(targets, boxes(faces, width, height), strict=True))
        ]
        regions = [face_region(j, (width, height)) for j in jobs]
        emit(event="regions", regions=regions, batches=face_batches(regions, faces))
        if face_batches(regions, faces) != [list(range(faces))]:
            raise SystemExit("the faces' regions meet: they would not batch")
        renderer = DiffusersRenderer(Path(tmp), quiet=True, device=device, batch_size=faces)

        def one_at_a_time() -> Image.Image:
            current = picture
            for j in jobs:
                current = renderer.redraw(j, current)
            return current

        def batched() -> Image.Image:
            current = picture.copy()
            for out, box in zip(renderer.redraw_batch(jobs, picture), regions, strict=True):
                assert box is not None
                current.paste(out.crop(box), box[:2])
            return current

        results = {}
        for mode, fn in (("one_at_a_time", one_at_a_time), ("batched", batched)):
            fn()  # warm-up: loads the model, prepares the LoRA sets
            for _ in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t = time.perf_counter()
                results[mode] = fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - t
                emit(
                    event="run",
                    mode=mode,
                    faces=faces,
                    seconds=round(seconds, 3),
                    per_face=round(seconds / faces, 3),
                )
        diff = np.abs(np.asarray(results["batched"]).astype(int) - np.asarray(results["one_at_a_time"]))
        emit(event="compare", max_diff=int(diff.max()), mean_diff=round(float(diff.mean()), 4))


if __name__ == "__main__":
    main()
