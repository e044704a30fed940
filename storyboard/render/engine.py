"""The diffusers render engine: PanelJobs in, WebUI-equivalent panels (with infotext) out.

diffusers only holds the UNet, VAE and CLIP modules; everything WebUI decides is ours. ``render()``
runs the steps of ``storyboard.render`` in order, as the diffusers pipelines number theirs:

    1. resolve       find and check every file, parse samplers        (render/resolve.py)
    2. condition     apply the LoRA set, encode prompts               (render/conditioning.py)
    3. timesteps, latents, denoise, hires fix                         (render/txt2img.py)
    4. decode                                                         (render/decode.py)
    5. infotext                                                       (render/infotext.py)

Panels are grouped by everything but prompt and seed (render/batching.py), so one LoRA merge serves
a group, and batched only with panels whose prompts have the same CLIP chunk counts, so a panel
renders the same alone or in a batch (WebUI pads shorter prompts of a batch, which changes them).
Files are found and checked when the renderer checks its jobs, before anything loads; the model
loads on the first render.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from storyboard.errors import StoryboardError
from storyboard.jobs import PanelJob, RenderedPanel, RenderIdentity
from storyboard.render.batching import estimate_batch_size, group_jobs
from storyboard.render.conditioning import (
    PanelConds,
    RegionalConds,
    apply_lora_set,
    encode_job,
    encode_regional,
    prompt_encoder,
)
from storyboard.render.control.runtime import ControlNets
from storyboard.render.decode import set_always_tiled
from storyboard.render.denoiser import CompVisDenoiser
from storyboard.render.detail import FaceFinder
from storyboard.render.infotext import panel_infotext
from storyboard.render.progress import RenderProgress, progress_enabled
from storyboard.render.resolve import ENGINE_VERSION, ResolvedJob, ResolvedModels, Resolver
from storyboard.render.speed import attention_backend, wrapped_unet
from storyboard.render.txt2img import LoadedModel, needs_shared_prompt, render_batch
from storyboard.render.upscale import UpscalerModel, load_upscaler


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


def _channels_last(module: torch.nn.Module) -> None:
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs omit the kwarg


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
        self.resolver = Resolver(self.base_dir, self.device, self.dtype)
        self._model: LoadedModel | None = None
        self._loaded_key: tuple[object, object] | None = None
        self._oom_cap: int | None = None
        self._upscaler: UpscalerModel | None = None
        self._speed: tuple[str, bool] = ("off", False)  # (render.compile, render.low_memory) in use
        self.controlnets = ControlNets()  # loaded ControlNet models, by file
        # The face detailer's detector and assignment, set by the app when a job has `detail`.
        self.face_finder: FaceFinder | None = None

    # Step 1: resolve -----------------------------------------------------------------------------

    def check(self, jobs: Sequence[PanelJob]) -> None:
        """Find and check every file the jobs need; raises ModelError/StoryboardError on a problem."""
        for job in jobs:
            self.resolver.resolve_job(job)
            if job.detail is not None and self.face_finder is None:
                raise StoryboardError(f"panel {job.panel_id}: the face detailer is on but has no detector.")

    def resolve(self, job: PanelJob) -> ResolvedJob:
        return self.resolver.resolve_job(job)

    def identity(self, job: PanelJob) -> RenderIdentity:
        ident = self.resolver.identity(self.resolve(job))
        if job.detail is not None and self.face_finder is not None:
            ident = replace(ident, detector=self.face_finder.identity(job))
        return ident

    def infotext(self, job: PanelJob) -> str:
        rj = self.resolve(job)
        return panel_infotext(rj, self.resolver, self.resolver.used_embeddings(rj))

    @property
    def model(self) -> LoadedModel:
        """The loaded checkpoint (for tests and benches); a render loads it first."""
        if self._model is None:
            raise RuntimeError("no model is loaded yet: render a job first")
        return self._model

    # Loading -----------------------------------------------------------------------------------

    def _ensure_loaded(self, models: ResolvedModels, allow_pickle: bool) -> LoadedModel:
        key = (models.checkpoint.path, models.vae.path if models.vae else None)
        if self._model is not None and self._loaded_key == key:
            return self._model
        self.unload()
        from storyboard.models.load import load_pipeline_components
        from storyboard.models.lora import LoraPatcher

        comps = load_pipeline_components(
            models.checkpoint.path,
            device=self.device,
            dtype=self.dtype,
            vae=models.vae.path if models.vae else None,
            allow_pickle=allow_pickle,
        )
        if self.device.type == "cuda":
            # cuDNN's convolutions run faster on NHWC; same numbers, so hashes need not change.
            _channels_last(comps.unet)
            _channels_last(comps.vae)
        modules = {"unet": comps.unet, "text_encoder": comps.text_encoder}
        if comps.text_encoder_2 is not None:
            modules["text_encoder_2"] = comps.text_encoder_2
        patcher = LoraPatcher(modules, model_kind=models.kind)
        den = CompVisDenoiser(comps.unet, comps.alphas_cumprod, prediction_type=comps.prediction_type)
        # Move only the sigma tables: the UNet is already on its device and dtype.
        den.alphas_cumprod = den.alphas_cumprod.to(self.device)
        den.sigmas = den.sigmas.to(self.device)
        self._model = LoadedModel(comps, patcher, den, self.device)
        self._loaded_key = key
        self._speed = ("off", False)
        return self._model

    def _apply_speed(self, model: LoadedModel, rj: ResolvedJob) -> None:
        """Wrap the UNet the denoiser calls for render.compile / render.low_memory (speed.py)."""
        want = (rj.settings.compile, rj.settings.low_memory)
        if want == self._speed:
            return
        model.denoiser.unet = wrapped_unet(model.components.unet, *want)
        set_always_tiled(model.components.vae, want[1])
        self._speed = want

    def _load_upscaler(self, rj: ResolvedJob) -> UpscalerModel | None:
        f = rj.upscaler
        if f is None:
            return None
        if self._upscaler is None or self._upscaler.path != f.path:
            self._upscaler = None  # free the old one first
            self._upscaler = load_upscaler(
                f.path, allow_pickle=rj.settings.allow_pickle, device=self.device, dtype=self.dtype
            )
        return self._upscaler

    def unload(self) -> None:
        """Restore LoRA-free weights and drop the loaded model."""
        if self._model is not None:
            self._model.patcher.release()
        self._model = self._upscaler = None
        self._loaded_key = None
        self.controlnets.clear()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def restore_loras(self) -> None:
        """Put the base weights back (bit-exact); the next render re-applies what it needs."""
        if self._model is not None:
            self._model.patcher.restore()

    # Rendering ---------------------------------------------------------------------------------

    def render(self, jobs: Sequence[PanelJob]) -> Iterator[RenderedPanel]:
        """Render the jobs group by group, yielding each panel as soon as its batch is decoded."""
        jobs = list(jobs)
        if not jobs:
            return
        self.check(jobs)
        with RenderProgress(len(jobs), progress_enabled(self.quiet)) as progress:
            for group in group_jobs(jobs):
                if group[0].regions:
                    # A regional group is one panel, but candidates give it several seeds: each job.
                    panels: Iterator[RenderedPanel] = (
                        p for job in group for p in self._render_regional(self.resolve(job), progress)
                    )
                else:
                    panels = self._render_group([self.resolve(j) for j in group], progress)
                for panel in panels:
                    yield self._detailed(panel) if panel.job.detail is not None else panel

    def _detailed(self, panel: RenderedPanel) -> RenderedPanel:
        """The panel after the face detailer (render/detail.py); the LoRA set of the panel's group
        is put back after, for the panels of the group still to come."""
        from storyboard.render.detail_pass import detail_panel

        assert self.face_finder is not None
        t0 = time.perf_counter()
        out = detail_panel(self, panel, self.face_finder)
        if not panel.job.regions:
            apply_lora_set(self.model.patcher, self.resolve(panel.job))
        return replace(out, seconds=panel.seconds + time.perf_counter() - t0)

    def redraw(self, job: PanelJob, picture: Image.Image) -> Image.Image:
        """One inpaint job over `picture` (a face of the detailer): its own LoRA set and prompts."""
        from storyboard.render.img2img import render_img2img

        rj = self.resolve(job)
        model = self._ensure_loaded(rj.models, rj.settings.allow_pickle)
        self._apply_speed(model, rj)
        apply_lora_set(model.patcher, rj)
        encoder = prompt_encoder(model.components, rj.models.embeddings, rj.settings.clip_skip)
        conds = encode_job(rj, encoder, self.device)
        with RenderProgress(1, False) as progress, attention_backend(self.device):
            return render_img2img(model, rj, conds, progress, self._stage, picture=picture)

    def redraw_batch(self, jobs: list[PanelJob], picture: Image.Image) -> list[Image.Image]:
        """Face jobs over one picture, as many per UNet call as can share one, each under its own
        LoRA set (render/detail_batch.py); each result starts from `picture`."""
        from storyboard.render.detail_batch import redraw_faces

        rjs = [self.resolve(j) for j in jobs]
        model = self._ensure_loaded(rjs[0].models, rjs[0].settings.allow_pickle)
        self._apply_speed(model, rjs[0])
        with attention_backend(self.device):
            return redraw_faces(model, rjs, picture, self._stage)

    def face_batch_size(self, job: PanelJob, faces: int) -> int:
        """Faces of the detailer per batch: as panels per batch (on a CPU 1 unless batch_size is set)."""
        return self._batch_size(self.resolve(job), faces)

    def _render_regional(self, rj: ResolvedJob, progress: RenderProgress) -> Iterator[RenderedPanel]:
        """One regional panel: each region's prompt encoded and sampled under its own LoRA set."""
        with self._stage("load"):
            model = self._ensure_loaded(rj.models, rj.settings.allow_pickle)
            self._apply_speed(model, rj)
        encoder = prompt_encoder(model.components, rj.models.embeddings, rj.settings.clip_skip)
        with self._stage("encode"):
            shared = needs_shared_prompt(rj)
            rc = encode_regional(rj, self.resolver, model.patcher, encoder, self.device, shared)
        cond = {rj.job.panel_id: rc.panel}
        yield from self._render_same_shape(model, [rj], cond, progress, rc)

    def _render_group(self, group: list[ResolvedJob], progress: RenderProgress) -> Iterator[RenderedPanel]:
        first = group[0]
        with self._stage("load"):
            model = self._ensure_loaded(first.models, first.settings.allow_pickle)
            self._apply_speed(model, first)
        with self._stage("lora"):
            apply_lora_set(model.patcher, first)
        # Built after the LoRA merge: text-encoder LoRA weights are in the encoder's weights now.
        encoder = prompt_encoder(model.components, first.models.embeddings, first.settings.clip_skip)
        with self._stage("encode"):
            conds = {rj.job.panel_id: encode_job(rj, encoder, self.device) for rj in group}
        # Batch only panels whose conds have equal lengths, so no panel is padded by its neighbours.
        by_shape: dict[tuple[int, ...], list[ResolvedJob]] = {}
        for rj in group:
            by_shape.setdefault(conds[rj.job.panel_id].shape_key, []).append(rj)
        for same in by_shape.values():
            yield from self._render_same_shape(model, same, conds, progress)

    def _render_same_shape(
        self,
        model: LoadedModel,
        pending: list[ResolvedJob],
        conds: dict[str, PanelConds],
        progress: RenderProgress,
        regional: RegionalConds | None = None,
    ) -> Iterator[RenderedPanel]:
        upscaler = self._load_upscaler(pending[0])
        while pending:
            size = self._batch_size(pending[0], len(pending))
            batch = pending[:size]
            t0 = time.perf_counter()
            try:
                with attention_backend(self.device):
                    images = render_batch(
                        model, batch, [conds[rj.job.panel_id] for rj in batch], progress, self._stage,
                        upscaler, regional, self.controlnets,
                    )  # fmt: skip
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
            for rj, image in zip(batch, images, strict=True):
                info = panel_infotext(rj, self.resolver, self.resolver.used_embeddings(rj))
                yield RenderedPanel(rj.job, image, info, seconds)

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

    def _batch_size(self, rj: ResolvedJob, pending: int) -> int:
        if rj.settings.low_memory:
            size = 1  # one image's activations at a time; an explicit batch_size is for benches
        elif self.batch_size is not None:
            size = self.batch_size
        elif self.device.type != "cuda":
            size = 1
        else:
            free, _total = torch.cuda.mem_get_info(self.device)
            w, h = rj.settings.output_size
            size = estimate_batch_size(free, w, h, half=self.dtype == torch.float16)
        if self._oom_cap is not None:
            size = min(size, self._oom_cap)
        return max(1, min(size, pending))


__all__ = ["ENGINE_VERSION", "DiffusersRenderer", "default_device", "device_dtype"]
