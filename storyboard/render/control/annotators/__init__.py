"""Preprocessors that need downloaded weights (annotators): their files (``specs.py``, fetched by
`storyboard models fetch control`), models loaded once per file, and each one's run on the image
``preprocess.run_module`` hands over (already at the unit's resolution and padded, as the
extension's ``resize_image_with_pad`` does). They run on the CPU in float32, so a map does not
depend on the GPU a panel renders on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from storyboard.errors import StoryboardError
from storyboard.render.control.annotators.specs import FETCH_COMMAND, SPECS, annotator_files

RUN = tuple(SPECS)  # the weighted preprocessors that run here
_loaded: dict[tuple[str, tuple[Path, ...]], Any] = {}
# The extension's CMU OpenPose preprocessors (body_pose_model.pth etc.) are not run here; DWPose is
# the extension's other pose preprocessor, so the sentence names it rather than substituting it.
CMU_OPENPOSE = ("openpose", "openpose_full", "openpose_face", "openpose_hand")


def check_annotator(module: str) -> tuple[Path, ...]:
    """The annotator's files (found, nothing loaded), or the sentence saying what to do."""
    if module in CMU_OPENPOSE:
        raise StoryboardError(
            f"The preprocessor '{module}' (the CMU OpenPose models) is not run here.",
            hint=f"use module: dw_openpose_full (DWPose, after `{FETCH_COMMAND}`), or preprocess the "
            "image in WebUI, save the map, and use it with module: none",
        )
    if module not in SPECS:
        raise StoryboardError(
            f"The preprocessor '{module}' needs annotator weights that are not run here "
            f"(these are: {', '.join(RUN)}, after `{FETCH_COMMAND}`).",
            hint="use one of those, or preprocess the image in WebUI, save the map, and use it with "
            "module: none",
        )
    return annotator_files(module)


def run_annotator(module: str, img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The (H, W) or (H, W, 3) uint8 map of `img` under the annotator."""
    paths = check_annotator(module)
    key = (module, paths)
    if key not in _loaded:
        _loaded.clear()  # one annotator in memory at a time: they are large and runs are grouped
        _loaded[key] = _module(module).load(paths if module == "dw_openpose_full" else paths[0])
    out: NDArray[np.uint8] = _module(module).run(_loaded[key], img)
    return out


def _module(module: str) -> Any:
    if module == "lineart_anime":
        from storyboard.render.control.annotators import lineart_anime as m
    elif module == "dw_openpose_full":
        from storyboard.render.control.annotators import dwpose as m  # type: ignore[no-redef]
    elif module == "depth_midas":
        from storyboard.render.control.annotators import depth_midas as m  # type: ignore[no-redef]
    else:
        from storyboard.render.control.annotators import depth_anything as m  # type: ignore[no-redef]
    return m
