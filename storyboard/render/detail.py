"""The face detailer: each detected face re-drawn with its own character's prompt and LoRAs.

After a panel renders (``PanelJob.detail`` set), a ``FaceFinder`` (built by the app from the check's
detector and assignment: render/ never imports check/) says where the faces are and whose each is.
Then, as WebUI's ADetailer does for every box:

    mask       the detector's box, grown (or shrunk) by ``dilate_erode`` as ADetailer's square
               cv2 kernel of that size grows a rectangle                          (``adetailer_box``)
    inpaint    an inpaint job over the current picture (``face_job``): the character's face prompt
               and LoRA set (its own and the style's, never another character's), the panel's
               negative, its own seed (panel seed + 1 + the face's index, left to right, or the
               character's seed in ``detail.seeds``), ADetailer's
               denoising strength, mask blur and "only masked" padding, at the panel's size or
               inpaint_width x inpaint_height; rendered by the img2img path (``render/img2img.py``:
               crop with padding, resize, latent mask blend, paste back with the blurred mask)

Pixels outside every blurred mask keep their bytes (the paste-back keeps the picture there). A
detection with no character (or a character whose detail is off) is left alone and reported.

Batches: a face's inpaint reads and changes only its "only masked" region (the mask's box, blurred,
padded, grown to the processing aspect). A face whose region meets no other re-drawn face's region
therefore gives the same picture whether it runs before, after or beside the others, so such faces
are re-drawn together, as many per batch as the renderer batches panels (on a CPU one unless its
batch_size is set: then this is the one-at-a-time loop, bytes and all), and each result's region
copied into the picture (``face_batches``). The faces of a batch carry different LoRA sets; the
renderer shares the UNet calls by adding each face's own LoRAs to its rows (render/detail_batch.py).
Faces whose regions meet, and every face with "only masked" off, run one at a time, left to right,
each over the picture the ones before left. A batched face matches its one-at-a-time picture up to
UNet rounding (a call's bytes may depend on its batch size, and its own LoRAs are added unmerged).
Known difference from ADetailer: ADetailer gives every face of a unit the same seed, here each face
has its own (``detail.seeds`` can set one character's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from PIL import Image

from storyboard.jobs import MAX_SEED, DetailTarget, Img2ImgJob, InpaintJob, PanelJob

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive


@dataclass(frozen=True)
class Face:
    """One detection: its box (panel pixels), score, and the character it was given (None: nobody)."""

    box: Box
    score: float
    character: str | None


class FaceFinder(Protocol):
    """Detect and assign (the app builds it from check/): the faces of a rendered panel."""

    def identity(self, job: PanelJob) -> dict[str, str]:
        """What decides the boxes (model file hash, confidence), for the job hash."""
        ...

    def find(self, image: Image.Image, job: PanelJob) -> list[Face]: ...


@dataclass(frozen=True)
class DetailDone:
    image: Image.Image
    faces: tuple[tuple[Face, PanelJob], ...]  # each re-drawn face with the job that re-drew it
    left: tuple[Face, ...]  # detections left alone (no character of the panel)


def adetailer_box(box: Box, value: int, size: tuple[int, int]) -> Box:
    """The box mask after ADetailer's dilate/erode: cv2.dilate (value > 0) or erode (< 0) with a
    |value| x |value| kernel anchored at its centre, which moves the left/top edge by
    |value| - 1 - |value| // 2 and the right/bottom edge by |value| // 2; kept inside the picture.

    >>> adetailer_box((10, 10, 20, 20), 4, (64, 64))
    (9, 9, 22, 22)
    >>> adetailer_box((10, 10, 20, 20), -4, (64, 64))
    (12, 12, 19, 19)
    >>> adetailer_box((0, 0, 5, 5), 0, (64, 64))
    (0, 0, 5, 5)
    """
    k = abs(value)
    if k == 0:
        return box
    near, far = k - 1 - k // 2, k // 2
    if value < 0:
        # Erosion keeps a pixel only where the whole kernel is inside: the mirror of dilation.
        near, far = -far, -near
    w, h = size
    x0, y0, x1, y1 = box
    return max(0, x0 - near), max(0, y0 - near), min(w, x1 + far), min(h, y1 + far)


def face_seed(panel_seed: int, index: int) -> int:
    """Face `index`'s seed (faces counted left to right from 0): the panel's seed plus 1 + index."""
    return (panel_seed + 1 + index) % (MAX_SEED + 1)


def face_job(job: PanelJob, target: DetailTarget, box: Box, size: tuple[int, int], index: int) -> PanelJob:
    """The inpaint job that re-draws one face of `job`'s picture (`size`: its width, height)."""
    d = job.detail
    assert d is not None
    s = d.settings
    x0, y0, x1, y1 = adetailer_box(box, s.dilate_erode, size)
    w, h = size
    width, height = (s.inpaint_width, s.inpaint_height) if s.use_inpaint_width_height else size
    settings = job.settings.model_copy(
        update={
            "width": width,
            "height": height,
            "hires": None,
            "steps": s.steps if s.use_steps else job.settings.steps,
            "sampler": s.sampler if s.use_sampler else job.settings.sampler,
            "control": [],
        }
    )
    return replace(
        job,
        panel_id=f"{job.panel_id}#face{index}",
        positive=target.positive,
        loras=target.loras,
        # A seed the story gives this character's face (the review page's re-draw), else derived.
        seed=s.seeds.get(target.character, face_seed(job.seed, index)),
        settings=settings,
        characters=(target.character,),
        regions=(),
        shared_positive="",
        shared_loras=(),
        img2img=Img2ImgJob(s.denoising_strength),
        inpaint=InpaintJob(
            box=(x0 / w, y0 / h, x1 / w, y1 / h),
            mask_blur=s.mask_blur,
            full_res=s.inpaint_only_masked,
            padding=s.inpaint_only_masked_padding,
            keep_picture_size=True,
        ),
        base=None,
        inputs=(),
        control=(),
        detail=None,
    )


