"""Load an SD1.x / SDXL model offline: a WebUI-style single file or a diffusers folder.

Single files (what Civitai and WebUI use) hold weights only, so their configs come from folders
shipped in ``storyboard/data/configs`` (real SD1.5 / SDXL-base values) and the tokenizer from
``storyboard.prompt.tokenizer``. The LDM -> diffusers renaming is diffusers' own
(``diffusers.loaders.single_file_utils``), but we build the modules and load the weights ourselves:
``from_single_file`` reaches for the hub even with ``local_files_only`` (a1111.md §7), and a render
must never depend on the network.

Which config describes a single file, first match wins:
1. ``config_dir=`` given by the caller (a diffusers-style folder with ``unet/``, ``vae/``, ...);
2. a ``storyboard_config`` JSON entry in the safetensors metadata (the tiny test model carries one);
3. the shipped ``sd15`` or ``sdxl`` configs, chosen from the checkpoint's keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from storyboard.errors import ModelError
from storyboard.models.pickle_gate import PICKLE_HINT, load_pickle
from storyboard.models.registry import PICKLE_EXTENSIONS, is_pickle, safetensors_metadata

ModelKind = Literal["sd1", "sdxl"]
DTypeLike = torch.dtype | str | None

CONFIG_METADATA_KEY = "storyboard_config"

_SDXL_MARKER = "conditioner.embedders.1."
_SD1_MARKER = "cond_stage_model.transformer."
_SDXL_CLIP_L = "conditioner.embedders.0.transformer."
_SD2_MARKER = "cond_stage_model.model."
_VAE_PREFIXES = ("first_stage_model.", "vae.")

_DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}


@dataclass
class ModelComponents:
    """Everything a render needs from one base model, already on its device and dtype."""

    kind: ModelKind
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    text_encoder_2: Any | None  # transformers CLIPTextModelWithProjection (SDXL)
    tokenizer: Any  # transformers CLIPTokenizer
    tokenizer_2: Any | None
    prediction_type: str  # "epsilon" or "v_prediction"
    alphas_cumprod: Tensor  # float32, (num_train_timesteps,)
    source_path: Path
    scheduler_config: dict[str, Any]
    vae_path: Path | None = None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def shipped_config_dir(kind: ModelKind) -> Path:
    """The bundled diffusers config folder for real SD1.5 (``sd1``) or SDXL-base (``sdxl``) models."""
    name = "sd15" if kind == "sd1" else "sdxl"
    return Path(str(resources.files("storyboard") / "data" / "configs" / name))


def resolve_dtype(device: str | torch.device, dtype: DTypeLike = None) -> torch.dtype:
    """fp16 on CUDA unless asked otherwise, fp32 elsewhere (CPU half precision is slow and lossy)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ModelError(f"Unknown dtype '{dtype}'; use one of fp16, bf16, fp32.") from None


# Reading weights ---------------------------------------------------------------------------------


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Tensor]:
    """All tensors of a weights file on CPU; pickle formats only with ``allow_pickle``."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"The model file {p} does not exist.")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
            raise ModelError(f"Cannot read {p}: it is not a valid safetensors file ({exc}).") from exc
    if suffix in PICKLE_EXTENSIONS:
        return _tensors_of(load_pickle(p, allow_pickle=allow_pickle), p)
    raise ModelError(
        f"{p} has an unknown model file type '{suffix}'; expected .safetensors"
        f" (or {', '.join(PICKLE_EXTENSIONS)} with --allow-pickle)."
    )


def _tensors_of(obj: object, path: Path) -> dict[str, Tensor]:
    # Lightning-era checkpoints wrap the weights in {"state_dict": ...}.
    while isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path} does not hold a state dict of tensors.")
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}


def detect_kind(keys: Mapping[str, Any] | set[str], path: Path) -> ModelKind:
    """SD1.x or SDXL from a single-file checkpoint's key names."""
    if any(k.startswith(_SDXL_MARKER) for k in keys):
        return "sdxl"
    if any(k.startswith(_SD1_MARKER) for k in keys):
        return "sd1"
    if any(k.startswith(_SD2_MARKER) for k in keys):
        raise ModelError(f"{path} is a Stable Diffusion 2.x checkpoint; only SD1.x and SDXL are supported.")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelError(
            f"{path} has a UNet but no text encoder this loader knows (not SD1.x or SDXL).",
        )
    raise ModelError(
        f"{path} is not a Stable Diffusion checkpoint: none of its tensors has the expected names.",
        hint="is it a LoRA, VAE or embedding? those go in models/Lora, models/VAE or embeddings/",
    )


