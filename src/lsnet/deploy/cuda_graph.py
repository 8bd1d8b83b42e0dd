"""CUDA-graph inference: capture a model's forward once per input shape, then replay it.

At small batches a GPU finishes LSNet's kernels faster than Python can launch them (LSNet-T
at batch 1 issues a few hundred kernels): the forward is bound by the host. A CUDA graph
records the launches once and replays them with one call, so the host cost no longer grows
with the number of layers. This is PyTorch's own mechanism (``torch.cuda.CUDAGraph``), wrapped
for the usual deployment case, as timm and torchvision have no wrapper for it:

    >>> model = lsnet.fuse(timm.create_model("lsnet_t", pretrained=True)).cuda().eval()
    >>> graphed = CUDAGraphModel(model)
    >>> logits = graphed(images)   # first call per shape: warm-up + capture; later calls: replay

Rules of a captured graph: inputs are copied into a static buffer, so any tensor of the same
shape, dtype and layout may be passed; the returned tensor is that graph's static output,
overwritten by the next call with the same shape (``clone()`` it to keep it); weights must
not be replaced (in-place updates are seen); no gradients. A new input shape captures a new
graph (up to ``max_graphs``, the oldest is dropped beyond).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

from ..errors import ConfigError

__all__ = ["CUDAGraphModel", "capture_cuda_graph"]

_Key = Tuple[Tuple[int, ...], torch.dtype, str]


def _layout(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


class _Captured:
    """One captured forward: its graph and its static input and output."""

    def __init__(self, graph: "torch.cuda.CUDAGraph", static_in: torch.Tensor, static_out):
        self.graph, self.static_in, self.static_out = graph, static_in, static_out

    def __call__(self, x: torch.Tensor):
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


def _check_cuda(x: torch.Tensor) -> None:
    if x.device.type != "cuda":
        raise ConfigError(f"CUDA graphs need CUDA tensors; got an input on {x.device} (move the model and the "
                          f"input with .cuda(), or run without the CUDA graph)")


@torch.inference_mode()
def capture_cuda_graph(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, warmup: int = 3,
                       pool=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Capture ``fn(example)`` in a CUDA graph and return a callable that replays it.

    ``fn`` runs ``warmup`` times on a side stream first (cuDNN picks its algorithms and the
    caching allocator settles, as PyTorch's documentation asks before a capture). The returned
    callable copies its argument into the captured input and returns the static output.
    """
    _check_cuda(example)
    static_in = example.clone()
    side = torch.cuda.Stream(device=example.device)
    side.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream(example.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        static_out = fn(static_in)
    return _Captured(graph, static_in, static_out)


class CUDAGraphModel(nn.Module):
    """Inference through CUDA graphs, one per input (shape, dtype, memory format).

    ``model`` must already be on the GPU, in eval mode, and (for LSNet) fused if it is to be
    deployed fused. ``autocast`` (e.g. ``torch.bfloat16``) runs the captured forward under
    ``torch.autocast``. See the module docstring for the rules of replayed graphs.
    """

    def __init__(self, model: nn.Module, autocast: Optional[torch.dtype] = None, warmup: int = 3,
                 max_graphs: int = 8):
        super().__init__()
        self.model = model.eval()
        self.autocast, self.warmup, self.max_graphs = autocast, warmup, max_graphs
        self._graphs: "OrderedDict[_Key, _Captured]" = OrderedDict()
        self._pool = None  # one memory pool shared by every graph of this model

    def _run(self, x: torch.Tensor):
        if self.autocast is None:
            return self.model(x)
        with torch.autocast("cuda", dtype=self.autocast):
            return self.model(x)

    def forward(self, x: torch.Tensor):
        """The model's output for ``x``, from the graph captured for ``x``'s shape (captured now
        if there is none yet). The result is overwritten by the next call of the same shape."""
        if self.model.training:
            raise RuntimeError("CUDAGraphModel is for inference: the model was put back in training mode")
        _check_cuda(x)
        key = (tuple(x.shape), x.dtype, _layout(x))
        captured = self._graphs.get(key)
        if captured is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            captured = capture_cuda_graph(self._run, x, self.warmup, self._pool)
            self._graphs[key] = captured
            if len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return captured(x)

    @property
    def num_graphs(self) -> int:
        """How many input shapes have a captured graph."""
        return len(self._graphs)
