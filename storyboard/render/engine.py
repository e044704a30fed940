"""The diffusers render engine: PanelJobs in, WebUI-equivalent panels (with infotext) out.

diffusers only holds the UNet, VAE and CLIP modules; everything WebUI decides is ours: prompt
parsing and chunked CLIP encoding (``storyboard.prompt``), LoRA merging (``storyboard.models.lora``),
k-diffusion samplers over the UNet (``storyboard.render.sampling``, ``storyboard.render.denoiser``), per-image
seeded noise (``storyboard.render.noise``) and the hires fix (``storyboard.render.hires``). One txt2img, as WebUI's
``processing.py`` runs it::

    sigmas = sampler.sigmas(steps);  x = noise(seed) * sigmas[0]
    x = sample(CFG(D, cond, uncond), x, sigmas, ancestral noise from the same per-image generators)
    [hires] upscale the latent (or decode -> Lanczos/ESRGAN -> encode); fresh generators with the same seeds
            at the new size; an int(steps / d)-step schedule entered so that `steps` steps remain
    decode -> PIL

Files are found and checked (missing model, LoRA for another model family, pickle refused) when the
renderer is made, before anything loads; the model loads on the first render.

Known differences from WebUI: the Lanczos hires path encodes with the VAE posterior mean (WebUI
samples it with the global RNG, so it does not repeat); panels are batched only with panels whose
prompts have the same CLIP chunk counts, so a panel renders the same alone or in a batch (WebUI pads
shorter prompts of a batch, which changes them); for SDXL an empty negative prompt is zeroed per
image (WebUI zeroes it only when the whole batch's negatives are empty).
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from storyboard.render.batching import estimate_batch_size, group_jobs
from storyboard.app.build import RenderedPanel
from storyboard.render.denoiser import CFGDenoiser, CompVisDenoiser, Conditioning, merge_schedules
from storyboard.errors import ModelError, StoryboardError
from storyboard.render.hires import (
    LATENT_UPSCALERS,
    PIXEL_UPSCALERS_WITHOUT_MODEL,
    hires_size,
    img2img_sigmas,
    is_latent_upscaler,
    noised_latent,
    upscale_image_lanczos,
    upscale_latent,
)
from storyboard.render.infotext import Infotext
from storyboard.models.hashes import lora_hash, sha256_file
from storyboard.models.registry import ModelFile, ModelFolders, Registry, safetensors_header
from storyboard.render.noise import ImageRNG, brownian_noise_sampler
from storyboard.story.plan import PanelJob, plan
from storyboard.render.progress import RenderProgress, progress_enabled
from storyboard.prompt.embeddings import Embedding, load_embedding
from storyboard.prompt.encode import EmbeddingIndex, tokenize_prompt
from storyboard.prompt.extra_networks import extract_extra_networks
from storyboard.prompt.schedule import prompt_schedule
from storyboard.render.sampling import SCHEDULE_LABELS, SamplerSpec, parse_sampler_name, sample
from storyboard.story.schema import RenderSettings
from storyboard.story.load import LoadedStory
from storyboard.render.decode import decode_latents, encode_images

# Bump when a change here changes pixels for the same inputs: cached panels then re-render.
ENGINE_VERSION = "storyboard-kdiffusion-1"


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (as WebUI), fp32 elsewhere (CPU half is slow and MPS half differs more)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def checkpoint_kind(path: Path) -> str | None:
    """Kind ("sd1"/"sdxl") from a checkpoint's tensor names (header only), None when unknowable unloaded."""
    if path.is_dir():
        return "sdxl" if (path / "text_encoder_2").is_dir() else "sd1"
    if path.suffix.lower() != ".safetensors":
        return None
    from storyboard.models.load import detect_kind

    keys = {k for k in safetensors_header(path) if k != "__metadata__"}
    return detect_kind(keys, path)


# Resolution ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModels:
    """The files one job's settings name, found and checked."""

    checkpoint: ModelFile
    vae: ModelFile | None
    kind: str | None
    embeddings: dict[str, Embedding]
    registry: Registry


