"""Fast inference of a shipped generator: CUDA-graph replay or ``torch.compile``, eager on the CPU.

A pruned student is small, so at batch 1 a GPU spends more time launching its many small kernels
than running them; replaying one captured CUDA graph launches them all at once. The graph is
captured for one input shape, on static input and output buffers: a call copies its input into
the static input, replays, and returns the static output, which the next call overwrites.

Modes (:data:`MODES`):

- ``eager``: the module as it is (with the bf16 / channels_last options on CUDA);
- ``cuda_graph``: eager kernels captured once into a CUDA graph (``torch.cuda.graph``), after
  warm-up runs on the capture stream (cuDNN autotuning and the allocator settle there);
- ``compile``: ``torch.compile`` (inductor) with its own CUDA graphs (``mode="reduce-overhead"``).

On the CPU every mode runs plain eager fp32: CUDA graphs do not exist there and the options are
GPU speed-ups, so the fallback is logged rather than refused.
"""
from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

MODES = ("eager", "cuda_graph", "compile")


class FastGenerator(nn.Module):
    """A generator prepared for inference on inputs of ``example``'s shape.

    Args:
        generator: the network (one tensor in, one tensor out); put in eval mode, on
            ``example``'s device. Its weights must not change afterwards (a captured graph
            reads them where they were).
        example: an input of the shape every call will have, e.g. (N, C, H, W).
        mode: one of :data:`MODES`.
        bf16: run under ``torch.autocast(dtype=torch.bfloat16)`` (CUDA only).
        channels_last: convert the weights and the input to channels_last (CUDA only).
        warmup: untimed runs before capturing or compiling.

    Attributes:
        mode: the mode that actually runs (``eager`` on the CPU whatever was asked).

    Calling it with a (N, C, H, W) tensor of ``example``'s shape returns the generator's output.
    In ``cuda_graph`` mode that output is a static buffer, valid until the next call (clone it to
    keep it).
    """

    def __init__(self, generator: nn.Module, example: torch.Tensor, *, mode: str = "cuda_graph",
                 bf16: bool = False, channels_last: bool = False, warmup: int = 3):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown fast-inference mode {mode!r} (valid: {', '.join(MODES)})")
        cuda = example.device.type == "cuda"
        if not cuda and (mode != "eager" or bf16 or channels_last):
            log.info("fast inference on %s: plain eager fp32 (CUDA graphs, compile, bf16 and channels_last "
                     "are used on CUDA only)", example.device)
            mode, bf16, channels_last = "eager", False, False
        self.mode, self.bf16, self.channels_last = mode, bf16, channels_last
        self.shape = tuple(example.shape)
        generator = generator.to(example.device).eval()
        if channels_last:
            generator = generator.to(memory_format=torch.channels_last)
        self.generator = generator
        self.eval()
        self._graph = None
        self._compiled = None
        if mode == "cuda_graph":
            self._capture(example, warmup)
        elif mode == "compile":
            self._compiled = torch.compile(generator, mode="reduce-overhead")
            for _ in range(warmup):
                self(example)

    def train(self, mode: bool = True) -> "FastGenerator":
        """Inference only: the generator stays in eval mode whatever is asked (a captured graph
        could not follow anyway, and timing helpers restore a 'training' flag afterwards)."""
        return super().train(False)

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        # A captured graph must not rely on autocast's cache of cast weights: the cache lives
        # only as long as the autocast region, so the casts are recorded into the graph instead.
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    @torch.no_grad()
    def _capture(self, example: torch.Tensor, warmup: int) -> None:
        """Warm up on a side stream, then capture one forward pass on that same stream."""
        self._static_in = self._prepare(example.clone())
        stream = torch.cuda.Stream(device=example.device)
        # The side stream must see the input written on the current stream, and vice versa after.
        stream.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(stream):
            for _ in range(max(1, warmup)):
                with self._autocast():
                    self.generator(self._static_in)
        torch.cuda.current_stream(example.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # Capturing on the warm-up stream reuses the library handles (cuBLAS, cuDNN) created there.
        with torch.cuda.graph(graph, stream=stream):
            with self._autocast():
                self._static_out = self.generator(self._static_in)
        self._graph = graph

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._graph is not None:
            if tuple(x.shape) != self.shape:
                raise ValueError(f"the CUDA graph was captured for inputs of shape {self.shape}, got "
                                 f"{tuple(x.shape)}; build another FastGenerator for that shape")
            self._static_in.copy_(x)
            self._graph.replay()
            return self._static_out
        x = self._prepare(x)
        with self._autocast():
            if self._compiled is not None:
                # Each call is a new step for compile's CUDA graphs, so the previous call's output
                # buffers may be reused.
                torch.compiler.cudagraph_mark_step_begin()
                return self._compiled(x)
            return self.generator(x)
