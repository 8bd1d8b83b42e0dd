"""Compiled inference: ``torch.compile`` with inductor freezing, the deployment setting in PyTorch."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["compile_for_inference"]


def compile_for_inference(model: nn.Module, freeze: bool = True) -> nn.Module:
    """``torch.compile`` for inference with one static graph per input shape. ``freeze`` turns
    on inductor freezing: weights are folded in as constants and, on the CPU, convolutions
    run on pre-packed oneDNN weights, which spares the weight reordering of every call. A
    frozen model must only be called without gradients, and later weight changes are not seen."""
    compiled = torch.compile(model, dynamic=False)
    return _Frozen(compiled) if freeze else compiled


class _Frozen(nn.Module):
    """Runs a compiled module with inductor's freezing switched on. The switch has to be set
    while the first call compiles; ``torch.compile(options={"freezing": True})`` left the
    convolutions un-packed in torch 2.15 (checked with the profiler)."""

    def __init__(self, compiled: nn.Module):
        super().__init__()
        self.compiled = compiled

    def forward(self, *args, **kwargs):
        if torch.is_grad_enabled():
            raise RuntimeError("a frozen compiled model runs without gradients: call it under torch.inference_mode()")
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(*args, **kwargs)
