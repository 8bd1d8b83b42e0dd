"""Parameters and multiply-accumulates of a model, counted with ``torch.utils.flop_counter``.

The flop counter sees convolutions and matrix products. SKA is a per-pixel dynamic kernel
that it does not know, so its K*K multiply-accumulates per output element are added from
forward hooks on the ``SKA`` modules. The counter also has no formula for the CPU kernel
of ``F.scaled_dot_product_attention`` (``_scaled_dot_product_flash_attention_for_cpu``,
what timm's ViTs call on the CPU); it gets the counter's own formula for the other SDPA kernels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Tuple, Union

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..models import fuse
from ..ops.ska import SKA

__all__ = ["count_macs", "count_aten_ops", "profile_model", "ModelProfile"]


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _cpu_sdpa_flops} if op is not None else {}


def _size2(size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@torch.no_grad()
def count_macs(model: nn.Module, img_size: Union[int, Tuple[int, int]] = 224, in_chans: int = 3) -> Tuple[int, int]:
    """Return (total MACs, SKA MACs) of one forward pass on a single image, in eval mode."""
    h, w = _size2(img_size)
    ref = next(model.parameters())
    x = torch.zeros(1, in_chans, h, w, dtype=ref.dtype, device=ref.device)
    ska_macs = 0

    def hook(module, inputs, output):
        nonlocal ska_macs
        kk = inputs[1].shape[2]
        ska_macs += output.numel() * kk

    was_training = model.training
    model.eval()
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SKA)]
    try:
        counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
        with counter:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # the counter reports FLOPs = 2 x MACs for every op it knows
    return counter.get_total_flops() // 2 + ska_macs, ska_macs


class _OpCounter(TorchDispatchMode):
    """Counts the operators that reach the dispatcher's backends (what a GPU would launch)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


@torch.inference_mode()  # the deployment setting (no_grad dispatches a few more)
def count_aten_ops(model: nn.Module, x: torch.Tensor, warmup: int = 1) -> Counter:
    """Operators one forward of ``model`` on ``x`` dispatches, by name (``aten.convolution``,
    ``lsnet.ska``, ...), after ``warmup`` calls (first calls may build caches). Each is one
    kernel launch on a GPU (views excepted), so the total measures the host's work per call.
    A custom operator counts once, whatever it does inside."""
    for _ in range(warmup):
        model(x)
    with _OpCounter() as counter:
        model(x)
    return counter.counts


@dataclass
class ModelProfile:
    """Size and cost of one model at one resolution."""

    name: str
    img_size: Tuple[int, int]
    params: int
    fused_params: int
    macs: int
    ska_macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def profile_model(name: str, model: nn.Module, img_size: Union[int, Tuple[int, int]] = 224) -> ModelProfile:
    """Count parameters (as built and after :func:`lsnet.fuse`) and MACs of ``model``."""
    params = sum(p.numel() for p in model.parameters())
    fused = fuse(model)
    fused_params = sum(p.numel() for p in fused.parameters())
    macs, ska_macs = count_macs(model, img_size, getattr(model, "in_chans", 3))
    return ModelProfile(name, _size2(img_size), params, fused_params, macs, ska_macs)