def face_region(fj: PanelJob, size: tuple[int, int]) -> Box | None:
    """The part of a `size` picture face job `fj` can change: its "only masked" region (the img2img
    path's own, ``img2img.inpaint_region``); None with "only masked" off (the whole picture)."""
    from storyboard.render.img2img import inpaint_region, input_mask  # torch: only when batching

    assert fj.img2img is not None and fj.inpaint is not None
    s = fj.settings
    return inpaint_region(fj.img2img, (s.width, s.height), fj.inpaint, input_mask(fj, size))[1]


def meets(a: Box, b: Box) -> bool:
    """Whether two regions (x1/y1 exclusive) share a pixel.

    >>> meets((0, 0, 10, 10), (10, 0, 20, 10)), meets((0, 0, 10, 10), (9, 9, 20, 20))
    (False, True)
    """
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def face_batches(regions: Sequence[Box | None], size: int) -> list[list[int]]:
    """Which faces (indices, left to right) re-draw together: a face whose region meets no other
    face's region starts from and changes only pixels nobody else touches, so it gives the same in a
    batch as in turn; those go in batches of `size`, first. The others (and every face without a
    region) follow one at a time, left to right, each over the picture the ones before left.

    >>> face_batches([(0, 0, 4, 4), (8, 0, 12, 4), (20, 0, 30, 4), (25, 0, 35, 4)], 2)
    [[0, 1], [2], [3]]
    >>> face_batches([None, (0, 0, 4, 4)], 4)
    [[0], [1]]
    """

    def alone(i: int) -> bool:
        r = regions[i]
        others = (o for j, o in enumerate(regions) if j != i)
        return r is not None and all(o is not None and not meets(r, o) for o in others)

    free = [i for i in range(len(regions)) if alone(i)]
    chunks = [free[k : k + size] for k in range(0, len(free), size)]
    return chunks + [[i] for i in range(len(regions)) if i not in free]


def run_detail(
    job: PanelJob,
    image: Image.Image,
    faces: Sequence[Face],
    redraw: Callable[[PanelJob, Image.Image], Image.Image],
    redraw_batch: Callable[[list[PanelJob], Image.Image], list[Image.Image]] | None = None,
    batch_size: Callable[[PanelJob, int], int] | None = None,
) -> DetailDone:
    """Re-draw each assigned face over the picture (``redraw`` renders one inpaint job over a
    picture and returns the whole picture; ``redraw_batch`` several over one picture, each result
    starting from it; ``batch_size`` says how many faces of a face job's kind one batch holds).
    With one per batch, left to right, one at a time; else as ``face_batches`` says, each batch's
    results copied in region by region."""
    d = job.detail
    assert d is not None
    targets = {t.character: t for t in d.targets}
    done: list[tuple[Face, PanelJob]] = []
    left: list[Face] = []
    for index, face in enumerate(sorted(faces, key=lambda f: (f.box[0], f.box[1]))):
        target = targets.get(face.character) if face.character is not None else None
        if target is None:
            left.append(face)
            continue
        done.append((face, face_job(job, target, face.box, image.size, index)))
    current = image
    size = 1 if batch_size is None or len(done) < 2 else batch_size(done[0][1], len(done))
    if size <= 1 or redraw_batch is None:
        for _, fj in done:
            current = redraw(fj, current)
        return DetailDone(current, tuple(done), tuple(left))
    regions = [face_region(fj, image.size) for _, fj in done]
    for group in face_batches(regions, size):
        if len(group) == 1:
            current = redraw(done[group[0]][1], current)
            continue
        outs = redraw_batch([done[i][1] for i in group], current)
        current = current.copy()
        for i, out in zip(group, outs, strict=True):
            box = regions[i]
            assert box is not None
            # Outside its region a face's picture is the one it started from: copy the region in.
            current.paste(out.crop(box), box[:2])
            current.info.update(out.info)
    return DetailDone(current, tuple(done), tuple(left))
