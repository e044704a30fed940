"""Building blocks of model loading: diffusers/transformers modules made without random init and
filled with a state dict, checked key by key so a wrong file is a sentence, not a shape traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from storyboard.errors import ModelError

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

M = TypeVar("M", bound=torch.nn.Module)


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


def _empty(factory: Callable[[], M]) -> M:
    """Build a module with parameters on the meta device (no random init), buffers real."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return factory()


def _load_into(module: M, state: dict[str, Tensor], what: str, path: Path) -> M:
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


def _build_unet(config: dict[str, Any], state: dict[str, Tensor], path: Path) -> UNet2DConditionModel:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    unet: UNet2DConditionModel = _empty(lambda: UNet2DConditionModel.from_config(config))
    return _load_into(unet, state, "UNet", path)


def _build_vae(config: dict[str, Any], state: dict[str, Tensor], path: Path) -> AutoencoderKL:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    vae: AutoencoderKL = _empty(lambda: AutoencoderKL.from_config(config))
    return _load_into(vae, state, "VAE", path)


def _build_clip(config: dict[str, Any], state: dict[str, Tensor], path: Path, *, projection: bool) -> Any:
    """CLIPTextModel, or CLIPTextModelWithProjection (SDXL's second encoder) with projection=True."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig.from_dict(config)
    model: CLIPTextModel | CLIPTextModelWithProjection = _empty(
        lambda: CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)
    )
    fixed = fit_text_model_level(state, set(model.state_dict()))
    return _load_into(model, fixed, "text encoder", path)


def fit_text_model_level(state: dict[str, Tensor], own: set[str]) -> dict[str, Tensor]:
    """CLIP text-encoder weights renamed to the ``text_model.`` level the installed model uses.

    Two things vary independently: files store ``embeddings...`` with or without the ``text_model.``
    level (WebUI's ``checkpoint_dict_replacements_sd1`` adds it on load for files without), and
    transformers >= 5.6 builds CLIPTextModel without that level while older versions have it. Each
    key is moved to whichever spelling the model has, so every file loads under every version.

    >>> import torch
    >>> t = torch.zeros(1)
    >>> sorted(fit_text_model_level({"embeddings.x": t, "text_model.final.y": t},
    ...                             {"text_model.embeddings.x", "text_model.final.y"}))
    ['text_model.embeddings.x', 'text_model.final.y']
    >>> sorted(fit_text_model_level({"text_model.embeddings.x": t}, {"embeddings.x"}))
    ['embeddings.x']
    """
    fixed: dict[str, Tensor] = {}
    for k, v in state.items():
        if k.endswith("position_ids"):
            continue  # a non-persistent buffer in current transformers; old checkpoints still carry it
        if k not in own:
            flat = k.removeprefix("text_model.")
            if flat in own:
                k = flat
            elif "text_model." + k in own:
                k = "text_model." + k
        fixed[k] = v
    return fixed


def _finish(module: M, device: str | torch.device, dtype: torch.dtype) -> M:
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
    alphas: Tensor = sched.alphas_cumprod.to(torch.float32).clone()
    return alphas


def _vae_from_state(raw: dict[str, Tensor], config: dict[str, Any], path: Path) -> AutoencoderKL:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if any(".down_blocks." in k or k.startswith("decoder.up_blocks.") for k in raw):
        state = dict(raw)  # already diffusers layout
    else:
        state = convert_ldm_vae_checkpoint(raw, config)
        if not state:
            raise ModelError(f"{path} holds no VAE weights this loader recognises.")
    return _build_vae(config, state, path)


# Public entry points -----------------------------------------------------------------------------
