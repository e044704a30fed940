"""WebUI extra-network tags: ``<lora:name:te:unet:dyn>`` and friends.

WebUI (``modules/extra_networks.py``) removes every ``<(\\w+):([^>]+)>`` tag from the prompt before
CLIP sees it and splits the arguments on ``:``; an argument ``k=v`` (split on the first ``=``) is a
named argument, anything else positional. ``extensions-builtin/Lora/extra_networks_lora.py`` reads
``<lora:...>`` (and its alias ``<lyco:...>``) as::

    name = positional[0]
    te   = positional[1] if present else 1.0,  then overridden by te=...
    unet = positional[2] if present else te,   then overridden by unet=...
    dyn  = positional[3] if present else None, then overridden by dyn=...

Tags of other types WebUI knows (``hypernet``) are removed and rejected here (storyboard does not
implement hypernetworks); unknown types are removed and ignored, as WebUI's "Skipping unknown extra
network" does. Only the first prompt of a WebUI batch is parsed for tags, and negative prompts are not
parsed at all (their tags reach CLIP as text): callers apply this to positive prompts only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from storyboard.errors import StoryboardError

TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_TYPES = frozenset({"lora", "lyco"})
UNSUPPORTED_TYPES = frozenset({"hypernet"})


def format_number(x: float) -> str:
    """A multiplier as a WebUI user writes it: 1 not 1.0, 0.8 not 0.8000000000000001.

    >>> format_number(1.0), format_number(0.8000000000000001), format_number(-0.0)
    ('1', '0.8', '0')
    """
    text = f"{x:.4f}".rstrip("0").rstrip(".")
    return text if text not in {"", "-0"} else "0"


@dataclass(frozen=True)
class LoraUse:
    """One LoRA use with WebUI's text-encoder and UNet multipliers.

    ``owner`` says who asked for it: "character:<id>", "style", or "prompt" (a tag written in a scene
    or template, as parsed here). ``ref`` is the file path or name the story gave, when it is not
    the tag name itself (a path is looked up as a path).
    """

    name: str
    te: float
    unet: float
    dyn: int | None = None
    owner: str = "prompt"
    ref: str | None = None

    def tag(self) -> str:
        """The ``<lora:...>`` text WebUI users write for this use (for shown prompts and infotext).

        >>> LoraUse("iku", 0.8, 0.8).tag(), LoraUse("iku", 1, 0.5).tag()
        ('<lora:iku:0.8>', '<lora:iku:1:0.5>')
        """
        if self.unet == self.te and self.dyn is None:
            return f"<lora:{self.name}:{format_number(self.te)}>"
        dyn = f":{self.dyn}" if self.dyn is not None else ""
        return f"<lora:{self.name}:{format_number(self.te)}:{format_number(self.unet)}{dyn}>"


def extract_extra_networks(text: str) -> tuple[str, list[LoraUse]]:
    """Remove extra-network tags from ``text``; return the cleaned text and the LoRA uses in order.

    Raises StoryboardError naming the tag when a multiplier is not a finite number, ``dyn`` is not an
    integer, the name is empty, or the tag asks for an unsupported network type.
    """
    uses: list[LoraUse] = []

    def found(m: re.Match[str]) -> str:
        kind, args = m.group(1), m.group(2)
        if kind in LORA_TYPES:
            uses.append(_lora_use(m.group(0), args.split(":")))
        elif kind in UNSUPPORTED_TYPES:
            raise StoryboardError(
                f"The prompt tag {m.group(0)} asks for a {kind}, which storyboard does not support.",
                hint="remove the tag, or use a LoRA instead",
            )
        return ""

    return TAG.sub(found, text), uses


def _lora_use(tag: str, items: list[str]) -> LoraUse:
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in items:
        parts = item.split("=", 1)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    if not positional or not positional[0].strip():
        raise StoryboardError(f"The prompt tag {tag} has no LoRA name.", hint="write it as <lora:name:1.0>")
    te = _number(tag, "te", positional[1]) if len(positional) > 1 else 1.0
    if "te" in named:
        te = _number(tag, "te", named["te"])
    unet = _number(tag, "unet", named["unet"]) if "unet" in named else None
    if unet is None:
        unet = _number(tag, "unet", positional[2]) if len(positional) > 2 else te
    dyn_raw = named.get("dyn", positional[3] if len(positional) > 3 else None)
    dyn: int | None = None
    if dyn_raw is not None:
        try:
            dyn = int(dyn_raw)
        except ValueError:
            raise StoryboardError(
                f"The prompt tag {tag} has dyn={dyn_raw!r}, which is not a whole number.",
                hint="dyn is the dimension cut-off for dynamic LoRAs, e.g. <lora:name:1:1:8>",
            ) from None
    return LoraUse(name=positional[0], te=te, unet=unet, dyn=dyn)


def _number(tag: str, what: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise StoryboardError(
            f"The prompt tag {tag} has {what} multiplier {raw!r}, which is not a finite number.",
            hint="write a number such as <lora:name:0.8> or <lora:name:te=0.5:unet=1>",
        )
    return value


def merge_lora_uses(uses: list[LoraUse]) -> list[LoraUse]:
    """Collapse repeated mentions of the same LoRA into one use with WebUI's effective weights.

    What WebUI does (``networks.load_networks`` + ``network_apply_weights``): each mention looks the
    network up by name, and every mention after the first gets the *same* cached ``Network`` object;
    its ``te_multiplier``/``unet_multiplier``/``dyn_dim`` are overwritten by each mention in turn, and
    the object is appended to ``loaded_networks`` once per mention. The weights are then patched by
    iterating over ``loaded_networks`` and reading the multipliers at that time, so a LoRA named
    ``n`` times is applied ``n`` times with the **last** mention's multipliers.

    Our rule, giving the same merged weights: one use per name (at its first position), with
    ``te = n * last.te``, ``unet = n * last.unet`` and ``dyn = last.dyn``. Names are compared exactly
    (WebUI keys its cache by the name as written, so two different aliases of one file count as two
    networks; resolving aliases is the LoRA registry's job).
    """
    order: list[str] = []
    count: dict[str, int] = {}
    last: dict[str, LoraUse] = {}
    for use in uses:
        if use.name not in count:
            order.append(use.name)
            count[use.name] = 0
        count[use.name] += 1
        last[use.name] = use
    return [
        replace(last[name], te=count[name] * last[name].te, unet=count[name] * last[name].unet)
        if count[name] > 1
        else last[name]
        for name in order
    ]
