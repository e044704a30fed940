"""Step 1 of a render: find and check every file a job names, once, before anything loads.

``Resolver.resolve_job(job)`` turns a PanelJob into a ResolvedJob: checkpoint, VAE, LoRA files (each
kept with the use that asked for it, owner included), the embeddings the model family can use, the
hires upscaler file, and the first-pass and hires samplers parsed once. Pickle files go through the
one pickle gate; a LoRA trained for another model family is refused here. The render identity (file
hashes that decide pixels) is computed from the same resolution.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from storyboard.errors import ModelError, StoryboardError
from storyboard.jobs import HiresFix, LoraUse, PanelJob, RenderIdentity, RenderSettings
from storyboard.models.family import ModelFamily, checkpoint_family
from storyboard.models.hashes import lora_hash, sha256_file
from storyboard.models.pickle_gate import refuse_pickle
from storyboard.models.registry import ModelFile, ModelFolders, Registry, safetensors_header
from storyboard.prompt.chunks import EmbeddingIndex, tokenize_prompt
from storyboard.prompt.embeddings import Embedding, load_embedding
from storyboard.prompt.extra_networks import extract_extra_networks
from storyboard.render.hires import LATENT_UPSCALERS, PIXEL_UPSCALERS_WITHOUT_MODEL, is_latent_upscaler
from storyboard.render.sampling import SCHEDULE_LABELS, SamplerSpec, parse_sampler_name

# Bump when a change in render/ changes pixels for the same inputs: cached panels then re-render.
ENGINE_VERSION = "storyboard-kdiffusion-1"

# WebUI's display names for the Real-ESRGAN models it ships, by the file stem each one loads.
UPSCALER_DISPLAY_NAMES = {
    "R-ESRGAN 4x+": "RealESRGAN_x4plus",
    "R-ESRGAN 4x+ Anime6B": "RealESRGAN_x4plus_anime_6B",
    "R-ESRGAN 2x+": "RealESRGAN_x2plus",
    "ESRGAN_4x": "ESRGAN_4x",
}


@dataclass(frozen=True)
class ResolvedModels:
    """The base-model files one job's settings name, found and checked."""

    checkpoint: ModelFile
    vae: ModelFile | None
    kind: str | None
    embeddings: dict[str, Embedding]
    registry: Registry
    family: ModelFamily | None = None  # from the checkpoint's header: SDXL family, v_pred/ztsnr markers


@dataclass(frozen=True)
class ResolvedLora:
    use: LoraUse
    file: ModelFile


@dataclass(frozen=True)
class ResolvedJob:
    """A PanelJob with everything render/ needs decided: files, samplers, LoRA files by use."""

    job: PanelJob
    models: ResolvedModels
    loras: tuple[ResolvedLora, ...]  # the whole-panel set (job.lora_set), in order
    spec: SamplerSpec
    hr_spec: SamplerSpec | None
    upscaler: ModelFile | None
    controls: tuple[ModelFile, ...] = ()  # each ControlNet unit's file, in unit order
    annotators: dict[str, Path] = field(default_factory=dict)  # annotator file by preprocessor name

    @property
    def settings(self) -> RenderSettings:
        return self.job.settings


def checkpoint_kind(path: Path) -> str | None:
    """Kind ("sd1"/"sdxl") from a checkpoint's tensor names (header only), None when unknowable unloaded."""
    if path.is_dir():
        return "sdxl" if (path / "text_encoder_2").is_dir() else "sd1"
    if path.suffix.lower() != ".safetensors":
        return None
    from storyboard.models.load import detect_kind

    keys = {k for k in safetensors_header(path) if k != "__metadata__"}
    return detect_kind(keys, path)


def model_folders(settings: RenderSettings, base_dir: Path) -> ModelFolders:
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


def hires_spec(spec: SamplerSpec, sampler: str | None) -> SamplerSpec:
    """The hires pass's sampler: its own when given (with its own schedule suffix, else the first
    pass's schedule type, as WebUI's "Use same scheduler"), else the first pass's."""
    if not sampler:
        return spec
    own = parse_sampler_name(sampler)
    if own.schedule != "automatic":
        return own
    return parse_sampler_name(sampler, SCHEDULE_LABELS[spec.schedule])


def sampler_specs(settings: RenderSettings) -> tuple[SamplerSpec, SamplerSpec | None]:
    """Both passes' samplers, parsed once; hires settings that cannot work are refused here."""
    spec = parse_sampler_name(settings.sampler, settings.schedule)
    hr = settings.hires
    if hr is None:
        return spec, None
    check_denoising(hr)
    return spec, hires_spec(spec, hr.sampler)


