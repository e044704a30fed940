"""The annotators' pinned files: which hub repo and revision each preprocessor reads, where its files
are here, and `storyboard models fetch control`, which puts them there.

    lineart_anime   lllyasviel/Annotators netG.pth, the file the extension downloads for it. The
                    revision was read off a public model catalogue that links the repo's README at
                    that commit (its file list names netG.pth). The .pth is a pickle: the fetch
                    unpickles it once with ``torch.load(weights_only=True)`` (tensors only, no code)
                    and writes ``netG.safetensors`` beside the HF cache; a render reads only that.
    depth_anything  LiheYoung/depth-anything-large-hf (config.json, model.safetensors): the
                    transformers port of the checkpoint the extension's depth_anything loads
                    (Depth Anything v1, ViT-L/14), safetensors already; the revision is the one a
                    public benchmark write-up records for its run.
    dw_openpose_full yzd-v/DWPose yolox_l.onnx (person detector) and dw-ll_ucoco_384.onnx (RTMPose
                    whole-body), the two files the extension downloads for it; ONNX, no pickle. The
                    revision is the one a public model-pin table lists for both files (and that
                    other projects pin yzd-v/DWPose at).
    depth_midas     Intel/dpt-hybrid-midas (config.json, pytorch_model.bin): the transformers port of
                    dpt_hybrid-midas-501f0c75.pt, the checkpoint the extension's depth_midas loads.
                    The revision is the one a public project's weight table pins (with the .bin's
                    sha256 b6c4d44f...); that table lists no safetensors at it, so the .bin is
                    converted like netG.pth, to ``model.safetensors`` with config.json copied beside.

A render never downloads: a missing file is a sentence naming the preprocessor, the files and the
command, raised while files are checked, before anything loads.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from storyboard.errors import ModelError
from storyboard.models.hub import ModelSpec, fetch, resolve

FETCH_COMMAND = "storyboard models fetch control"
LINEART_ANIME = ModelSpec(
    key="lineart_anime",
    repo="lllyasviel/Annotators",
    revision="982e7edaec38759d914a963c48c4726685de7d96",
    files=("netG.pth",),
)
DEPTH_ANYTHING = ModelSpec(
    key="depth_anything",
    repo="LiheYoung/depth-anything-large-hf",
    revision="27ccb0920352c0c37b3a96441873c8d37bd52fb6",
    files=("config.json", "model.safetensors"),
)
DWPOSE = ModelSpec(
    key="dw_openpose_full",
    repo="yzd-v/DWPose",
    revision="1a7144101628d69ee7a3768d1ee3a094070dc388",
    files=("yolox_l.onnx", "dw-ll_ucoco_384.onnx"),
)
DEPTH_MIDAS = ModelSpec(
    key="depth_midas",
    repo="Intel/dpt-hybrid-midas",
    revision="11eaf7a1cf4bd70740697dbc216f98980c0aeb03",
    files=("config.json", "pytorch_model.bin"),
)
SPECS = {s.key: s for s in (LINEART_ANIME, DEPTH_ANYTHING, DWPOSE, DEPTH_MIDAS)}
# The annotators whose weights are a pickle (each spec's last file): the name of the safetensors a
# fetch converts it to; the spec's other files are copied beside it, so the folder loads on its own.
CONVERTED = {"lineart_anime": "netG.safetensors", "depth_midas": "model.safetensors"}


def hub_cache() -> Path:
    """The HF hub cache folder in use (HF_HUB_CACHE / HF_HOME honoured, as huggingface_hub does)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def converted_path(spec: ModelSpec, cache: Path | None = None) -> Path:
    """Where the fetch leaves a pickled annotator as safetensors: beside the HF cache's own folders
    (never inside a snapshot, which the hub library owns), by repo and full revision."""
    root = cache if cache is not None else hub_cache()
    folder = f"{spec.repo.replace('/', '--')}@{spec.revision}"
    return root / "storyboard-annotators" / folder / CONVERTED[spec.key]


def annotator_files(module: str, cache: Path | None = None) -> tuple[Path, ...]:
    """The files the preprocessor computes with (its identity): the converted safetensors, or the
    repo's weights (DWPose: detector, then pose model). Looks only; raises the sentence when one is
    missing."""
    spec = SPECS[module]
    cache = cache if cache is not None else hub_cache()  # the environment's, read now
    stage = f"the preprocessor '{module}'"
    if module in CONVERTED:
        path = converted_path(spec, cache)
        beside = [path.with_name(f) for f in spec.files[:-1]]
        if path.is_file() and all(p.is_file() for p in beside):
            return (path,)  # the weights decide the map; a config beside them is read
        names = ", ".join(f"{spec.repo}/{f}" for f in spec.files)
        raise ModelError(
            f"Model files for {stage} are missing in the Hugging Face cache: "
            f"{names} @ {spec.revision[:10]}, converted to {path}"
            + (f" with {', '.join(p.name for p in beside)} beside it." if beside else "."),
            hint=f"run `{FETCH_COMMAND}` once (needs internet)",
        )
    folder = resolve([spec], cache_dir=cache, stage=stage, command=FETCH_COMMAND)[spec.key]
    if module == "depth_anything":  # config.json beside it is read, the weights decide the map
        return (folder / spec.files[-1],)
    return tuple(folder / f for f in spec.files)


def convert_pickle(src: Path, dst: Path) -> None:
    """A pickled state dict as safetensors: tensors only (``weights_only``), DataParallel's
    ``module.`` prefix dropped as the extension drops it, written atomically."""
    import torch
    from safetensors.torch import save_file

    from storyboard.models.hashes import sha256_file

    state = torch.load(src, map_location="cpu", weights_only=True)
    tensors = {k.removeprefix("module."): v.contiguous() for k, v in state.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    # "format": "pt" is what transformers' from_pretrained asks of a safetensors file's metadata.
    meta = {"format": "pt", "converted_from": src.name, "sha256": sha256_file(src)}
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, dst)


def fetch_control(cache: Path | None = None) -> dict[str, tuple[Path, ...]]:
    """`storyboard models fetch control`: every annotator's pinned files into the HF cache, pickles
    converted; the files each preprocessor will read, by name."""
    out: dict[str, tuple[Path, ...]] = {}
    for key, spec in SPECS.items():
        folder = fetch([spec], cache_dir=cache)[spec.key]
        if key in CONVERTED:
            dst = converted_path(spec, cache)
            if not dst.is_file():
                convert_pickle(folder / spec.files[-1], dst)
            for f in spec.files[:-1]:
                shutil.copyfile(folder / f, dst.with_name(f))
        out[key] = annotator_files(key, cache)
    return out
