"""Opening ONNX models with onnxruntime, and checking they are the models we think they are.

A wrong file in a models folder should fail with its input/output names, not with a shape error deep
inside a session run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from storyboard.errors import ModelError


def providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for a device name: the CUDA provider where installed."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelError(
            "onnxruntime here has no CUDA provider.", hint="pip install onnxruntime-gpu, or use --device cpu"
        )
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(
    path: Path,
    *,
    inputs: Iterable[str],
    outputs: Iterable[str],
    device: str = "auto",
    threads: int | None = None,
) -> Any:
    """An InferenceSession for `path`, refusing a model whose input/output names are not the expected."""
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"Model file not found: {path}")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers(device))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"{path}: not a usable ONNX model ({exc}).") from exc
    have_in = {i.name for i in session.get_inputs()}
    have_out = {o.name for o in session.get_outputs()}
    want_in, want_out = set(inputs), set(outputs)
    if not want_in <= have_in or not want_out <= have_out:
        raise ModelError(
            f"{path}: expected inputs {sorted(want_in)} and outputs {sorted(want_out)}, "
            f"the file has inputs {sorted(have_in)} and outputs {sorted(have_out)}; is it the right model?"
        )
    return session


def metadata(session: Any) -> dict[str, str]:
    """The model's custom metadata (ultralytics exports put `names` and `imgsz` there)."""
    return dict(session.get_modelmeta().custom_metadata_map)
