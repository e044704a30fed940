"""A panel's img2img and inpaint as the planner hands them on (``PanelJob.img2img`` / ``inpaint``).

WebUI's img2img has no hires pass, so such a panel renders in one pass at the panel's final size
(the size its neighbours reach after hires). Its pictures are input images checked here, at
planning time, by the rules every input image follows (``story/inputs.py``): the init image
("init"), and the mask ("mask"), which must be the size of the picture it masks. An inpaint without
an init image starts from the panel's own render: ``base``, the same job without the inpaint, which
the build renders (or finds in the output folder's store) first.
"""

from __future__ import annotations

from dataclasses import replace

from PIL import Image

from storyboard.input_images import resolve_input_path
from storyboard.jobs import Img2ImgJob, InpaintJob, InputImage, PanelJob
from storyboard.story.direction import DEFAULT_DENOISING
from storyboard.story.inputs import panel_location, story_input_image
from storyboard.story.load import LoadedStory
from storyboard.story.schema import Panel


def img2img_job(loaded: LoadedStory, job: PanelJob, panel: Panel, problems: list[str]) -> PanelJob:
    """The job with the panel's img2img / inpaint (the job itself for a txt2img panel); a picture
    that cannot be used is a sentence in `problems` at its field's file:line."""
    if panel.init_image is None and panel.inpaint is None:
        return job
    here = panel_location(loaded, job.panel_id)
    inputs: list[InputImage] = []
    size: tuple[int, int] | None = job.output_size  # what a mask must match: the base render
    if panel.init_image is not None:
        init = story_input_image(
            loaded, (*here, "init_image"), panel.init_image, "init", problems, what="init image"
        )
        if init is None:
            size = None  # its size is unknown: the mask's size is not checked against it
        else:
            inputs.append(init)
            with Image.open(resolve_input_path(panel.init_image, loaded.base_dir)) as im:
                size = im.size
    inpaint = None
    if panel.inpaint is not None:
        ip = panel.inpaint
        if ip.mask is not None:
            mask = story_input_image(
                loaded, (*here, "inpaint", "mask"), ip.mask, "mask", problems, what="mask", size=size
            )
            inputs.extend([mask] if mask is not None else [])
        inpaint = InpaintJob(ip.box, ip.mask_blur, ip.masked_content, ip.inpaint_full_res, ip.padding)
    s = job.settings
    w, h = s.output_size
    strength = panel.denoising_strength if panel.denoising_strength is not None else DEFAULT_DENOISING
    # An inpaint's own seed varies the repainted part only: the base keeps the panel's seed.
    seed = panel.inpaint.seed if panel.inpaint is not None and panel.inpaint.seed is not None else job.seed
    return replace(
        job,
        seed=seed,
        settings=s.model_copy(update={"width": w, "height": h, "hires": None}),
        img2img=Img2ImgJob(strength, panel.resize_mode, s.img2img_fix_steps),
        inpaint=inpaint,
        base=job if panel.init_image is None else None,
        inputs=(*job.inputs, *inputs),
    )
