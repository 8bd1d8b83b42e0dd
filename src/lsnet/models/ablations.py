"""The LSNet paper's ablation models (Tables 5, 7, 8 and 9), registered in timm.

LSNet-T variants (Tables 5, 7, 8). Every ablation is a constructor option of
:class:`~lsnet.models.lsnet.LSNet`, so any LSNet takes them through timm::

    timm.create_model("lsnet_t", large_kernel=3)          # K_L = 3
    timm.create_model("lsnet_s", use_ska=False)           # w/o SKA on LSNet-S

and each row of the paper's tables is also registered under its own name
(``lsnet_t_kl3``, ``lsnet_t_no_ska``, ...; see :data:`LSNET_VARIANTS`), so that
``lsnet train --model lsnet_t_kl3`` works and its checkpoints name their architecture.
The paper's text fixes what each row removes:

* "w/o LKP": the large-kernel depth-wise conv of LKP removed (PW, ReLU, PW still predict
  the kernels).
* "w/o SKA": a static K_S x K_S depth-wise conv processes LKP's output, which becomes
  the output (LKP's last point-wise conv then projects to C channels, no GroupNorm).
* "w/o DW" / "w/o SE": the extra RepVGG-DW mixer / SE layer of the even blocks removed,
  in every stage (the paper's MSA blocks have "the same depth-wise convolution and SE").
* "w/o LS conv" (Table 5): every LS convolution replaced by identity.

LS convolution in other networks (Table 9), built on timm's models by replacing modules:

* ``resnet50_lsconv``: timm's ``resnet50`` with every 3x3 convolution (``conv2`` of each
  bottleneck) replaced by an LS convolution of the same width. SKA (and so the LS
  convolution) keeps the resolution; where the 3x3 convolution has stride 2 (the first
  block of stages 2-4), a depth-wise 3x3 stride-2 conv + BN (LSNet's own way of
  downsampling) comes first and the LS convolution runs at the reduced resolution.
* ``deit_tiny_lsconv``: timm's ``deit_tiny_patch16_224`` with every self-attention replaced
  by an LS convolution on the 14 x 14 token grid (without its own shortcut: the
  transformer block already adds the mixer's output to its input). An LS convolution
  mixes no information into a class token, so the model has none and classifies from the
  average of the tokens (``class_token=False, global_pool='avg'``).

None of these has pretrained weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module
from timm.models import generate_default_cfgs, register_model

from .lsnet import MODEL_ARGS, ConvBN, LSConv, LSNet, _cfg, _create_lsnet

__all__ = ["LSNET_VARIANTS", "TABLE9_MODELS", "Variant", "DownsampleLSConv", "TokenLSConv", "lsconv_resnet",
           "lsconv_vit", "ABLATION_MODEL_NAMES"]


@dataclass(frozen=True)
class Variant:
    """One row of the paper's ablation tables: LSNet-T with ``kwargs``."""

    label: str  # as the paper writes it
    table: str  # "5", "7" or "8"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    paper_gflops: Optional[float] = None  # the paper's "FLOPs" column (multiply-accumulates, in G)
    paper_top1: Optional[float] = None  # ImageNet-1K top-1 after 100 epochs (%)


#: The paper's LSNet-T ablations: key -> variant (``base`` is LSNet-T itself).
LSNET_VARIANTS: Dict[str, Variant] = {
    "base": Variant("LSNet-T", "7, 8", {}, 0.31, 71.6),
    "no_lkp": Variant("w/o LKP", "7", dict(use_lkp=False), 0.31, 70.5),
    "kl3": Variant("K_L = 3", "7", dict(large_kernel=3), 0.31, 70.9),
    "kl5": Variant("K_L = 5", "7", dict(large_kernel=5), 0.31, 71.2),
    "kl9": Variant("K_L = 9", "7", dict(large_kernel=9), 0.32, 71.5),
    "no_ska": Variant("w/o SKA", "7", dict(use_ska=False), 0.31, 70.1),
    "ks1": Variant("K_S = 1", "7", dict(small_kernel=1), 0.30, 69.6),
    "ks5": Variant("K_S = 5", "7", dict(small_kernel=5), 0.34, 71.6),
    "cg1": Variant("C/G = 1", "8", dict(channels_per_group=1), 0.38, 71.7),
    "cg4": Variant("C/G = 4", "8", dict(channels_per_group=4), 0.33, 71.6),
    "cg16": Variant("C/G = 16", "8", dict(channels_per_group=16), 0.31, 71.3),
    "cg32": Variant("C/G = 32", "8", dict(channels_per_group=32), 0.31, 70.9),
    "no_dw": Variant("w/o DW", "8", dict(use_extra_dw=False), 0.31, 71.1),
    "no_se": Variant("w/o SE", "8", dict(use_se=False), 0.31, 71.3),
    "no_lsconv": Variant("w/o LS conv.", "5", dict(use_ls_conv=False), 0.29, 69.3),
}

