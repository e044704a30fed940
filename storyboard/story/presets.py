"""Family presets for ``render.preset``: the quality and negative tags, clip skip and size each model
family's users write, filled into the render settings the story leaves unset.

A preset only fills gaps: any field the story (or a panel) sets wins. The values are the families'
published recommendations as their users type them into WebUI:

- ``pony``: Pony Diffusion V6 XL's score tags (its card asks for the full ``score_9, score_8_up, ...``
  chain) and the low scores as negative; clip skip 2 as its card says.
- ``illustrious``: Illustrious-XL's quality tags; SDXL portrait bucket.
- ``noobai``: NoobAI-XL's quality and year/aesthetic tags (``newest``, ``very awa``) and its
  negative list; for its v-prediction builds the ``v_pred``/``ztsnr`` markers do the rest.
- ``sd15-anime``: the SD1.5 anime workflow (AnythingV5 and friends): clip skip 2, 512x768.

For SDXL, WebUI ignores clip skip unless "sdxl_clip_l_skip" is on; the value is still written into
the infotext, as it is when a Pony user sets it.
"""

from __future__ import annotations

from typing import Any, Literal

PresetName = Literal["illustrious", "noobai", "pony", "sd15-anime"]

PRESETS: dict[str, dict[str, Any]] = {
    "pony": {
        "quality": "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up",
        "negative": "score_6, score_5, score_4",
        "clip_skip": 2,
        "width": 832,
        "height": 1216,
    },
    "illustrious": {
        "quality": "masterpiece, best quality, amazing quality, very aesthetic, absurdres",
        "negative": "worst quality, low quality, lowres, bad anatomy, bad hands, jpeg artifacts, "
        "signature, watermark, username",
        "clip_skip": 1,
        "width": 832,
        "height": 1216,
    },
    "noobai": {
        "quality": "masterpiece, best quality, newest, absurdres, highres, very awa",
        "negative": "worst quality, old, early, low quality, lowres, signature, username, logo, "
        "bad hands, mutated hands",
        "clip_skip": 1,
        "width": 832,
        "height": 1216,
    },
    "sd15-anime": {
        "quality": "(masterpiece), (best quality)",
        "negative": "(worst quality, low quality:1.4)",
        "clip_skip": 2,
        "width": 512,
        "height": 768,
    },
}


def with_preset(data: Any) -> Any:
    """Render settings as written, with the named preset's values for every field they leave out.

    >>> with_preset({"preset": "pony", "width": 1024})["width"], with_preset({"preset": "pony"})["width"]
    (1024, 832)
    >>> with_preset({"steps": 20})
    {'steps': 20}
    """
    if not isinstance(data, dict):
        return data
    name = data.get("preset")
    values = PRESETS.get(name) if isinstance(name, str) else None
    if values is None:
        return data  # no preset, or an unknown name: the field's own validation says which exist
    return {**values, **data}
