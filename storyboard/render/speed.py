"""Speed paths around the UNet call: the attention backend, CUDA graph replay, torch.compile.

Why each exists (measured on one H200, docs/speed.md):

- Attention backend: at the hires pass (17,920 tokens, head size 40) attention is over half the
  UNet, and cuDNN attention runs it 1.7x faster than FlashAttention, which is what
  ``scaled_dot_product_attention`` picks by default. On CUDA, cuDNN attention is preferred (then
  flash, memory-efficient, math: whichever first supports the shapes). Set
  ``STORYBOARD_ATTENTION=default`` to let torch choose, e.g. to compare the two in the bench.
- CUDA graphs (``render.compile: cuda-graphs``): one UNet call at 448x640 with CFG is launch-bound
  (39 ms eager, 11.9 ms replayed); at batch 16 or at the hires size replay gains nothing. So only
  calls up to ``GRAPH_MAX_POSITIONS`` latent positions are captured, one graph per input shape;
  larger calls run eagerly. The LoRA patcher writes merged weights in place, so a replayed graph
  always sees the current LoRA set.
- torch.compile (``render.compile: inductor``): the bench measured 275 s of compiling for no gain
  at batch 4; it is here so a GPU session can measure it per shape, never on by default.

Neither of the last two is on by default: they give the same pixels only within float noise.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from storyboard.render.denoiser import unet_output

# Latent positions x images of the largest call replayed from a graph: 8 images (4 panels with
# CFG) at 448x640 (56x80 latent). Larger calls are compute-bound, where replay gains nothing.
GRAPH_MAX_POSITIONS = 8 * 56 * 80
MAX_GRAPHS = 8  # each graph keeps its activations; a story uses few shapes (batch sizes x passes)
COMPILE_MODES = ("off", "cuda-graphs", "inductor")
COMPILE_BACKEND = "inductor"  # tests swap in "aot_eager": the same path without a C++ build


@contextmanager
def attention_backend(device: torch.device) -> Iterator[None]:
    """Prefer cuDNN attention on CUDA (see the module docstring); elsewhere change nothing."""
    if device.type != "cuda" or os.environ.get("STORYBOARD_ATTENTION", "cudnn") != "cudnn":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    ]
    try:
        ctx = sdpa_kernel(order, set_priority=True)
    except TypeError:  # torch without set_priority: keep its default order rather than guess
        yield
        return
    with ctx:
        yield


class _UNetWrapper(torch.nn.Module):
    """A module standing in for the UNet: it keeps the wrapped UNet and reports its dtype, which the
    denoiser reads to cast its inputs."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = getattr(self.unet, "dtype")  # noqa: B009  # Module.__getattr__ is untyped
        return dtype


class GraphedUNet(_UNetWrapper):
    """Calls the UNet through a captured CUDA graph per input shape (see the module docstring).

    Same call signature as the diffusers UNet as ``CompVisDenoiser`` uses it; returns a tensor."""

    def __init__(self, unet: torch.nn.Module, max_positions: int = GRAPH_MAX_POSITIONS) -> None:
        super().__init__(unet)
        self.max_positions = max_positions
        self._graphs: OrderedDict[tuple[Any, ...], _Graph] = OrderedDict()

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        added_cond_kwargs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        positions = sample.shape[0] * sample.shape[-1] * sample.shape[-2]
        if sample.device.type != "cuda" or positions > self.max_positions:
            return unet_output(self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                       added_cond_kwargs=added_cond_kwargs))  # fmt: skip
        t = torch.as_tensor(timestep, device=sample.device).expand(sample.shape[0])
        inputs = {"sample": sample, "timestep": t, "encoder_hidden_states": encoder_hidden_states}
        for k, v in (added_cond_kwargs or {}).items():
            inputs[f"added.{k}"] = v
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in inputs.items())
        graph = self._graphs.get(key)
        if graph is None:
            graph = _Graph(self.unet, inputs)
            self._graphs[key] = graph
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return graph.replay(inputs)


class _Graph:
    """One captured UNet call: static input buffers, the graph, its static output."""

    def __init__(self, unet: torch.nn.Module, inputs: Mapping[str, Tensor]) -> None:
        self.unet = unet
        self.static = {k: v.detach().clone() for k, v in inputs.items()}
        # Warm up on a side stream (cuBLAS/cuDNN workspaces, lazy inits), as torch's docs require.
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.out = self._run()

    def _run(self) -> Tensor:
        s = self.static
        added = {k[len("added.") :]: v for k, v in s.items() if k.startswith("added.")}
        out = self.unet(s["sample"], s["timestep"], encoder_hidden_states=s["encoder_hidden_states"],
                        added_cond_kwargs=added or None)  # fmt: skip
        return unet_output(out)

    def replay(self, inputs: Mapping[str, Tensor]) -> Tensor:
        for k, v in inputs.items():
            self.static[k].copy_(v)
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites the static output


def compiled_unet(unet: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The UNet as the denoiser should call it under ``render.compile = mode``."""
    if mode == "off":
        return unet
    if mode == "cuda-graphs":
        return GraphedUNet(unet)
    if mode == "inductor":
        compile_fn: Callable[..., Any] = torch.compile
        # Static shapes: a story has few (batch sizes x two passes), each compiled once.
        compiled: torch.nn.Module = compile_fn(unet, backend=COMPILE_BACKEND, dynamic=False)
        return compiled
    raise ValueError(f"render.compile must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")


class ChunkedUNet(_UNetWrapper):
    """Runs a UNet call in chunks of ``chunk`` images (``render.low_memory``): with one panel per
    batch, the CFG halves then go through the UNet one after the other, as WebUI's
    ``--always-batch-cond-uncond`` off does, halving the activations' peak."""

    def __init__(self, unet: torch.nn.Module, chunk: int = 1) -> None:
        super().__init__(unet)
        self.chunk = chunk

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        added_cond_kwargs: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        n = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).expand(n)
        outs = []
        for i in range(0, n, self.chunk):
            part = slice(i, i + self.chunk)
            added = {k: v[part] for k, v in added_cond_kwargs.items()} if added_cond_kwargs else None
            out = self.unet(sample[part], t[part], encoder_hidden_states=encoder_hidden_states[part],
                            added_cond_kwargs=added)  # fmt: skip
            outs.append(unet_output(out))
        return torch.cat(outs)


def wrapped_unet(unet: torch.nn.Module, mode: str, low_memory: bool) -> torch.nn.Module:
    """The UNet as the denoiser should call it under ``render.compile`` and ``render.low_memory``."""
    inner = compiled_unet(unet, mode)
    return ChunkedUNet(inner) if low_memory else inner