def check_denoising(hr: HiresFix) -> None:
    if hr.denoising_strength <= 0:
        raise StoryboardError(
            f"Hires denoising strength is {hr.denoising_strength}; it must be above 0.",
            hint="use e.g. 0.7 (WebUI's default), or remove the hires block",
        )


def needs_upscaler_model(name: str) -> bool:
    """True when a hires upscaler name means a model file (not a latent mode nor plain Lanczos)."""
    return not is_latent_upscaler(name) and name not in PIXEL_UPSCALERS_WITHOUT_MODEL


def hires_prompt(job: PanelJob) -> str:
    hr = job.settings.hires
    if hr is not None and hr.prompt:
        return extract_extra_networks(hr.prompt)[0]
    return job.prompt_text


def hires_negative(job: PanelJob) -> str:
    hr = job.settings.hires
    return hr.negative if hr is not None and hr.negative else job.negative


def crop_marker(rj: ResolvedJob) -> str:
    """'+cncrop' for an "only masked" inpaint with ControlNet units: their maps are now cut to the
    inpaint's crop, so such panels rendered before re-render (no other panel's hash moves)."""
    job = rj.job
    return "+cncrop" if job.inpaint is not None and job.inpaint.full_res and job.control else ""


def uses_ztsnr(rj: ResolvedJob) -> bool:
    """Whether the job samples on the zero-terminal-SNR schedule: the story's ``ztsnr`` setting,
    else the checkpoint's marker."""
    s = rj.settings
    if s.ztsnr is not None:
        return s.ztsnr
    return rj.models.family is not None and rj.models.family.ztsnr


def prompt_texts(job: PanelJob) -> list[str]:
    """Every text the job encodes, negative first (WebUI encodes the negative first)."""
    texts = [job.negative, job.prompt_text]
    if job.settings.hires is not None:
        texts += [hires_negative(job), hires_prompt(job)]
    return texts


def find_checkpoint(settings: RenderSettings, reg: Registry) -> ModelFile:
    """The checkpoint the settings name, through the pickle gate."""
    f = reg.find_checkpoint(settings.model)
    refuse_pickle(f.path, allow_pickle=settings.allow_pickle, what="checkpoint")
    return f


def find_vae(settings: RenderSettings, reg: Registry) -> ModelFile | None:
    """The external VAE the settings name (None: the checkpoint's own), through the pickle gate."""
    if not settings.vae:
        return None
    f = reg.find_vae(settings.vae)
    refuse_pickle(f.path, allow_pickle=settings.allow_pickle, what="VAE")
    return f


