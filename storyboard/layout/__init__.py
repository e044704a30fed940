"""Page layout: templates, panel placement, lettering and PDF/CBZ/PNG output.

Pure given panel images: no GPU, works from draft panels too.
"""

from storyboard.layout.render import render_comic
from storyboard.layout.templates import Template, choose_template, get_template, list_templates
from storyboard.layout.types import (
    Balloon,
    BalloonPlacement,
    LayoutMeta,
    LayoutOutputs,
    LayoutPage,
    LayoutPanel,
    LayoutSettings,
    PanelPlacement,
    Rect,
)

__all__ = [
    "Balloon",
    "BalloonPlacement",
    "LayoutMeta",
    "LayoutOutputs",
    "LayoutPage",
    "LayoutPanel",
    "LayoutSettings",
    "PanelPlacement",
    "Rect",
    "Template",
    "choose_template",
    "get_template",
    "list_templates",
    "render_comic",
]