# Configs -----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"The model config {path} is missing.") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"The model config {path} cannot be read: {exc}.") from exc
    if not isinstance(data, dict):
        raise ModelError(f"The model config {path} is not a JSON object.")
    return data


def configs_from_dir(folder: Path, kind: ModelKind) -> dict[str, dict[str, Any]]:
    """Component configs of a diffusers-style folder: unet, vae, text_encoder(_2), scheduler."""
    out = {
        "unet": _read_json(folder / "unet" / "config.json"),
        "vae": _read_json(folder / "vae" / "config.json"),
        "text_encoder": _read_json(folder / "text_encoder" / "config.json"),
        "scheduler": _read_json(folder / "scheduler" / "scheduler_config.json"),
    }
    if kind == "sdxl":
        out["text_encoder_2"] = _read_json(folder / "text_encoder_2" / "config.json")
    return out


def _configs_for(path: Path, kind: ModelKind, config_dir: Path | None) -> dict[str, dict[str, Any]]:
    if config_dir is not None:
        return configs_from_dir(Path(config_dir), kind)
    if path.suffix.lower() == ".safetensors":
        raw = safetensors_metadata(path).get(CONFIG_METADATA_KEY)
        if raw:
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise ModelError(
                    f"{path} has a broken '{CONFIG_METADATA_KEY}' metadata entry: {exc}."
                ) from exc
            if not isinstance(data, dict) or not {"unet", "vae", "text_encoder", "scheduler"} <= set(data):
                raise ModelError(f"{path} has an incomplete '{CONFIG_METADATA_KEY}' metadata entry.")
            return {str(k): dict(v) for k, v in data.items()}
    return configs_from_dir(shipped_config_dir(kind), kind)


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence transformers' per-load progress bars; storyboard reports loading itself."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


# Building modules --------------------------------------------------------------------------------