class Resolver:
    """Finds files for jobs, with caches so a story's hundred panels look each file up once."""

    def __init__(self, base_dir: Path, device: torch.device, dtype: torch.dtype) -> None:
        self.base_dir = base_dir
        self.device = device
        self.dtype = dtype
        self._registries: dict[str, Registry] = {}
        self._models: dict[str, ResolvedModels] = {}
        self._loras: dict[tuple[int, str], ModelFile] = {}
        self._jobs: dict[int, tuple[PanelJob, ResolvedJob]] = {}
        self._hashes: dict[Path, str] = {}
        self._lora_hashes: dict[Path, str] = {}
        # Keyed by id() of a ResolvedModels.embeddings dict, which lives as long as self._models.
        self._embedding_index: dict[int, EmbeddingIndex] = {}

    def registry(self, settings: RenderSettings) -> Registry:
        key = f"{settings.webui_root}|{settings.folders.model_dump_json()}"
        if key not in self._registries:
            self._registries[key] = Registry(model_folders(settings, self.base_dir), base_dir=self.base_dir)
        return self._registries[key]

    def models(self, settings: RenderSettings) -> ResolvedModels:
        key = f"{settings.model}|{settings.vae}|{settings.webui_root}|{settings.folders.model_dump_json()}"
        hit = self._models.get(key)
        if hit is not None:
            return hit
        reg = self.registry(settings)
        ckpt = find_checkpoint(settings, reg)
        vae = find_vae(settings, reg)
        kind = checkpoint_kind(ckpt.path)
        family = checkpoint_family(ckpt.path)
        resolved = ResolvedModels(ckpt, vae, kind, self._embeddings(reg, settings, kind), reg, family)
        self._models[key] = resolved
        return resolved

    def resolve_job(self, job: PanelJob) -> ResolvedJob:
        """The job with every file found and checked and its samplers parsed (cached per job)."""
        hit = self._jobs.get(id(job))
        if hit is not None and hit[0] is job:
            return hit[1]
        spec, hr_spec = sampler_specs(job.settings)
        models = self.models(job.settings)
        loras = tuple(ResolvedLora(u, self.lora_file(job.settings, u, models)) for u in job.lora_set)
        upscaler = self.upscaler_file(job.settings, models.registry)
        controls: tuple[ModelFile, ...] = ()
        annotators: dict[str, Path] = {}
        if job.control:
            from storyboard.render.control.files import resolve_controls

            controls, annotators = resolve_controls(job, models.registry, models.kind)
        resolved = ResolvedJob(job, models, loras, spec, hr_spec, upscaler, controls, annotators)
        self._jobs[id(job)] = (job, resolved)
        return resolved

    def _embeddings(self, reg: Registry, settings: RenderSettings, kind: str | None) -> dict[str, Embedding]:
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

    def lora_file(self, settings: RenderSettings, use: LoraUse, models: ResolvedModels) -> ModelFile:
        return self.find_lora(settings, use, models.registry, models.kind)

    def find_lora(self, settings: RenderSettings, use: LoraUse, reg: Registry, kind: str | None) -> ModelFile:
        """The LoRA file a use names (its path when the story gave one), checked against `kind`."""
        ref = use.ref or use.name
        key = (id(reg), ref)
        hit = self._loras.get(key)
        if hit is not None:
            return hit
        from storyboard.models.lora import check_compatible, read_lora

        f = reg.find_lora(ref)
        refuse_pickle(f.path, allow_pickle=settings.allow_pickle, what="LoRA")
        check_compatible(read_lora(f.path, allow_pickle=settings.allow_pickle), kind)
        self._loras[key] = f
        return f

    def upscaler_file(self, settings: RenderSettings, reg: Registry) -> ModelFile | None:
        """The hires upscaler's model file, or None for latent/Lanczos upscaling."""
        hr = settings.hires
        if hr is None or not needs_upscaler_model(hr.upscaler):
            return None
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
        refuse_pickle(f.path, allow_pickle=settings.allow_pickle, what="upscaler")
        return f

    # Identity ----------------------------------------------------------------------------------

    def sha(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path) if path.is_file() else _folder_digest(path)
        return self._hashes[path]

    def lora_hash(self, path: Path) -> str:
        # lora_hash() re-reads the whole file when it has no stored hash: remember it per path.
        if path not in self._lora_hashes:
            self._lora_hashes[path] = lora_hash(path)
        return self._lora_hashes[path]

    def identity(self, rj: ResolvedJob) -> RenderIdentity:
        """File hashes and engine facts that decide the job's pixels beyond its own settings."""
        loras = {r.use.name: r.file for r in rj.loras}
        return RenderIdentity(
            renderer="diffusers",
            # Panels of ztsnr-marked checkpoints rendered before the marker was honoured re-render.
            version=ENGINE_VERSION + ("+ztsnr" if uses_ztsnr(rj) else "") + crop_marker(rj),
            model=self.sha(rj.models.checkpoint.path),
            vae=self.sha(rj.models.vae.path) if rj.models.vae else None,
            lora_hashes={n: self.lora_hash(f.path) for n, f in loras.items()},
            lora_files={n: self.sha(f.path) for n, f in loras.items()},
            embeddings={e.name: e.shorthash for e in self.used_embeddings(rj)},
            upscaler=self.sha(rj.upscaler.path) if rj.upscaler else None,
            device=f"{self.device.type}/{str(self.dtype).removeprefix('torch.')}",
            # An annotator's file decides its map: only panels with that preprocessor re-render
            # when it changes.
            control_files={f.name: self.sha(f.path) for f in rj.controls}
            | {f"annotator {m}": self.sha(p) for m, p in rj.annotators.items()},
        )

    def used_embeddings(self, rj: ResolvedJob) -> list[Embedding]:
        """Embeddings the job's prompts use (negative first, as WebUI encodes it first)."""
        embeddings = rj.models.embeddings
        if not embeddings:
            return []
        from storyboard.prompt.tokenizer import load_clip_tokenizer

        tokenizer = load_clip_tokenizer()
        index = self._embedding_index.get(id(embeddings))
        if index is None:
            index = self._embedding_index[id(embeddings)] = EmbeddingIndex(tokenizer, embeddings)
        used: dict[str, Embedding] = {}
        for text in prompt_texts(rj.job):
            for chunk in tokenize_prompt(text, tokenizer, index):
                for _, emb in chunk.embeddings:
                    used.setdefault(emb.name, emb)
        return list(used.values())


def _folder_digest(folder: Path) -> str:
    """A diffusers folder's identity: the sha256 of its weight files' sha256s, by relative path."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()
