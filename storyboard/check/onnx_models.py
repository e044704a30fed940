"""Opening ONNX models with onnxruntime, and checking they are the models we think they are.

A wrong file in a models folder should fail with its input/output names, not with a shape error deep
inside a session run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from storyboard.errors import ModelError

# onnxruntime's messages can run to kilobytes (a whole graph node); the start says what went wrong.
MAX_REASON = 300


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
        raise ModelError(
            f"{path}: not a usable ONNX model ({_reason(exc)}).",
            hint="the file may be truncated or another kind of file; download it again",
        ) from exc
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


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."


def probe(
    session: Any, path: Path, feeds: Mapping[str, NDArray[Any]], outputs: list[str]
) -> list[NDArray[np.float32]]:
    """Run a freshly opened model once on blank inputs of the shapes the check will feed it.

    Names and declared shapes can be right while the graph is not (a batch fixed at 1, a size baked into
    a reshape, a broken node): such a file fails here, named, before any panel is read, not with an
    onnxruntime error in the middle of a check. Non-finite output is refused the same way.
    """
    shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in feeds.items())
    try:
        out = session.run(outputs, dict(feeds))
    except Exception as exc:  # onnxruntime's InvalidArgument/Fail/RuntimeException
        raise ModelError(f"{path}: the model fails on a blank input ({shapes}): {_reason(exc)}.") from exc
    arrays = [np.asarray(o, dtype=np.float32) for o in out]
    if not all(np.isfinite(a).all() for a in arrays):
        raise ModelError(f"{path}: the model gives NaN or infinite values on a blank input ({shapes}).")
    return arrays


def expect_shape(path: Path, what: str, have: tuple[int, ...], want: tuple[int | None, ...]) -> None:
    """Refuse an output whose shape is not `want` (None: any size)."""
    if len(have) != len(want) or any(w is not None and h != w for h, w in zip(have, want, strict=False)):
        shown = "x".join("N" if w is None else str(w) for w in want)
        raise ModelError(
            f"{path}: {what} is {'x'.join(map(str, have)) or 'a scalar'}, expected {shown}; "
            "is it the right model?"
        )