#: Table 9: timm model name -> (label, the paper's GFLOPs, its top-1 after 300 epochs).
TABLE9_MODELS: Dict[str, Tuple[str, float, float]] = {
    "resnet50": ("ResNet-50", 4.1, 78.8),
    "resnet50_lsconv": ("ResNet-50 + LS conv", 2.6, 80.7),
    "deit_tiny_patch16_224": ("DeiT-T", 1.3, 72.2),
    "deit_tiny_lsconv": ("DeiT-T + LS conv", 0.9, 73.0),
}


# ----- LS convolution in other networks ----------------------------------------------------

class DownsampleLSConv(nn.Module):
    """Stride-s depth-wise 3x3 conv + BN (``down``), then an LS convolution (``ls``): the stand-in
    for a strided 3x3 convolution (SKA itself only runs at stride 1)."""

    def __init__(self, dim: int, stride: int = 2, **ls_kwargs):
        super().__init__()
        self.down = ConvBN(dim, dim, 3, stride, 1, groups=dim)
        self.ls = LSConv(dim, **ls_kwargs)

    def forward(self, x):
        return self.ls(self.down(x))


class TokenLSConv(nn.Module):
    """LS convolution as a transformer token mixer: (B, N, C) tokens of an H x W grid are laid
    out as an image, mixed, and flattened back. Takes the arguments of timm's attention call."""

    def __init__(self, dim: int, grid_size: Tuple[int, int], **ls_kwargs):
        super().__init__()
        self.grid_size = tuple(int(g) for g in grid_size)
        self.ls = LSConv(dim, shortcut=False, **ls_kwargs)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False):
        b, n, c = x.shape
        h, w = self.grid_size
        if h * w != n:  # another input size (dynamic_img_size): square grids only
            h = w = math.isqrt(n)
            if h * w != n:
                raise ValueError(f"TokenLSConv: {n} tokens are neither the {self.grid_size} grid nor a square one")
        y = self.ls(x.transpose(1, 2).reshape(b, c, h, w))
        return y.flatten(2).transpose(1, 2)


register_notrace_module(TokenLSConv)  # branches on the token count: a leaf for torch.fx


def lsconv_resnet(model: nn.Module, **ls_kwargs) -> nn.Module:
    """Replace, in place, the 3x3 convolution of every timm ``Bottleneck`` / ``BasicBlock`` in
    ``model`` (a ResNet or its ``features_only`` wrapper) by an LS convolution of the same width;
    stride-2 ones by :class:`DownsampleLSConv`. Returns ``model``."""
    from timm.models.resnet import BasicBlock, Bottleneck

    found = 0
    for block in model.modules():
        if isinstance(block, Bottleneck):
            names = ("conv2",)
        elif isinstance(block, BasicBlock):
            names = ("conv1", "conv2")
        else:
            continue
        for name in names:
            conv = getattr(block, name)
            if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (3, 3):
                continue
            if conv.in_channels != conv.out_channels or conv.groups != 1 or conv.dilation != (1, 1):
                raise ValueError(f"lsconv_resnet: cannot replace {conv} (an LS convolution keeps the width, "
                                 "has no groups and no dilation)")
            stride = conv.stride[0]
            new = LSConv(conv.out_channels, **ls_kwargs) if stride == 1 else \
                DownsampleLSConv(conv.out_channels, stride, **ls_kwargs)
            setattr(block, name, new.to(device=conv.weight.device, dtype=conv.weight.dtype))
            found += 1
    if not found:
        raise ValueError("lsconv_resnet: no ResNet block with a 3x3 convolution found")
    return model