def _folders(settings: RenderSettings, base_dir: Path) -> ModelFolders:
    def rel(paths: Sequence[Path]) -> list[Path]:
        return [base_dir / Path(p).expanduser() for p in paths]

    f = settings.folders
    folders = ModelFolders(
        checkpoints=rel(f.checkpoints),
        loras=rel(f.loras),
        vaes=rel(f.vaes),
        embeddings=rel(f.embeddings),
        upscalers=rel(f.upscalers),
    )
    if settings.webui_root is not None:
        root = base_dir / Path(settings.webui_root).expanduser()
        # WebUI keeps its Real-ESRGAN downloads ("R-ESRGAN 4x+" etc.) in models/RealESRGAN.
        folders = folders.merged(ModelFolders.from_webui_root(root)).merged(
            ModelFolders(upscalers=[root / "models" / "RealESRGAN"])
        )
    return folders


def _check_sampling(settings: RenderSettings) -> None:
    spec = parse_sampler_name(settings.sampler, settings.schedule)
    hr = settings.hires
    if hr is None:
        return
    _hires_spec(spec, hr.sampler)
    if hr.denoising_strength <= 0:
        raise StoryboardError(
            f"Hires denoising strength is {hr.denoising_strength}; it must be above 0.",
            hint="use e.g. 0.7 (WebUI's default), or remove the hires block",
        )


# WebUI's display names for the Real-ESRGAN models it ships, by the file stem each one loads.
UPSCALER_DISPLAY_NAMES = {
    "R-ESRGAN 4x+": "RealESRGAN_x4plus",
    "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B",
    "R-ESRGAN 2x+": "RealESRGAN_x2plus",
    "ESRGAN_4x": "ESRGAN_4x",
}


def needs_upscaler_model(name: str) -> bool:
    """True when a hires upscaler name means a model file (not a latent mode nor plain Lanczos)."""
    return not is_latent_upscaler(name) and name not in PIXEL_UPSCALERS_WITHOUT_MODEL


def _hires_spec(spec: SamplerSpec, sampler: str | None) -> SamplerSpec:
    """The hires pass's sampler: its own when given (with its own schedule suffix, else the first
    pass's schedule type, as WebUI's "Use same scheduler"), else the first pass's."""
    if not sampler:
        return spec
    own = parse_sampler_name(sampler)
    if own.schedule != "automatic":
        return own
    return parse_sampler_name(sampler, SCHEDULE_LABELS[spec.schedule])


# Per-batch data ------------------------------------------------------------------------------------

# [(end_step, Conditioning)] for one image: hidden (T, C); SDXL adds "text_embeds" (P,).
CondSchedule = list[tuple[int, Conditioning]]


@dataclass
class PanelConds:
    cond: CondSchedule
    uncond: CondSchedule
    hr_cond: CondSchedule | None
    hr_uncond: CondSchedule | None

    @property
    def shape_key(self) -> tuple[int, ...]:
        def tokens(s: CondSchedule | None) -> int:
            return 0 if s is None else int(s[0][1].hidden.shape[0])

        return tokens(self.cond), tokens(self.uncond), tokens(self.hr_cond), tokens(self.hr_uncond)


