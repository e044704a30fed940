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

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from storyboard.errors import ModelError
from storyboard.models.checkpoint_file import (
    _SDXL_CLIP_L,
    _VAE_PREFIXES,
    CONFIG_METADATA_KEY,
    INPAINT_CHANNELS,
    ModelKind,
    configs_for,
    configs_from_dir,
    detect_kind,
    read_state_dict,
    shipped_config_dir,
    unet_in_channels,
)
from storyboard.models.modules import (
    _alphas_cumprod,
    _build_clip,
    _build_unet,
    _empty,
    _finish,
    _vae_from_state,
    quiet_progress,
)
from storyboard.models.pickle_gate import PICKLE_HINT
from storyboard.models.registry import is_pickle

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

DTypeLike = torch.dtype | str | None


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
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection | None  # SDXL
    tokenizer: CLIPTokenizer
    tokenizer_2: CLIPTokenizer | None
    prediction_type: str  # "epsilon" or "v_prediction"
    alphas_cumprod: Tensor  # float32, (num_train_timesteps,)
    source_path: Path
    scheduler_config: dict[str, Any]
    vae_path: Path | None = None
    # The checkpoint's "ztsnr" marker: WebUI rescales the schedule to zero terminal SNR for it.
    # alphas_cumprod above stays as stored; the render applies the rescale (a story may turn it off).
    ztsnr: bool = False

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = next(self.unet.parameters()).dtype
        return dtype

    @property
    def inpainting(self) -> bool:
        """A 9-channel UNet (sd-v1-5-inpainting and merges): sampled with WebUI's image conditioning."""
        return int(self.unet.config["in_channels"]) == INPAINT_CHANNELS

    @property
    def device(self) -> torch.device:
        device: torch.device = next(self.unet.parameters()).device
        return device


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
    cfgs = configs_for(path, kind, config_dir)
    cfgs["unet"] = {**cfgs["unet"], "in_channels": unet_in_channels(raw, path)}

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
        ztsnr="ztsnr" in raw,
    )


def _load_diffusers_folder(
    folder: Path, *, device: str | torch.device, dtype: torch.dtype, allow_pickle: bool
) -> ModelComponents:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
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