def _empty(factory: Any) -> Any:
    """Build a module with parameters on the meta device (no random init), buffers real."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return factory()


def _load_into(module: Any, state: dict[str, Tensor], what: str, path: Path) -> Any:
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelError(
            f"The {what} weights in {path} do not fit the model config: {'; '.join(detail)}.",
            hint="the file may be truncated or of another architecture; a custom-size model needs config_dir",
        )
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).splitlines()[:4]
        raise ModelError(
            f"The {what} weights in {path} do not fit the model config: {' '.join(first)}"
        ) from exc
    return module


def _build_unet(config: dict[str, Any], state: dict[str, Tensor], path: Path) -> Any:
    from diffusers import UNet2DConditionModel

    unet = _empty(lambda: UNet2DConditionModel.from_config(config))
    return _load_into(unet, state, "UNet", path)


def _build_vae(config: dict[str, Any], state: dict[str, Tensor], path: Path) -> Any:
    from diffusers import AutoencoderKL

    vae = _empty(lambda: AutoencoderKL.from_config(config))
    return _load_into(vae, state, "VAE", path)


def _build_clip(config: dict[str, Any], state: dict[str, Tensor], path: Path, *, projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig.from_dict(config)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    model = _empty(lambda: cls(cfg))
    own = set(model.state_dict())
    fixed: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.endswith("position_ids"):
            continue  # a non-persistent buffer in current transformers; old checkpoints still carry it
        # transformers >= 5.6 dropped the ``text_model.`` level of CLIPTextModel.
        if k not in own and k.startswith("text_model.") and k.removeprefix("text_model.") in own:
            k = k.removeprefix("text_model.")
        fixed[k] = v
    return _load_into(model, fixed, "text encoder", path)


def _finish(module: Any, device: str | torch.device, dtype: torch.dtype) -> Any:
    # nn.Module.to directly: diffusers' override warns on every cast about fp32-pinned modules that
    # SD's UNet and VAE do not have.
    torch.nn.Module.to(module, device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def _alphas_cumprod(scheduler_config: dict[str, Any]) -> Tensor:
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    sched = DDPMScheduler.from_config({k: scheduler_config[k] for k in keys if k in scheduler_config})
    return sched.alphas_cumprod.to(torch.float32).clone()


def _vae_from_state(raw: dict[str, Tensor], config: dict[str, Any], path: Path) -> Any:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if any(".down_blocks." in k or k.startswith("decoder.up_blocks.") for k in raw):
        state = dict(raw)  # already diffusers layout
    else:
        state = convert_ldm_vae_checkpoint(raw, config)
        if not state:
            raise ModelError(f"{path} holds no VAE weights this loader recognises.")
    return _build_vae(config, state, path)


# Public entry points -----------------------------------------------------------------------------


def load_vae(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: DTypeLike = None,
    config: dict[str, Any] | None = None,
    allow_pickle: bool = False,
) -> Any:
    """An external VAE: a single file (LDM or diffusers key names) or a diffusers folder."""
    p = Path(path)
    dt = resolve_dtype(device, dtype)
    if p.is_dir():
        from diffusers import AutoencoderKL

        sub = "vae" if (p / "vae" / "config.json").is_file() else None
        try:
            vae = AutoencoderKL.from_pretrained(
                str(p), subfolder=sub, local_files_only=True, use_safetensors=None if allow_pickle else True
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"Cannot load the VAE folder {p}: {exc}") from exc
        return _finish(vae, device, dt)
    raw = read_state_dict(p, allow_pickle=allow_pickle)
    cfg = config if config is not None else configs_from_dir(shipped_config_dir("sd1"), "sd1")["vae"]
    return _finish(_vae_from_state(raw, cfg, p), device, dt)


def load_pipeline_components(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: DTypeLike = None,
    vae: str | Path | None = None,
    allow_pickle: bool = False,
    config_dir: str | Path | None = None,
) -> ModelComponents:
    """Load a base model (single file or diffusers folder) without touching the network.

    ``vae`` replaces the model's own VAE (a file or diffusers folder). ``config_dir`` overrides the
    configs used for a single file (only needed for non-standard sizes such as the tiny test model;
    real SD1.x / SDXL checkpoints use the shipped configs).
    """
    p = Path(path)
    dt = resolve_dtype(device, dtype)
    if p.is_dir():
        comps = _load_diffusers_folder(p, device=device, dtype=dt, allow_pickle=allow_pickle)
        if vae is not None:
            cfg = dict(comps.vae.config)
            comps.vae = load_vae(vae, device=device, dtype=dt, allow_pickle=allow_pickle, config=cfg)
            comps.vae_path = Path(vae)
        return comps
    if p.is_file():
        return _load_single_file(
            p,
            device=device,
            dtype=dt,
            allow_pickle=allow_pickle,
            config_dir=Path(config_dir) if config_dir is not None else None,
            vae_path=Path(vae) if vae is not None else None,
        )
    raise ModelError(f"The model {p} does not exist.")


def _load_single_file(
    path: Path,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    allow_pickle: bool,
    config_dir: Path | None,
    vae_path: Path | None,
) -> ModelComponents:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_open_clip_checkpoint,
    )

    from storyboard.prompt.tokenizer import load_clip_tokenizer

    raw = read_state_dict(path, allow_pickle=allow_pickle)
    kind = detect_kind(raw, path)
    cfgs = _configs_for(path, kind, config_dir)

    # diffusers logs a warning when a checkpoint also has EMA weights; like WebUI we take the
    # non-EMA model.diffusion_model.* weights, so the warning is noise.
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        unet_state = convert_ldm_unet_checkpoint(raw, cfgs["unet"])
    finally:
        diffusers_logging.set_verbosity(level)
    unet = _finish(_build_unet(cfgs["unet"], unet_state, path), device, dtype)

    if vae_path is not None:
        vae = load_vae(vae_path, device=device, dtype=dtype, allow_pickle=allow_pickle, config=cfgs["vae"])
    else:
        if not any(k.startswith(_VAE_PREFIXES) for k in raw):
            raise ModelError(
                f"{path} has no VAE weights (no first_stage_model.* tensors).",
                hint="choose an external VAE with `render.vae` (or --vae)",
            )
        vae = _finish(_vae_from_state(raw, cfgs["vae"], path), device, dtype)

    text_encoder_2 = None
    tokenizer_2 = None
    if kind == "sd1":
        te_state = convert_ldm_clip_checkpoint(raw)
        text_encoder = _build_clip(cfgs["text_encoder"], te_state, path, projection=False)
    else:
        te_state = convert_ldm_clip_checkpoint({k: v for k, v in raw.items() if k.startswith(_SDXL_CLIP_L)})
        text_encoder = _build_clip(cfgs["text_encoder"], te_state, path, projection=False)
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        # convert_open_clip_checkpoint only reads the model's config to size the q/k/v split.
        shape_only = _empty(
            lambda: CLIPTextModelWithProjection(CLIPTextConfig.from_dict(cfgs["text_encoder_2"]))
        )
        te2_state = convert_open_clip_checkpoint(shape_only, raw, prefix="conditioner.embedders.1.model.")
        text_encoder_2 = _finish(
            _build_clip(cfgs["text_encoder_2"], te2_state, path, projection=True), device, dtype
        )
        tokenizer_2 = load_clip_tokenizer(pad_token="!")
    text_encoder = _finish(text_encoder, device, dtype)

    scheduler_config = dict(cfgs["scheduler"])
    prediction_type = str(scheduler_config.get("prediction_type", "epsilon"))
    if "v_pred" in raw:
        # ComfyUI/WebUI convention: v-prediction checkpoints carry an empty "v_pred" marker tensor.
        prediction_type = "v_prediction"
    if "alphas_cumprod" in raw and raw["alphas_cumprod"].ndim == 1:
        # WebUI uses the schedule stored in the checkpoint (its LatentDiffusion buffer) when present.
        alphas = raw["alphas_cumprod"].to(torch.float32).clone()
    else:
        alphas = _alphas_cumprod(scheduler_config)
    return ModelComponents(
        kind=kind,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=load_clip_tokenizer(),
        tokenizer_2=tokenizer_2,
        prediction_type=prediction_type,
        alphas_cumprod=alphas,
        source_path=path,
        scheduler_config=scheduler_config,
        vae_path=vae_path,
    )


def _load_diffusers_folder(
    folder: Path, *, device: str | torch.device, dtype: torch.dtype, allow_pickle: bool
) -> ModelComponents:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from storyboard.prompt.tokenizer import load_clip_tokenizer

    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"{folder} is a folder but not a diffusers model (it has no model_index.json).",
            hint="point at a .safetensors checkpoint file or a diffusers model folder",
        )
    kind: ModelKind = "sdxl" if (folder / "text_encoder_2").is_dir() else "sd1"
    safe = None if allow_pickle else True
    with quiet_progress():
        try:
            unet = UNet2DConditionModel.from_pretrained(
                str(folder), subfolder="unet", local_files_only=True, use_safetensors=safe
            )
            vae = AutoencoderKL.from_pretrained(
                str(folder), subfolder="vae", local_files_only=True, use_safetensors=safe
            )
            text_encoder = CLIPTextModel.from_pretrained(
                str(folder), subfolder="text_encoder", local_files_only=True, use_safetensors=safe
            )
            text_encoder_2 = (
                CLIPTextModelWithProjection.from_pretrained(
                    str(folder), subfolder="text_encoder_2", local_files_only=True, use_safetensors=safe
                )
                if kind == "sdxl"
                else None
            )
        except (OSError, ValueError) as exc:
            hint = None if allow_pickle else f"if it only has .bin weights and you trust it, {PICKLE_HINT}"
            raise ModelError(f"Cannot load the diffusers model folder {folder}: {exc}", hint=hint) from exc

    def tokenizer(sub: str, pad: str) -> Any:
        if (folder / sub / "vocab.json").is_file():
            return CLIPTokenizer.from_pretrained(str(folder / sub), local_files_only=True)
        return load_clip_tokenizer(pad_token=pad)

    scheduler_config = configs_from_dir(folder, kind)["scheduler"]
    return ModelComponents(
        kind=kind,
        unet=_finish(unet, device, dtype),
        vae=_finish(vae, device, dtype),
        text_encoder=_finish(text_encoder, device, dtype),
        text_encoder_2=_finish(text_encoder_2, device, dtype) if text_encoder_2 is not None else None,
        tokenizer=tokenizer("tokenizer", "<|endoftext|>"),
        tokenizer_2=tokenizer("tokenizer_2", "!") if kind == "sdxl" else None,
        prediction_type=str(scheduler_config.get("prediction_type", "epsilon")),
        alphas_cumprod=_alphas_cumprod(scheduler_config),
        source_path=folder,
        scheduler_config=scheduler_config,
    )


__all__ = [
    "CONFIG_METADATA_KEY",
    "ModelComponents",
    "detect_kind",
    "is_pickle",
    "load_pipeline_components",
    "load_vae",
    "read_state_dict",
    "resolve_dtype",
    "shipped_config_dir",
]
