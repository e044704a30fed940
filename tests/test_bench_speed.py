"""bench/speed.py --tiny runs on a CPU and writes every figure (speed itself is never asserted).

The default workloads include SDXL (issue 18): on the tiny SDXL model it adds a few seconds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

ROW_FIGURES = ("seconds", "s_per_panel", "tflop", "tflops_per_s", "peak_mem_gib", "unet_calls")


def positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def figures(tree: Any) -> list[tuple[str, Any]]:
    """Every number in the JSON, with its path."""
    if isinstance(tree, dict | list):
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        return [(f"{k}.{p}".rstrip("."), v) for k, sub in items for p, v in figures(sub)]
    return [("", tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def test_tiny_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "speed.py"), "--tiny", "--switches", "3", "--json", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())

    rows = result["storyboard"]
    assert {(r["workload"], r["batch"]) for r in rows} == {
        (w, b) for w in ("A", "B", "SDXL") for b in ("batch_1", "engine")
    }
    for r in rows:
        assert r["panels"] == 12 and r["rendered"] == 12
        assert all(positive(r[k]) for k in ROW_FIGURES), r
    assert [r["panels_per_call"] for r in rows if r["batch"] == "engine"] == [4, 4, 4]
    plain = result["plain_diffusers"]
    assert [(r["workload"], r["loop"], r["batch"]) for r in plain] == [
        ("A", "naive", 1),
        ("A", "fused", 1),
        ("A", "fused", 2),
        ("SDXL", "fused", 1),
        ("SDXL", "fused", 2),
    ]
    # Same workload on both sides: per panel, storyboard's UNet calls equal plain diffusers' (CFG
    # batched, base steps + hires steps), so the s/panel rows compare like with like.
    xl_sb = next(r for r in rows if r["workload"] == "SDXL" and r["batch"] == "batch_1")
    xl_plain = next(r for r in plain if r["workload"] == "SDXL" and r["batch"] == 1)
    assert xl_sb["unet_calls"] / xl_sb["panels"] == xl_plain["unet_calls"]
    assert {r["lora_impl"] for r in plain} <= {"diffusers+peft", "manual-merge"}
    for r in plain:
        assert all(
            positive(r[k]) for k in ("seconds", "s_per_panel", "tflop", "tflops_per_s", "unet_calls")
        ), r
    assert result["candidates"]["k"] == 4 and positive(result["candidates"]["seconds"])
    assert positive(result["lora_switch_ms"])
    for key in ("cold_start", "low_memory"):
        assert positive(result[key]["seconds"]) and positive(result[key]["peak_mem_gib"])
    assert positive(result["flops"]["vae_decode_tflop"])
    assert result["machine"]["torch"] and result["tiny"] is True
    # Every number anywhere in the file is a positive figure (no zero or NaN placeholders).
    bad = [(p, v) for p, v in figures(result) if not positive(v)]
    assert not bad, bad