class DiffusersRenderer:
    """Renders PanelJobs with a Stable Diffusion checkpoint (see the module docstring)."""

    name = "diffusers"

    def __init__(
        self,
        base_dir: Path,
        *,
        quiet: bool = False,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        profile: bool = False,
    ) -> None:
        self.base_dir = Path(base_dir)
        # With profile=True, seconds per stage (load, lora, encode, sample, hires_upscale,
        # hires_sample, decode) accumulate here, measured with device syncs (for bench/).
        self.profile = profile
        self.stage_seconds: dict[str, float] = {}
        self.quiet = quiet
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = device_dtype(self.device)
        self.batch_size = batch_size
        self._registries: dict[str, Registry] = {}
        self._resolved: dict[str, ResolvedModels] = {}
        self._loras: dict[tuple[str, str], ModelFile] = {}
        self._hashes: dict[Path, str] = {}
        self._lora_hashes: dict[Path, str] = {}
        self._loaded_key: tuple[Path, Path | None] | None = None
        self._components: Any = None
        self._patcher: Any = None
        self._denoiser: CompVisDenoiser | None = None
        self._oom_cap: int | None = None
        # Keyed by id() of a ResolvedModels.embeddings dict, which lives as long as self._resolved.
        self._embedding_index: dict[int, EmbeddingIndex] = {}
        self._upscaler: Any = None  # the last loaded storyboard.render.upscale.UpscalerModel

    # Construction and checks -------------------------------------------------------------------

    @classmethod
    def from_story(
        cls,
        loaded: LoadedStory,
        *,
        quiet: bool = False,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
    ) -> DiffusersRenderer:
        """A renderer for the story, with every model file it needs found and checked (nothing loaded)."""
        renderer = cls(loaded.base_dir, quiet=quiet, device=device, batch_size=batch_size)
        renderer.check(plan(loaded))
        return renderer

    def check(self, jobs: Sequence[PanelJob]) -> None:
        """Find and check every file the jobs need; raises ModelError/StoryboardError on the first problem."""
        for job in jobs:
            _check_sampling(job.settings)
            resolved = self.resolve(job.settings)
            for use in job.loras:
                self._lora_file(job.settings, use.name, resolved)
            self._upscaler_file(job.settings, resolved)

    def _registry(self, settings: RenderSettings) -> Registry:
        key = f"{settings.webui_root}|{settings.folders.model_dump_json()}"
        if key not in self._registries:
            self._registries[key] = Registry(_folders(settings, self.base_dir), base_dir=self.base_dir)
        return self._registries[key]

    def resolve(self, settings: RenderSettings) -> ResolvedModels:
        key = f"{settings.model}|{settings.vae}|{settings.webui_root}|{settings.folders.model_dump_json()}"
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        reg = self._registry(settings)
        ckpt = reg.find_checkpoint(settings.model)
        vae = reg.find_vae(settings.vae) if settings.vae else None
        for f in (ckpt, vae):
            if f is not None and f.pickle and not settings.allow_pickle:
                raise ModelError(
                    f"{f.path} is a pickle file, which can run arbitrary code when loaded, so it is refused.",
                    hint="use a .safetensors version, or set `render.allow_pickle: true` if you trust it",
                )
        kind = checkpoint_kind(ckpt.path)
        embeddings = self._load_embeddings(reg, settings, kind)
        resolved = ResolvedModels(ckpt, vae, kind, embeddings, reg)
        self._resolved[key] = resolved
        return resolved

    def _load_embeddings(
        self, reg: Registry, settings: RenderSettings, kind: str | None
    ) -> dict[str, Embedding]:
        found: dict[str, Embedding] = {}
        for f in reg.list_embeddings():
            if f.name in found or f.path.is_dir():
                continue  # the first folder wins, as WebUI's first-registered embedding does
            if f.pickle and not settings.allow_pickle:
                continue  # listed by WebUI too, but unsafe to read; a prompt naming it stays plain text
            try:
                emb = load_embedding(f.path, allow_pickle=settings.allow_pickle)
            except ModelError as exc:
                # WebUI skips unreadable files in its embeddings folder too; a prompt naming one
                # then reaches CLIP as plain words.
                warnings.warn(f"skipping embedding {f.path}: {exc.message}", stacklevel=2)
                continue
            if (emb.vectors_g is not None) == (kind == "sdxl"):
                found[emb.name] = emb
        return found

    def _lora_file(self, settings: RenderSettings, name: str, resolved: ResolvedModels) -> ModelFile:
        key = (str(id(resolved.registry)), name)
        hit = self._loras.get(key)
        if hit is not None:
            return hit
        from storyboard.models.lora import check_compatible, read_lora

        f = resolved.registry.find_lora(name)
        if f.pickle and not settings.allow_pickle:
            raise ModelError(
                f"The LoRA {f.path} is a pickle file, which can run arbitrary code when loaded, "
                "so it is refused.",
                hint="use a .safetensors version, or set `render.allow_pickle: true` if you trust it",
            )
        check_compatible(read_lora(f.path, allow_pickle=settings.allow_pickle), resolved.kind)
        self._loras[key] = f
        return f

    def _upscaler_file(self, settings: RenderSettings, resolved: ResolvedModels) -> ModelFile | None:
        """The hires upscaler's model file, or None for latent/Lanczos upscaling."""
        hr = settings.hires
        if hr is None or not needs_upscaler_model(hr.upscaler):
            return None
        reg = resolved.registry
        name = hr.upscaler
        try:
            f = reg.find_upscaler(name)
        except ModelError as exc:
            alias = UPSCALER_DISPLAY_NAMES.get(name)
            if alias is None or alias == name:
                raise ModelError(
                    f"The hires upscaler '{name}' is not a latent mode, Lanczos, or a file in the "
                    f"upscaler folders: {exc.message}",
                    hint="use one of "
                    + ", ".join([*LATENT_UPSCALERS, "Lanczos"])
                    + ", or put the ESRGAN model in models/ESRGAN (or render.folders.upscalers)",
                ) from None
            f = reg.find_upscaler(alias)
        if f.pickle and not settings.allow_pickle:
            raise ModelError(
                f"The upscaler {f.path} is a pickle file, which can run arbitrary code when loaded, "
                "so it is refused.",
                hint="use a .safetensors version, or set `render.allow_pickle: true` if you trust it",
            )
        return f

    def _load_upscaler(self, f: ModelFile, settings: RenderSettings) -> Any:
        from storyboard.render.upscale import load_upscaler

        if self._upscaler is None or self._upscaler.path != f.path:
            self._upscaler = None  # free the old one first
            self._upscaler = load_upscaler(
                f.path, allow_pickle=settings.allow_pickle, device=self.device, dtype=self.dtype
            )
        return self._upscaler

    # Identity ----------------------------------------------------------------------------------

    def _sha(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path) if path.is_file() else _folder_digest(path)
        return self._hashes[path]

    def _lora_hash(self, path: Path) -> str:
        # lora_hash() re-reads the whole file when it has no stored hash: remember it per path.
        if path not in self._lora_hashes:
            self._lora_hashes[path] = lora_hash(path)
        return self._lora_hashes[path]

    def identity(self, job: PanelJob) -> dict[str, Any]:
        """File hashes and engine facts that decide the job's pixels beyond its own settings."""
        resolved = self.resolve(job.settings)
        loras = {u.name: self._lora_file(job.settings, u.name, resolved) for u in job.loras}
        return {
            "engine": ENGINE_VERSION,
            "model": self._sha(resolved.checkpoint.path),
            "vae": self._sha(resolved.vae.path) if resolved.vae else None,
            "lora_hashes": {n: self._lora_hash(f.path) for n, f in loras.items()},
            "lora_files": {n: self._sha(f.path) for n, f in loras.items()},
            "embeddings": {e.name: e.shorthash for e in self.used_embeddings(job)},
            **(
                {"upscaler": self._sha(up.path)}
                if (up := self._upscaler_file(job.settings, resolved))
                else {}
            ),
            "device": f"{self.device.type}/{str(self.dtype).removeprefix('torch.')}",
        }

    def used_embeddings(self, job: PanelJob) -> list[Embedding]:
        """Embeddings the job's prompts use (negative first, as WebUI encodes it first)."""
        embeddings = self.resolve(job.settings).embeddings
        if not embeddings:
            return []
        from storyboard.prompt.tokenizer import load_clip_tokenizer

        tokenizer = load_clip_tokenizer()
        index = self._embedding_index.get(id(embeddings))
        if index is None:
            index = self._embedding_index[id(embeddings)] = EmbeddingIndex(tokenizer, embeddings)
        used: dict[str, Embedding] = {}
        for text in _prompt_texts(job):
            for chunk in tokenize_prompt(text, tokenizer, index):
                for _, emb in chunk.embeddings:
                    used.setdefault(emb.name, emb)
        return list(used.values())

    # Rendering ---------------------------------------------------------------------------------

    def render(self, jobs: Sequence[PanelJob]) -> Iterator[RenderedPanel]:
        """Render the jobs group by group, yielding each panel as soon as its batch is decoded."""
        jobs = list(jobs)
        if not jobs:
            return
        self.check(jobs)
        with RenderProgress(len(jobs), progress_enabled(self.quiet)) as progress:
            for group in group_jobs(jobs):
                yield from self._render_group(group, progress)

    def _ensure_loaded(self, resolved: ResolvedModels, settings: RenderSettings) -> Any:
        key = (resolved.checkpoint.path, resolved.vae.path if resolved.vae else None)
        if self._loaded_key == key:
            return self._components
        self.unload()
        from storyboard.models.load import load_pipeline_components
        from storyboard.models.lora import LoraPatcher

        comps = load_pipeline_components(
            resolved.checkpoint.path,
            device=self.device,
            dtype=self.dtype,
            vae=key[1],
            allow_pickle=settings.allow_pickle,
        )
        self._components = comps
        if self.device.type == "cuda":
            # cuDNN's convolutions run faster on NHWC; same numbers, so hashes need not change.
            comps.unet.to(memory_format=torch.channels_last)
            comps.vae.to(memory_format=torch.channels_last)
        modules = {"unet": comps.unet, "text_encoder": comps.text_encoder}
        if comps.text_encoder_2 is not None:
            modules["text_encoder_2"] = comps.text_encoder_2
        self._patcher = LoraPatcher(modules, model_kind=resolved.kind)
        den = CompVisDenoiser(comps.unet, comps.alphas_cumprod, prediction_type=comps.prediction_type)
        # Move only the sigma tables: the UNet is already on its device and dtype.
        den.alphas_cumprod = den.alphas_cumprod.to(self.device)
        den.sigmas = den.sigmas.to(self.device)
        self._denoiser = den
        self._loaded_key = key
        return comps

    def unload(self) -> None:
        """Restore LoRA-free weights and drop the loaded model."""
        if self._patcher is not None:
            self._patcher.release()
        self._components = self._patcher = self._denoiser = self._upscaler = None
        self._loaded_key = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def restore_loras(self) -> None:
        """Put the base weights back (bit-exact); the next render re-applies what it needs."""
        if self._patcher is not None:
            self._patcher.restore()

    def _apply_loras(self, job: PanelJob, resolved: ResolvedModels) -> None:
        from storyboard.models.lora import read_lora

        assert self._patcher is not None
        if not job.loras:
            self._patcher.restore()
            return
        uses = []
        for u in job.loras:
            f = self._lora_file(job.settings, u.name, resolved)
            uses.append((read_lora(f.path, allow_pickle=job.settings.allow_pickle), u.te, u.unet))
        self._patcher.apply(uses)

    def _render_group(self, group: list[PanelJob], progress: RenderProgress) -> Iterator[RenderedPanel]:
        settings = group[0].settings
        resolved = self.resolve(settings)
        with self._stage("load"):
            comps = self._ensure_loaded(resolved, settings)
        with self._stage("lora"):
            self._apply_loras(group[0], resolved)
        # Built after the LoRA merge: text-encoder LoRA weights are in the encoder's weights now.
        encoder = _prompt_encoder(comps, resolved.embeddings, settings.clip_skip)
        spec = parse_sampler_name(settings.sampler, settings.schedule)
        hr_spec = _hires_spec(spec, settings.hires.sampler) if settings.hires else None
        with self._stage("encode"):
            conds = {job.panel_id: self._encode(job, encoder, spec, hr_spec) for job in group}
        # Batch only panels whose conds have equal lengths, so no panel is padded by its neighbours.
        by_shape: dict[tuple[int, ...], list[PanelJob]] = {}
        for job in group:
            by_shape.setdefault(conds[job.panel_id].shape_key, []).append(job)
        for same in by_shape.values():
            pending = list(same)
            while pending:
                size = self._batch_size(settings, len(pending))
                batch = pending[:size]
                t0 = time.perf_counter()
                try:
                    images = self._render_batch(
                        batch, [conds[j.panel_id] for j in batch], spec, hr_spec, progress
                    )
                except torch.cuda.OutOfMemoryError:
                    if size == 1:
                        raise
                    # Free what the failed batch held and try again with half as many images.
                    gc.collect()
                    torch.cuda.empty_cache()
                    self._oom_cap = max(1, size // 2)
                    continue
                seconds = (time.perf_counter() - t0) / len(batch)
                pending = pending[size:]
                progress.panels_done(len(batch))
                for job, image in zip(batch, images, strict=True):
                    yield RenderedPanel(job, image, self.infotext(job, spec, hr_spec), seconds)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if not self.profile:
            yield
            return
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - t0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _batch_size(self, settings: RenderSettings, pending: int) -> int:
        if self.batch_size is not None:
            size = self.batch_size
        elif self.device.type != "cuda":
            size = 1
        else:
            free, _total = torch.cuda.mem_get_info(self.device)
            w, h = settings.output_size
            size = estimate_batch_size(free, w, h, half=self.dtype == torch.float16)
        if self._oom_cap is not None:
            size = min(size, self._oom_cap)
        return max(1, min(size, pending))

    def _encode(
        self, job: PanelJob, encoder: Any, spec: SamplerSpec, hr_spec: SamplerSpec | None
    ) -> PanelConds:
        s = job.settings
        total = spec.schedule_steps(s.steps)

        sdxl = self._components is not None and self._components.kind == "sdxl"

        def enc(text: str, hires_steps: int | None = None, negative: bool = False) -> CondSchedule:
            sched = prompt_schedule(text, total, hires_steps=hires_steps)
            out: CondSchedule = []
            for entry in encoder.encode_schedule(sched):
                if not sdxl:
                    out.append((entry[0], Conditioning(entry[1][0].to(self.device))))
                    continue
                end, z, pooled = entry
                if negative and text == "":
                    # WebUI (sd_models_xl): an empty SDXL negative prompt is all zeros, pooled too.
                    z, pooled = torch.zeros_like(z), torch.zeros_like(pooled)
                out.append(
                    (end, Conditioning(z[0].to(self.device), {"text_embeds": pooled[0].to(self.device)}))
                )
            return out

        cond, uncond = enc(job.prompt_text), enc(job.negative, negative=True)
        hr_cond = hr_uncond = None
        if s.hires is not None and hr_spec is not None:
            hr_total = hr_spec.schedule_steps(s.hires.steps or s.steps)
            hr_cond = enc(_hires_prompt(job), hr_total)
            hr_uncond = enc(_hires_negative(job), hr_total, negative=True)
        return PanelConds(cond, uncond, hr_cond, hr_uncond)

    def _step_callback(self, progress: RenderProgress) -> Callable[[dict[str, Any]], None]:
        return lambda _info: progress.step()

    def _run_pass(
        self,
        spec: SamplerSpec,
        x: Tensor,
        sigmas: Tensor,
        rng: ImageRNG,
        seeds: list[int],
        cond: list[CondSchedule],
        uncond: list[CondSchedule],
        cfg_scale: float,
        progress: RenderProgress,
        label: str,
    ) -> Tensor:
        assert self._denoiser is not None
        noise = brownian_noise_sampler(x, sigmas, seeds) if spec.info.brownian_noise else rng.noise_sampler()
        # SDXL's size conditioning: original = target = this pass's pixel size, crop (0, 0) (WebUI).
        h, w = int(x.shape[-2]) * 8, int(x.shape[-1]) * 8
        time_ids = torch.tensor([h, w, 0, 0, h, w], dtype=torch.float32, device=x.device)
        c, u = _merge_conds(cond, time_ids), _merge_conds(uncond, time_ids)
        model = CFGDenoiser(self._denoiser, c, u, cfg_scale)
        progress.start_pass(label, len(sigmas) - 1)
        out = sample(spec.sampler, model, x, sigmas, noise, callback=self._step_callback(progress))
        return spec.final_latent(out, sigmas)

    def _render_batch(
        self,
        jobs: list[PanelJob],
        conds: list[PanelConds],
        spec: SamplerSpec,
        hr_spec: SamplerSpec | None,
        progress: RenderProgress,
    ) -> list[Image.Image]:
        assert self._denoiser is not None and self._components is not None
        s = jobs[0].settings
        den = self._denoiser
        seeds = [j.seed for j in jobs]
        rng = ImageRNG((4, s.height // 8, s.width // 8), seeds, s.noise_source, self.device)
        sigmas = spec.sigmas(s.steps, den.sigmas, self.device)
        x = spec.initial_latent(rng.next(), sigmas)
        ids = ", ".join(j.panel_id for j in jobs)
        with self._stage("sample"):
            latent = self._run_pass(
                spec, x, sigmas, rng, seeds, [c.cond for c in conds], [c.uncond for c in conds],
                s.cfg_scale, progress, ids,
            )  # fmt: skip
        hr = s.hires
        if hr is not None and hr_spec is not None:
            tw, th = hires_size(s.width, s.height, hr.scale)
            with self._stage("hires_upscale"):
                if is_latent_upscaler(hr.upscaler):
                    up = upscale_latent(latent, (th, tw), hr.upscaler)
                else:
                    vae = self._components.vae
                    first = decode_latents(vae, latent)
                    f = self._upscaler_file(s, self.resolve(s))
                    if f is None:
                        pixels = [upscale_image_lanczos(im, tw, th) for im in first]
                    else:
                        from storyboard.render.upscale import upscale_image

                        model = self._load_upscaler(f, s)
                        pixels = [upscale_image(model, im, tw, th) for im in first]
                    up = encode_images(vae, pixels, self.device)
            # WebUI: a fresh ImageRNG with the same seeds at the hires latent size.
            rng2 = ImageRNG(tuple(up.shape[1:]), seeds, s.noise_source, self.device)
            hr_steps = hr.steps or s.steps
            sigmas2 = img2img_sigmas(
                lambda n: hr_spec.sigmas(n, den.sigmas, self.device), hr_steps, hr.denoising_strength
            )
            x2 = noised_latent(up, rng2.next(), sigmas2)
            with self._stage("hires_sample"):
                latent = self._run_pass(
                    hr_spec, x2, sigmas2, rng2, seeds, [c.hr_cond or c.cond for c in conds],
                    [c.hr_uncond or c.uncond for c in conds], s.cfg_scale, progress, f"{ids} (hires)",
                )  # fmt: skip
        with self._stage("decode"):
            return decode_latents(self._components.vae, latent)

    # Infotext ----------------------------------------------------------------------------------

    def infotext(
        self, job: PanelJob, spec: SamplerSpec | None = None, hr_spec: SamplerSpec | None = None
    ) -> str:
        s = job.settings
        spec = spec or parse_sampler_name(s.sampler, s.schedule)
        resolved = self.resolve(s)
        hr = s.hires
        if hr is not None and hr_spec is None:
            hr_spec = _hires_spec(spec, hr.sampler)
        ckpt = resolved.checkpoint
        lora_pairs = []
        for u in job.loras:
            f = self._lora_file(s, u.name, resolved)
            lora_pairs.append((f.alias or f.name, self._lora_hash(f.path)))
        own_hr_sampler = hr is not None and hr_spec is not None and bool(hr.sampler)
        info = Infotext(
            prompt=job.positive,
            negative=job.negative,
            steps=s.steps,
            sampler=spec.infotext_name,
            # WebUI writes the schedule type as chosen (p.scheduler), "Automatic" included, not the
            # schedule it resolves to.
            schedule_type=SCHEDULE_LABELS[spec.schedule],
            cfg_scale=float(s.cfg_scale),
            seed=job.seed,
            width=s.width,
            height=s.height,
            model_hash=self._sha(ckpt.path)[:10] if ckpt.path.is_file() else None,
            model=ckpt.name,
            vae_hash=self._sha(resolved.vae.path)[:10]
            if resolved.vae and resolved.vae.path.is_file()
            else None,
            vae=resolved.vae.path.name if resolved.vae else None,
            denoising_strength=hr.denoising_strength if hr else None,
            clip_skip=s.clip_skip,
            rng="CPU" if s.noise_source == "cpu" else "GPU",
            hires_sampler=hr_spec.infotext_name
            if own_hr_sampler and hr_spec is not None and hr_spec.sampler != spec.sampler
            else None,
            hires_prompt=hr.prompt if hr is not None and hr.prompt and hr.prompt != job.positive else None,
            hires_negative=hr.negative
            if hr is not None and hr.negative and hr.negative != job.negative
            else None,
            hires_schedule_type=SCHEDULE_LABELS[hr_spec.schedule]
            if own_hr_sampler and hr_spec is not None and hr_spec.schedule != spec.schedule
            else None,
            hires_upscale=float(hr.scale) if hr else None,
            hires_steps=hr.steps if hr and hr.steps else None,
            hires_upscaler=hr.upscaler if hr else None,
            lora_hashes=lora_pairs,
            ti_hashes=[(e.name, e.shorthash) for e in self.used_embeddings(job)],
        )
        return info.text()


def _prompt_encoder(comps: Any, embeddings: dict[str, Embedding], clip_skip: int) -> Any:
    from storyboard.prompt.encode import PromptEncoder, SDXLPromptEncoder

    if comps.kind == "sdxl":
        # WebUI's SDXL conditioner takes the penultimate layers whatever clip skip says.
        return SDXLPromptEncoder(
            comps.tokenizer, comps.text_encoder, comps.tokenizer_2, comps.text_encoder_2, embeddings
        )
    return PromptEncoder(comps.tokenizer, comps.text_encoder, embeddings, clip_skip)


def _merge_conds(per_image: list[CondSchedule], time_ids: Tensor) -> list[tuple[int, Conditioning]]:
    """Per-image schedules -> one batch schedule (denoiser.merge_schedules, extended to SDXL's
    pooled embedding, which gets the batch's time ids)."""
    hidden = merge_schedules([[(end, c.hidden) for end, c in sched] for sched in per_image])
    if "text_embeds" not in per_image[0][0][1].added:
        return [(end, Conditioning(h)) for end, h in hidden]
    pooled = merge_schedules(
        [[(end, c.added["text_embeds"][None]) for end, c in sched] for sched in per_image]
    )
    batch = len(per_image)
    return [
        (end, Conditioning(h, {"text_embeds": p[:, 0], "time_ids": time_ids.expand(batch, -1)}))
        for (end, h), (_, p) in zip(hidden, pooled, strict=True)
    ]


def _hires_prompt(job: PanelJob) -> str:
    hr = job.settings.hires
    if hr is not None and hr.prompt:
        return extract_extra_networks(hr.prompt)[0]
    return job.prompt_text


def _hires_negative(job: PanelJob) -> str:
    hr = job.settings.hires
    return hr.negative if hr is not None and hr.negative else job.negative


def _prompt_texts(job: PanelJob) -> list[str]:
    texts = [job.negative, job.prompt_text]
    if job.settings.hires is not None:
        texts += [_hires_negative(job), _hires_prompt(job)]
    return texts


def _folder_digest(folder: Path) -> str:
    """A diffusers folder's identity: the sha256 of its weight files' sha256s, by relative path."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


__all__ = ["ENGINE_VERSION", "DiffusersRenderer", "checkpoint_kind", "default_device", "device_dtype"]