def lsconv_vit(model: nn.Module, **ls_kwargs) -> nn.Module:
    """Replace, in place, the self-attention (``attn``) of every timm ViT block in ``model`` by
    a :class:`TokenLSConv`. The model must have no prefix tokens (class or register tokens)."""
    from timm.models.vision_transformer import Block, VisionTransformer

    vits = [m for m in model.modules() if isinstance(m, VisionTransformer)]
    if not vits:
        raise ValueError("lsconv_vit: no timm VisionTransformer found")
    for vit in vits:
        if vit.num_prefix_tokens:
            raise ValueError("lsconv_vit: an LS convolution mixes grid tokens only; build the ViT with "
                             "class_token=False (and no register tokens)")
        grid = vit.patch_embed.grid_size
        for block in vit.modules():
            if isinstance(block, Block):
                ref = next(block.attn.parameters())
                block.attn = TokenLSConv(vit.embed_dim, grid, **ls_kwargs).to(device=ref.device, dtype=ref.dtype)
    return model


# ----- registry -------------------------------------------------------------------------------

_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _no_weights(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name} is an ablation model of the LSNet paper: it has no pretrained weights")


def _cnn_cfg(**kwargs):
    return {"num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
            "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "conv1", "classifier": "fc", "paper_ids": "arXiv:2503.23135", **kwargs}


default_cfgs = generate_default_cfgs({
    **{f"lsnet_t_{key}": _cfg() for key in LSNET_VARIANTS if key != "base"},
    "resnet50_lsconv": _cnn_cfg(),
    "deit_tiny_lsconv": _cnn_cfg(pool_size=None, crop_pct=0.9, fixed_input_size=True,
                                 first_conv="patch_embed.proj", classifier="head"),
})


def _lsnet_variant(key: str):
    variant = LSNET_VARIANTS[key]
    name = f"lsnet_t_{key}"

    def create(pretrained: bool = False, **kwargs) -> LSNet:
        _no_weights(name, pretrained)
        return _create_lsnet(name, False, **{**MODEL_ARGS["lsnet_t"], **variant.kwargs, **kwargs})

    create.__name__ = create.__qualname__ = name
    create.__doc__ = f"LSNet-T, {variant.label} (the LSNet paper's Table {variant.table}; no pretrained weights)."
    create.__module__ = __name__
    return register_model(create)


for _key in LSNET_VARIANTS:
    if _key != "base":
        globals()[f"lsnet_t_{_key}"] = _lsnet_variant(_key)


def _ls_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Pop the LS convolution's options (same names as LSNet's) from ``kwargs``."""
    names = dict(large_kernel="large_kernel", small_kernel="small_kernel", channels_per_group="groups",
                 use_lkp="use_large_kernel", use_ska="dynamic")
    return {ours: kwargs.pop(theirs) for theirs, ours in names.items() if theirs in kwargs}


def _timm_base(name: str, kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any], Any, Any]:
    for key in _TIMM_ONLY:
        kwargs.pop(key, None)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    return _ls_kwargs(kwargs), kwargs, device, dtype


def _finish(model: nn.Module, name: str, device, dtype) -> nn.Module:
    model.pretrained_cfg = model.default_cfg = {**default_cfgs[name].default.to_dict(), "architecture": name}
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


@register_model
def resnet50_lsconv(pretrained: bool = False, **kwargs) -> nn.Module:
    """ResNet-50 with every 3x3 convolution replaced by an LS convolution (the LSNet paper's
    Table 9; stride-2 ones downsample with a depth-wise 3x3 conv first). Takes resnet50's
    arguments and the LS convolution's (``large_kernel``, ``small_kernel``, ...)."""
    import timm

    _no_weights("resnet50_lsconv", pretrained)
    ls_kwargs, kwargs, device, dtype = _timm_base("resnet50_lsconv", kwargs)
    model = timm.create_model("resnet50", pretrained=False, **kwargs)
    return _finish(lsconv_resnet(model, **ls_kwargs), "resnet50_lsconv", device, dtype)


@register_model
def deit_tiny_lsconv(pretrained: bool = False, **kwargs) -> nn.Module:
    """DeiT-T with every self-attention replaced by an LS convolution on the token grid (the LSNet
    paper's Table 9), without a class token (global average pooling instead)."""
    import timm

    _no_weights("deit_tiny_lsconv", pretrained)
    ls_kwargs, kwargs, device, dtype = _timm_base("deit_tiny_lsconv", kwargs)
    kwargs = {"class_token": False, "global_pool": "avg", **kwargs}
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, **kwargs)
    return _finish(lsconv_vit(model, **ls_kwargs), "deit_tiny_lsconv", device, dtype)


#: Names this module registers in timm.
ABLATION_MODEL_NAMES = tuple(f"lsnet_t_{k}" for k in LSNET_VARIANTS if k != "base") + ("resnet50_lsconv",
                                                                                       "deit_tiny_lsconv")
