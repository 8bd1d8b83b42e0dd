"""Inference fusion: fold BatchNorm into the preceding conv/linear and merge re-parameterisable
branches. The algebra is done in float64 and the result cast back, so float32 models lose
nothing beyond one rounding."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["fuse", "fuse_modules", "fuse_bn_into_conv", "fuse_bn_into_conv1x1", "fuse_bn_into_linear"]


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm):
    """Per-channel (scale, shift) of an eval-mode BatchNorm, in float64."""
    std = (bn.running_var.double() + bn.eps).sqrt()
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(std)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean.double() * scale


@torch.no_grad()
def fuse_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d with bias computing ``bn(conv(x))`` in eval mode."""
    scale, shift = _bn_scale_shift(bn)
    weight = conv.weight.double() * scale[:, None, None, None]
    bias = shift if conv.bias is None else shift + conv.bias.double() * scale
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    return fused


@torch.no_grad()
def fuse_bn_into_linear(bn: nn.BatchNorm1d, linear: nn.Linear) -> nn.Linear:
    """A Linear computing ``linear(bn(x))`` in eval mode."""
    scale, shift = _bn_scale_shift(bn)
    w = linear.weight.double()
    bias = w @ shift
    if linear.bias is not None:
        bias = bias + linear.bias.double()
    fused = nn.Linear(linear.in_features, linear.out_features, device=w.device, dtype=linear.weight.dtype)
    fused.weight.copy_(w * scale[None, :])
    fused.bias.copy_(bias)
    return fused


@torch.no_grad()
def fuse_bn_into_conv1x1(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A Conv2d with bias computing ``conv(bn(x))`` in eval mode, for a BatchNorm *before* a
    1x1 convolution without padding and groups (with a larger kernel the zero padding would
    see the BatchNorm's shift at the border, and the fold would not be exact)."""
    if conv.kernel_size != (1, 1) or conv.padding not in ((0, 0), "valid") or conv.groups != 1:
        raise ValueError(f"a BatchNorm folds exactly only into a 1x1 convolution without padding and groups, got "
                         f"kernel {conv.kernel_size}, padding {conv.padding}, groups {conv.groups}")
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight.double()
    bias = w[:, :, 0, 0] @ shift
    if conv.bias is not None:
        bias = bias + conv.bias.double()
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, 0, conv.dilation, 1, bias=True,
                      device=w.device, dtype=conv.weight.dtype)
    fused.weight.copy_(w * scale[None, :, None, None])
    fused.bias.copy_(bias)
    return fused


@torch.no_grad()
def fuse_modules(module: nn.Module) -> nn.Module:
    """Replace, depth first, every child that has a ``fuse()`` method by what it returns.

    A module's own ``fuse()`` (e.g. ``LSNet.fuse``) is not called here, only its children's,
    so that model-level fuse methods can use this to walk their tree.
    """
    for name, child in list(module.named_children()):
        if callable(getattr(child, "fuse", None)):
            fused = child.fuse()
            setattr(module, name, fused)
            if fused is not child:
                fuse_modules(fused)
        else:
            fuse_modules(child)
    return module


@torch.no_grad()
def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` fused for inference, in eval mode, on its dtype and device.

    Works on an LSNet, a ``features_only`` wrapper, or any tree containing LSNet modules.
    With ``inplace=False`` (default) the argument is left untouched.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if hasattr(model, "fuse") and callable(model.fuse):
        out = model.fuse()
        model = out if isinstance(out, nn.Module) else model
    else:
        fuse_modules(model)
    return model.eval()
