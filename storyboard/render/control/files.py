"""A job's ControlNet units before anything loads: each model file found (by name in WebUI's
``models/ControlNet`` or the extension's ``extensions/sd-webui-controlnet/models``, or by path),
through the pickle gate, its layout and family checked against the checkpoint; the annotator file
of a preprocessor that needs downloaded weights found (or a sentence naming it and the fetch
command). Also the units' infotext lines, in the extension's ``ControlNet N`` format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from storyboard.errors import ModelError
from storyboard.jobs import BUILTIN_MODULES, ControlUnit, PanelJob, RenderSettings
from storyboard.models.controlnet import check_family, inspect_controlnet, short_hash
from storyboard.models.pickle_gate import refuse_pickle
from storyboard.models.registry import ModelFile, Registry

# "control_v11p_sd15_openpose [cab727d4]", as the extension's dropdown (and infotext) names a model.
_TITLE = re.compile(r"^(.*?)\s*\[[0-9a-fA-F]{8,10}\]$")


def check_module(unit: ControlUnit) -> tuple[Path, ...]:
    """The unit's annotator files when its preprocessor needs them (found, nothing loaded); a
    preprocessor not run here, or one whose files are missing, is a sentence saying what to do."""
    if unit.module in BUILTIN_MODULES:
        return ()
    from storyboard.render.control.annotators import check_annotator

    return check_annotator(unit.module)


def find_controlnet(
    unit: ControlUnit, settings: RenderSettings, reg: Registry, kind: str | None
) -> ModelFile:
    """The unit's ControlNet file, checked (layout, family, pickle gate)."""
    m = _TITLE.match(unit.model)
    name = m.group(1) if m else unit.model
    f = reg.find_controlnet(name)
    refuse_pickle(f.path, allow_pickle=settings.allow_pickle, what="ControlNet")
    info = inspect_controlnet(f.path, allow_pickle=settings.allow_pickle)
    check_family(info, kind)
    return f


def resolve_controls(
    job: PanelJob, reg: Registry, kind: str | None
) -> tuple[tuple[ModelFile, ...], dict[str, Path]]:
    """Every unit's file, in unit order, and the annotator files of each preprocessor that needs
    them, by preprocessor name (one file) or ``name/file`` (several; raises on the first problem)."""
    out = []
    annotators: dict[str, Path] = {}
    for unit in job.control:
        paths = check_module(unit)
        for p in paths:
            annotators[unit.module if len(paths) == 1 else f"{unit.module}/{p.name}"] = p
        out.append(find_controlnet(unit, job.settings, reg, kind))
    return tuple(out), annotators


def _value(v: object) -> str:
    return str(v)


def unit_infotext(unit: ControlUnit, title: str) -> str:
    """One unit as the extension's ``serialize_unit`` writes it: its fields as "Display Name: value",
    hidden sliders (no threshold for this module) left out."""
    a, b = unit.thresholds
    fields: list[tuple[str, object | None]] = [
        ("Module", unit.module),
        ("Model", title),
        ("Weight", float(unit.weight)),
        ("Resize Mode", unit.resize_mode),
        ("Processor Res", unit.processor_res),
        ("Threshold A", a),
        ("Threshold B", b),
        ("Guidance Start", float(unit.guidance_start)),
        ("Guidance End", float(unit.guidance_end)),
        ("Pixel Perfect", unit.pixel_perfect),
        ("Control Mode", unit.control_mode),
        ("Hr Option", "Both"),
    ]
    return ", ".join(f"{k}: {_value(v)}" for k, v in fields if v is not None)


def control_infotext(units: Sequence[ControlUnit], files: Sequence[ModelFile]) -> dict[str, object]:
    """``ControlNet 0``, ``ControlNet 1``...: each unit's line with its model as ``name [hash]``."""
    out: dict[str, object] = {}
    for k, (unit, f) in enumerate(zip(units, files, strict=True)):
        try:
            title = f"{f.name} [{short_hash(f.path)}]"
        except (OSError, ModelError):
            title = f.name
        out[f"ControlNet {k}"] = unit_infotext(unit, title)
    return out
