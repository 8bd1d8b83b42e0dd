"""LSNet: See Large, Focus Small (CVPR 2025), in timm's conventions.

Paper: https://arxiv.org/abs/2503.23135

The module tree, key names and numerics follow the authors' release exactly, so that its
checkpoints (``lsnet_{t,s,b}[_distill].pth``) load strictly and give the same outputs.
On top of the release: any input size (the stage-4 attention bias table is resized when
the grid differs), ``features_only``/``forward_intermediates``, gradient checkpointing,
stochastic depth, ``reset_classifier`` and exact inference fusion (``fuse()``).
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, SqueezeExcite, register_notrace_function, register_notrace_module, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq

from ..ops.ska import SKA, _tracing
from ..ops.ska_fused import ska_affine_residual
from .fuse import fuse_bn_into_conv, fuse_bn_into_linear, fuse_modules
from .stages import StagedModel, stage_intermediates, take_intermediates

__all__ = ["LSNet", "LKP", "LSConv", "RepVGGDW", "FFN", "Attention", "Block", "ConvBN", "BNLinear",
           "checkpoint_filter_fn", "release_safe_globals", "MIN_INPUT_SIZE"]

#: Smallest input height/width accepted (the network downsamples by 64 overall).
MIN_INPUT_SIZE = 64


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (keys ``c.*`` and ``bn.*``)."""

    def __init__(self, in_chs, out_chs, kernel_size=1, stride=1, padding=0, groups=1, bn_weight_init=1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chs))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Return one Conv2d (with bias) equal to this conv + BN in eval mode."""
        return fuse_bn_into_conv(self.c, self.bn)


class BNLinear(nn.Sequential):
    """BatchNorm1d followed by Linear: the release's classifier (keys ``bn.*`` and ``l.*``)."""

    def __init__(self, in_features, out_features, std=0.02):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(in_features))
        self.add_module("l", nn.Linear(in_features, out_features))
        trunc_normal_(self.l.weight, std=std)
        nn.init.constant_(self.l.bias, 0)

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        """Return one Linear equal to this BN + linear in eval mode."""
        return fuse_bn_into_linear(self.bn, self.l)


class Residual(nn.Module):
    """``x + drop_path(m(x))``; the wrapped module is stored as ``m`` as in the release."""

    def __init__(self, m: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        out = self.drop_path(self.m(x))
        if not torch.is_grad_enabled():
            return out.add_(x)  # inference: m(x) is a fresh tensor, reuse its memory
        return x + out


class FFN(nn.Module):
    """Point-wise feed-forward: 1x1 ConvBN, ReLU, 1x1 ConvBN (zero-initialised BN)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x):
        return self.pw2(self.act(self.pw1(x)))


class RepVGGDW(nn.Module):
    """Depth-wise 3x3 + depth-wise 1x1 + identity; re-parameterises into one 3x3 conv."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.conv1 = ConvBN(dim, dim, 1, 1, 0, groups=dim)

    def forward(self, x):
        return self.conv(x) + self.conv1(x) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Return a single depth-wise 3x3 conv with bias equal to the three branches."""
        conv = self.conv.fuse()
        conv1 = self.conv1.fuse()
        weight = conv.weight.double() + F.pad(conv1.weight.double(), [1, 1, 1, 1])
        weight[:, 0, 1, 1] += 1.0  # identity branch: a centre tap of one per channel
        conv.weight.copy_(weight)
        conv.bias.copy_(conv.bias.double() + conv1.bias.double())
        return conv


def _check_kernel(name: str, k) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise ValueError(f"{name} must be an odd positive integer (3, 5, 7, ...), got {k!r}")


class LKP(nn.Module):
    """Large-kernel perception: predicts a K x K kernel per pixel and per group of channels.

    Output shape (N, C / groups, K*K, H, W) for input (N, C, H, W), where K = ``small_kernel``
    and ``groups`` is the number of channels that share one kernel (the paper's C/G).

    Ablation options (the release uses the defaults): ``use_large_kernel=False`` drops the
    K_L x K_L depth-wise conv ``cv2`` (the paper's "w/o LKP"); ``dynamic=False`` makes ``cv4``
    project to C feature channels without the GroupNorm, returning (N, C, H, W) features
    instead of kernels (the LKP half of the paper's "w/o SKA").
    """

    def __init__(self, dim: int, large_kernel: int = 7, small_kernel: int = 3, groups: int = 8,
                 use_large_kernel: bool = True, dynamic: bool = True):
        super().__init__()
        _check_kernel("large_kernel", large_kernel)
        _check_kernel("small_kernel", small_kernel)
        if dim % 2 != 0 or (dynamic and (groups < 1 or dim % groups != 0)):
            raise ValueError(f"LKP: dim={dim} must be even and a multiple of groups={groups} "
                             "(channels per kernel group)")
        half = dim // 2
        self.cv1 = ConvBN(dim, half)
        self.act = nn.ReLU()
        if use_large_kernel:
            self.cv2 = ConvBN(half, half, large_kernel, padding=(large_kernel - 1) // 2, groups=half)
        else:
            self.cv2 = nn.Identity()
        self.cv3 = ConvBN(half, half)
        self.dynamic = dynamic
        if dynamic:
            self.cv4 = nn.Conv2d(half, small_kernel ** 2 * dim // groups, kernel_size=1)
            self.norm = nn.GroupNorm(num_groups=dim // groups, num_channels=small_kernel ** 2 * dim // groups)
        else:
            self.cv4 = nn.Conv2d(half, dim, kernel_size=1)
            self.norm = nn.Identity()
        self.small_kernel = small_kernel
        self.kernel_groups = dim // groups

    def forward(self, x):
        x = self.act(self.cv3(self.cv2(self.act(self.cv1(x)))))
        w = self.norm(self.cv4(x))
        if not self.dynamic:
            return w
        n, _, h, wd = w.shape
        k = self.small_kernel  # k * k: ``k ** 2`` is a float under TorchScript
        return w.view(n, self.kernel_groups, k * k, h, wd)


register_notrace_module(SKA)  # shape checks and device dispatch: a leaf for torch.fx


class LSConv(nn.Module):
    """LS convolution: ``bn(SKA(x, LKP(x))) + x``.

    The defaults are the release's (K_L = 7, K_S = 3, C/G = 8). The other options build the
    paper's ablations (Table 7): ``use_large_kernel=False`` is "w/o LKP" (LKP without its
    large-kernel depth-wise conv); ``dynamic=False`` is "w/o SKA": LKP's output, projected to
    C channels, goes through a static K_S x K_S depth-wise conv (``static_dw``) instead of
    parameterising the dynamic aggregation, i.e. the plain combination of a large-kernel and a
    small-kernel convolution. ``shortcut=False`` drops the ``+ x`` (for token mixers that
    already sit in a residual branch).
    """

    __constants__ = ["dynamic"]  # TorchScript compiles only the branch of the submodules that exist

    def __init__(self, dim: int, large_kernel: int = 7, small_kernel: int = 3, groups: int = 8,
                 use_large_kernel: bool = True, dynamic: bool = True, shortcut: bool = True):
        super().__init__()
        self.lkp = LKP(dim, large_kernel=large_kernel, small_kernel=small_kernel, groups=groups,
                       use_large_kernel=use_large_kernel, dynamic=dynamic)
        self.dynamic = dynamic
        if dynamic:
            self.ska = SKA()
        else:
            self.static_dw = nn.Conv2d(dim, dim, small_kernel, padding=(small_kernel - 1) // 2, groups=dim,
                                       bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.shortcut = shortcut

    def forward(self, x):
        if self.dynamic:
            w = self.lkp(x)
            # under autocast the GroupNorm runs in float32 while x may be bfloat16/float16
            y = self.bn(self.ska(x, w.to(x.dtype)))
        else:
            y = self.bn(self.static_dw(self.lkp(x)))
        return y + x if self.shortcut else y

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """The inference form: :class:`FusedLSConv` (SKA, BatchNorm and residual in one operator)
        for the release's LS convolution; the ablation variants keep their modules, BNs folded."""
        if self.dynamic and self.shortcut:
            return FusedLSConv(self.lkp, self.bn)
        fuse_modules(self)
        return self


class FusedLSConv(nn.Module):
    """Eval-mode LS convolution, made by :meth:`LSConv.fuse`: LKP (its BatchNorms folded by
    :func:`lsnet.fuse`), then ``torch.ops.lsnet.ska_bn_residual``, which computes SKA, the
    BatchNorm after it and the residual add in one pass (one Triton kernel on a GPU).

    The operator checks nothing per call; the first call goes through the checked
    :func:`lsnet.ops.ska_affine_residual` instead, and so do traces for export and compile.
    Inference only (no gradient flows through the fused operator).
    """

    def __init__(self, lkp: nn.Module, bn: nn.BatchNorm2d):
        super().__init__()
        from ..ops import bn_scale_shift

        self.lkp = lkp
        scale, shift = bn_scale_shift(bn)
        # parameters (frozen) rather than buffers: they are the folded BatchNorm's weights, and
        # counted as the deployed model's parameters like every other folded weight
        self.scale = nn.Parameter(scale, requires_grad=False)
        self.shift = nn.Parameter(shift, requires_grad=False)
        self.checked = False

    def forward(self, x):
        w = self.lkp(x)
        if torch.jit.is_scripting():
            return torch.ops.lsnet.ska_bn_residual(x, w.to(x.dtype), self.scale, self.shift)
        if self.checked and not _tracing():
            return torch.ops.lsnet.ska_bn_residual(x, w.to(x.dtype), self.scale, self.shift)
        self.checked = not _tracing()
        return ska_affine_residual(x, w.to(x.dtype), self.scale, self.shift)


def attention_bias_index(height: int, width: int, table_width: Optional[int] = None) -> torch.Tensor:
    """Index into the bias table for every pair of points of an ``height`` x ``width`` grid.

    The table stores one bias per offset (|dy|, |dx|), at position ``|dy| * table_width + |dx|``.
    On a square R x R grid with ``table_width = R`` this equals the release's numbering (offsets
    in order of first appearance), because the first point, (0, 0), meets every offset in
    row-major order.
    """
    table_width = width if table_width is None else table_width
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * table_width + (xs[:, None] - xs[None, :]).abs()


def _release_bias_index(resolution: int) -> torch.Tensor:
    """The release's index buffer, built its way (kept to check the closed form above)."""
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets: Dict[Tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    return torch.tensor(idxs, dtype=torch.long).view(len(points), len(points))


class Attention(nn.Module):
    """Multi-head self-attention with a learned relative-position bias (LeViT style).

    The bias table is learned for an R x R grid. On another grid (other input sizes) the
    table, seen as an (heads, R, R) image over offsets (|dy|, |dx|), is resized bicubically
    to the new range of offsets.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int = 8, attn_ratio: float = 4, resolution: int = 14):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim ** -0.5
        self.key_dim = key_dim
        self.nh_kd = nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.resolution = resolution
        self.qkv = ConvBN(dim, self.dh + nh_kd * 2)
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(self.dh, dim, bn_weight_init=0.0))
        self.dw = ConvBN(nh_kd, nh_kd, 3, 1, 1, groups=nh_kd)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        # persistent as in the release, so that state_dict keys match its checkpoints
        self.register_buffer("attention_bias_idxs", attention_bias_index(resolution, resolution))

    def attention_bias(self, height: int, width: int) -> torch.Tensor:
        """The (heads, H*W, H*W) additive bias for an ``height`` x ``width`` grid."""
        return attention_bias_table(self.attention_biases, self.attention_bias_idxs, self.resolution, height, width)

    def forward(self, x):
        b, _, h, w = x.shape
        n = h * w
        q, k, v = self.qkv(x).split([self.nh_kd, self.nh_kd, self.dh], dim=1)
        q = self.dw(q)
        q = q.reshape(b, self.num_heads, -1, n)
        k = k.reshape(b, self.num_heads, -1, n)
        v = v.reshape(b, self.num_heads, -1, n)
        attn = (q.transpose(-2, -1) @ k) * self.scale + self.attention_bias(h, w)
        attn = attn.softmax(dim=-1)
        x = (v @ attn.transpose(-2, -1)).reshape(b, -1, h, w)
        return self.proj(x)

    @torch.no_grad()
    def fuse(self) -> "FusedAttention":
        """The inference form (:class:`FusedAttention`)."""
        return FusedAttention(self)


class FusedAttention(nn.Module):
    """Eval-mode :class:`Attention` with fewer operators per call, made by :meth:`Attention.fuse`.

    The same function (up to float rounding): the convolutions' BatchNorms folded, the
    ``key_dim ** -0.5`` scale folded into the query's depth-wise convolution, the bias table
    gathered once per grid size (at fuse time for the training grid) instead of indexed per
    call, and the two products as batched matrix products over (batch x heads) on 3-D views
    instead of 4-D ``@`` (which adds expand/view operators around each product).
    """

    def __init__(self, attn: Attention):
        super().__init__()
        self.num_heads, self.key_dim, self.d = attn.num_heads, attn.key_dim, attn.d
        self.nh_kd, self.dh, self.resolution = attn.nh_kd, attn.dh, attn.resolution
        self.qkv = attn.qkv.fuse()
        dw = attn.dw.fuse()
        dw.weight.copy_(dw.weight.double() * attn.scale)
        dw.bias.copy_(dw.bias.double() * attn.scale)
        self.dw = dw
        self.proj = nn.Sequential(nn.ReLU(inplace=True), attn.proj[1].fuse())
        self.attention_biases = attn.attention_biases  # kept for grids other than the training one
        self.attention_bias_idxs = attn.attention_bias_idxs
        r = attn.resolution
        self.register_buffer("bias", attn.attention_bias(r, r).detach().clone(), persistent=False)
        self._other_grids = {}  # (H, W) -> bias; not buffers: they follow from attention_biases

    @torch.jit.unused
    def grid_bias(self, height: int, width: int) -> torch.Tensor:
        """The (heads, H*W, H*W) bias, computed once per grid size."""
        if height == self.resolution and width == self.resolution:
            return self.bias
        if _tracing():  # export and compile see the computation, not a cache
            return attention_bias_table(self.attention_biases, self.attention_bias_idxs, self.resolution, height,
                                        width)
        key = (height, width)
        cached = self._other_grids.get(key)
        if cached is None or cached.device != self.bias.device or cached.dtype != self.bias.dtype:
            cached = attention_bias_table(self.attention_biases, self.attention_bias_idxs, self.resolution,
                                          height, width).detach()
            self._other_grids[key] = cached
        return cached

    def forward(self, x):
        b, _, h, w = x.shape
        n = h * w
        bh = b * self.num_heads
        q, k, v = self.qkv(x).split([self.nh_kd, self.nh_kd, self.dh], dim=1)
        q = self.dw(q).reshape(bh, self.key_dim, n).transpose(1, 2)  # already scaled
        if torch.jit.is_scripting():  # TorchScript: no cache for other grids
            bias = self.bias if h == self.resolution and w == self.resolution else attention_bias_table(
                self.attention_biases, self.attention_bias_idxs, self.resolution, h, w)
        else:
            bias = self.grid_bias(h, w)
        attn = torch.bmm(q, k.reshape(bh, self.key_dim, n)).view(b, self.num_heads, n, n) + bias
        attn = attn.softmax(dim=-1).view(bh, n, n).transpose(1, 2)
        x = torch.bmm(v.reshape(bh, self.d, n), attn).view(b, self.dh, h, w)
        return self.proj(x)


@register_notrace_function  # branches on the grid size: a leaf for torch.fx (whose autowrap skips _names)
def attention_bias_table(biases: torch.Tensor, idxs: torch.Tensor, resolution: int, height: int,
                    width: int) -> torch.Tensor:
    """The bias table ``biases`` (heads, r*r) for an ``height`` x ``width`` grid: indexed as
    trained at the training grid, bicubically resized to other grids."""
    r = resolution
    if height == r and width == r:
        return biases[:, idxs]
    table = biases.view(1, biases.shape[0], r, r)
    table = F.interpolate(table.float(), size=(height, width), mode="bicubic", align_corners=False)
    table = table.to(biases.dtype).reshape(biases.shape[0], height * width)
    return table[:, attention_bias_index(height, width).to(table.device)]


class Block(nn.Module):
    """LSNet block: token mixer (RepVGG-DW + SE on even depths; LSConv or attention on odd ones)
    followed by a residual FFN.

    ``ls_kwargs`` go to :class:`LSConv`. For the paper's ablations (Tables 5 and 8),
    ``use_extra_dw=False`` replaces the RepVGG-DW mixer by identity ("w/o DW"),
    ``use_se=False`` the SE layer ("w/o SE") and ``use_ls_conv=False`` the LS convolution
    ("w/o LS conv"); the stage-4 attention is never replaced.
    """

    def __init__(self, dim, key_dim, num_heads=8, attn_ratio=4.0, resolution=14, stage=-1, depth=-1,
                 drop_path=0.0, ls_kwargs: Optional[dict] = None, use_extra_dw: bool = True, use_se: bool = True,
                 use_ls_conv: bool = True):
        super().__init__()
        if depth % 2 == 0:
            self.mixer = RepVGGDW(dim) if use_extra_dw else nn.Identity()
            self.se = SqueezeExcite(dim, 0.25) if use_se else nn.Identity()
        else:
            self.se = nn.Identity()
            if stage == 3:
                self.mixer = Residual(Attention(dim, key_dim, num_heads, attn_ratio, resolution), drop_path)
            elif use_ls_conv:
                self.mixer = LSConv(dim, **(ls_kwargs or {}))
            else:
                self.mixer = nn.Identity()
        self.ffn = Residual(FFN(dim, int(dim * 2)), drop_path)

    def forward(self, x):
        return self.ffn(self.se(self.mixer(x)))


def _stage_resolutions(img_size: int, patch_size: int = 8, num_stages: int = 4) -> List[int]:
    """Feature-map side per stage as the release computes it (stride-2 convs with padding 1)."""
    res = [img_size // patch_size]
    for _ in range(num_stages - 1):
        res.append((res[-1] - 1) // 2 + 1)
    return res


def _shape_text(x: torch.Tensor) -> str:
    """``str(tuple(x.shape))``, written so that TorchScript compiles it."""
    dims = [str(d) for d in x.shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


@register_notrace_function  # branches on the input's shape: a leaf for torch.fx (scriptable: TorchScript runs it)
def check_lsnet_input(x: torch.Tensor, in_chans: int, min_size: int = MIN_INPUT_SIZE) -> None:
    """Raise ``ValueError`` for an input LSNet cannot take (wrong rank, channels, smaller than
    ``min_size``; an argument because TorchScript reads no global ints)."""
    if x.dim() != 4:
        raise ValueError(f"LSNet expects a 4-D batch (N, C, H, W), got a tensor of shape {_shape_text(x)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"LSNet was built for {in_chans}-channel input (in_chans), "
                         f"got {x.shape[1]} channels in an input of shape {_shape_text(x)}")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f"LSNet needs inputs of at least {min_size}x{min_size} pixels "
                         f"(it downsamples 64x), got {x.shape[2]}x{x.shape[3]}")


class LSNet(StagedModel):
    """LSNet backbone and classifier.

    Scriptable (``torch.jit.script``) and traceable by torch.fx (timm's feature extraction).

    Args:
        img_size: training resolution; sets the attention bias grid (224 -> 4 x 4). Other
            input sizes still run (the bias table is resized on the fly).
        in_chans: input channels.
        num_classes: classifier outputs; 0 for no classifier.
        embed_dim, key_dim, depth, num_heads: per-stage widths, attention key dims, block
            counts and heads (only stage 4 uses heads and key_dim).
        distillation: add a second (distillation) head as in DeiT; training returns both
            logits, evaluation their mean.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over blocks (0 in the release).
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        large_kernel, small_kernel, channels_per_group: the LS convolution's K_L (7), K_S (3)
            and C/G, the channels sharing one dynamic kernel (8).
        use_lkp: False removes LKP's large-kernel depth-wise conv (the paper's "w/o LKP").
        use_ska: False replaces the dynamic aggregation by a static K_S x K_S depth-wise conv
            on LKP's output ("w/o SKA"; see :class:`LSConv`).
        use_extra_dw, use_se: False removes the RepVGG-DW mixer / the SE layer of the even
            blocks, in every stage ("w/o DW" / "w/o SE").
        use_ls_conv: False replaces every LS convolution by identity ("w/o LS conv").
            These options build the paper's ablations (Tables 5, 7 and 8); the defaults are
            the release's architecture, whose checkpoints only fit the defaults.
        device, dtype: where and in which floating-point type the parameters live (timm's
            ``create_model(..., device=, dtype=)``).
    """

    __constants__ = ["distillation"]  # TorchScript: ``head_dist`` exists only with distillation
    __jit_unused_properties__ = ["stages"]  # a list of modules: not scriptable

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (64, 128, 192, 256),
        key_dim: Sequence[int] = (16, 16, 16, 16),
        depth: Sequence[int] = (1, 2, 3, 4),
        num_heads: Sequence[int] = (4, 4, 4, 4),
        distillation: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        patch_size: int = 8,
        large_kernel: int = 7,
        small_kernel: int = 3,
        channels_per_group: int = 8,
        use_lkp: bool = True,
        use_ska: bool = True,
        use_extra_dw: bool = True,
        use_se: bool = True,
        use_ls_conv: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        if len(embed_dim) != 4 or len(depth) != 4:
            raise ValueError(f"LSNet has four stages; got embed_dim={embed_dim}, depth={depth}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        _check_kernel("large_kernel", large_kernel)
        _check_kernel("small_kernel", small_kernel)
        with_ls = [embed_dim[i] for i in range(3) if depth[i] > 1 and use_ls_conv]  # odd blocks of stages 1-3
        if use_ska and (not isinstance(channels_per_group, int) or channels_per_group < 1
                        or any(c % channels_per_group for c in with_ls)):
            raise ValueError(f"channels_per_group must be a positive integer dividing the widths of the stages "
                             f"with LS convolutions ({', '.join(map(str, with_ls))}), got {channels_per_group!r}")
        ls_kwargs = dict(large_kernel=large_kernel, small_kernel=small_kernel, groups=channels_per_group,
                         use_large_kernel=use_lkp, dynamic=use_ska)
        key_dim = tuple(key_dim) if isinstance(key_dim, (list, tuple)) else (key_dim,) * 4
        num_heads = tuple(num_heads) if isinstance(num_heads, (list, tuple)) else (num_heads,) * 4
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dim = tuple(embed_dim)
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.distilled_training = True

        c0 = embed_dim[0]
        self.patch_embed = nn.Sequential(
            ConvBN(in_chans, c0 // 4, 3, 2, 1), nn.ReLU(),
            ConvBN(c0 // 4, c0 // 2, 3, 2, 1), nn.ReLU(),
            ConvBN(c0 // 2, c0, 3, 2, 1),
        )
        resolutions = _stage_resolutions(img_size, patch_size)
        attn_ratio = [embed_dim[i] / (key_dim[i] * num_heads[i]) for i in range(4)]
        # on the CPU even under a `with torch.device("meta")` block: the rates are Python floats
        dpr = torch.linspace(0, drop_path_rate, max(sum(depth), 1), device="cpu").tolist()
        self.blocks1, self.blocks2, self.blocks3, self.blocks4 = (nn.Sequential() for _ in range(4))
        stages = [self.blocks1, self.blocks2, self.blocks3, self.blocks4]
        self.feature_info = []
        block_idx = 0
        for i in range(4):
            if i > 0:  # downsample at the head of stages 2-4: depth-wise stride-2 then point-wise
                prev = embed_dim[i - 1]
                stages[i].append(ConvBN(prev, prev, 3, 2, 1, groups=prev))
                stages[i].append(ConvBN(prev, embed_dim[i], 1))
            for d in range(depth[i]):
                stages[i].append(Block(embed_dim[i], key_dim[i], num_heads[i], attn_ratio[i], resolutions[i],
                                       stage=i, depth=d, drop_path=dpr[block_idx], ls_kwargs=ls_kwargs,
                                       use_extra_dw=use_extra_dw, use_se=use_se, use_ls_conv=use_ls_conv))
                block_idx += 1
            self.feature_info.append(dict(num_chs=embed_dim[i], reduction=patch_size * 2 ** i,
                                          module=f"blocks{i + 1}"))

        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.distillation = distillation
        self.head = BNLinear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()
        if distillation:
            self.head_dist = BNLinear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    @property
    def stages(self) -> List[nn.Sequential]:
        """The four stages, in order (``blocks1`` ... ``blocks4``)."""
        return [self.blocks1, self.blocks2, self.blocks3, self.blocks4]

    # ----- timm model API -------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self):
        return {k for k in self.state_dict().keys() if "attention_biases" in k}

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        return dict(stem=r"^patch_embed", blocks=r"^blocks(\d+)" if coarse else r"^blocks(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_distilled_training(self, enable: bool = True):
        """In training mode, return both heads' logits (True, the release's behaviour) or their mean."""
        self.distilled_training = enable

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None,
                         distillation: Optional[bool] = None):
        """Replace the classifier (and distillation head) with new ones for ``num_classes``."""
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        if distillation is not None:
            self.distillation = distillation
        ref = next(self.parameters())

        def make() -> nn.Module:  # like the rest of the model: its device, dtype and mode
            head = BNLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
            return head.to(device=ref.device, dtype=ref.dtype).train(self.training)

        self.head = make()
        if self.distillation:
            self.head_dist = make()
        elif hasattr(self, "head_dist"):
            del self.head_dist

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` for an input this network cannot take."""
        check_lsnet_input(x, self.in_chans)

    def _run_stage(self, stage: nn.Sequential, x):
        if self.grad_checkpointing and not torch.jit.is_scripting() and len(stage) > 0:
            return checkpoint_seq(stage, x)
        return stage(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Forward returning the outputs of the selected stages (strides 8, 16, 32, 64)."""
        self.check_input(x)
        if torch.jit.is_scripting():
            return take_intermediates(self._stage_outputs_scripted(x), indices, stop_early, intermediates_only,
                                      output_fmt, "LSNet")
        return stage_intermediates(self.patch_embed, self.stages, self._run_stage, x, indices, stop_early,
                                   intermediates_only, output_fmt, "LSNet")

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        """Drop the stages after the last requested one (and the head)."""
        take_indices, max_index = feature_take_indices(4, indices)
        for i in range(max_index + 1, 4):
            setattr(self, f"blocks{i + 1}", nn.Sequential())
        if prune_head:
            self.reset_classifier(0, "", distillation=False)
        return take_indices

    def _stage_outputs_scripted(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every stage's output, as TorchScript compiles it: it takes no modules as arguments
        (``_run_stage``) and no list of stages of different types, so the four are unrolled."""
        x1 = self.blocks1(self.patch_embed(x))
        x2 = self.blocks2(x1)
        x3 = self.blocks3(x2)
        return [x1, x2, x3, self.blocks4(x3)]

    def forward_features(self, x):
        self.check_input(x)
        if torch.jit.is_scripting():
            return self._stage_outputs_scripted(x)[-1]
        x = self.patch_embed(x)
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return x

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = self.head_drop(x)
        if pre_logits:
            return x
        if self.distillation:
            x, x_dist = self.head(x), self.head_dist(x)
            if self.training and self.distilled_training and not torch.jit.is_scripting():
                return x, x_dist
            return (x + x_dist) / 2
        return self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def fuse(self) -> "LSNet":
        """Fuse in place for inference (BN folding, RepVGG merge, distillation heads averaged)."""
        if self.distillation and isinstance(self.head, BNLinear):
            head, head_dist = self.head.fuse(), self.head_dist.fuse()
            head.weight.copy_((head.weight.double() + head_dist.weight.double()) / 2)
            head.bias.copy_((head.bias.double() + head_dist.bias.double()) / 2)
            self.head = head
            del self.head_dist
            self.distillation = False
        fuse_modules(self)
        for m in self.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = True  # every ReLU here follows a conv whose output nothing else reads
        return self.eval()


# ----- checkpoints -----------------------------------------------------------------------

def release_safe_globals() -> list:
    """Non-tensor globals the release's checkpoint files contain (its argparse arguments)."""
    import argparse

    return [argparse.Namespace]


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: LSNet) -> Dict[str, torch.Tensor]:
    """Adapt a release (or timm-style) state_dict to ``model``.

    Unwraps ``{'model': ...}``, strips DDP's ``module.`` prefix, rebuilds the attention bias
    index buffers for the model's grid and resizes bias tables trained at another grid.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    elif "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    target = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.endswith("attention_bias_idxs") and k in target:
            v = target[k].clone()  # derived from the grid, not learned
        elif k.endswith("attention_biases") and k in target and v.shape != target[k].shape \
                and v.dim() == 2 and v.shape[0] == target[k].shape[0]:
            heads, old, new = v.shape[0], int(round(v.shape[1] ** 0.5)), int(round(target[k].shape[1] ** 0.5))
            if old * old == v.shape[1] and new * new == target[k].shape[1]:
                v = F.interpolate(v.float().view(1, heads, old, old), size=(new, new), mode="bicubic",
                                  align_corners=False).reshape(heads, new * new).to(v.dtype)
        out[k] = v
    return out


# ----- registry ----------------------------------------------------------------------------

def _cfg(**kwargs):
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (4, 4),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.0.c",
        "classifier": "head.l",
        "license": "mit",
        "paper_ids": "arXiv:2503.23135",
        **kwargs,
    }


#: File name of each variant's checkpoint in the authors' release.
RELEASE_FILES = {v: f"{v}.pth" for v in ("lsnet_t", "lsnet_s", "lsnet_b", "lsnet_t_distill", "lsnet_s_distill",
                                         "lsnet_b_distill")}

default_cfgs = generate_default_cfgs({
    "lsnet_t.in1k": _cfg(hf_hub_id="jameslahm/lsnet_t"),
    "lsnet_s.in1k": _cfg(hf_hub_id="jameslahm/lsnet_s"),
    "lsnet_b.in1k": _cfg(hf_hub_id="jameslahm/lsnet_b"),
    "lsnet_t_distill.in1k": _cfg(hf_hub_id="jameslahm/lsnet_t_distill",
                                 classifier=("head.l", "head_dist.l")),
    "lsnet_s_distill.in1k": _cfg(hf_hub_id="jameslahm/lsnet_s_distill",
                                 classifier=("head.l", "head_dist.l")),
    "lsnet_b_distill.in1k": _cfg(hf_hub_id="jameslahm/lsnet_b_distill",
                                 classifier=("head.l", "head_dist.l")),
})

#: Architecture of each variant (the release's arguments; heads 3 in stages 1-3 are unused).
MODEL_ARGS = {
    "lsnet_t": dict(embed_dim=(64, 128, 256, 384), depth=(0, 2, 8, 10), num_heads=(3, 3, 3, 4)),
    "lsnet_s": dict(embed_dim=(96, 192, 320, 448), depth=(1, 2, 8, 10), num_heads=(3, 3, 3, 4)),
    "lsnet_b": dict(embed_dim=(128, 256, 384, 512), depth=(4, 6, 8, 10), num_heads=(3, 3, 3, 4)),
}


class PretrainedWeightsUnavailable(RuntimeError):
    """``pretrained=True`` could not fetch the weights (offline, or the hub refused)."""


def _offline_message(variant: str, err: Exception) -> str:
    name = RELEASE_FILES[variant]
    hub = f"jameslahm/{variant}"
    return (
        f"Could not fetch pretrained weights for '{variant}' from the Hugging Face hub ({hub}): "
        f"{type(err).__name__}: {err}\n"
        f"Download '{name}' from the authors' release (https://huggingface.co/jameslahm/lsnet/blob/main/{name}) "
        f"and pass it as a local file:\n"
        f"    timm.create_model('{variant}', pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/{name}'))\n"
        f"or build the model without weights and call lsnet.load_checkpoint(model, '/path/to/{name}')."
    )


def _create_lsnet(variant: str, pretrained: bool = False, **kwargs) -> LSNet:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    # the release's .pth files pickle an argparse.Namespace: allow exactly that, nothing else
    safe = torch.serialization.safe_globals(release_safe_globals()) if pretrained else contextlib.nullcontext()
    try:
        with safe:
            return build_model_with_cfg(
                LSNet, variant, pretrained,
                pretrained_filter_fn=checkpoint_filter_fn,
                feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
                **kwargs,
            )
    except (OSError, RuntimeError, ValueError) as err:
        if not pretrained:
            raise
        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        if overlay.get("file") or overlay.get("state_dict") is not None:
            raise
        raise PretrainedWeightsUnavailable(_offline_message(variant.split(".")[0], err)) from err


@register_model
def lsnet_t(pretrained=False, **kwargs) -> LSNet:
    """LSNet-T: 11.4 M parameters, 0.32 GMACs at 224."""
    return _create_lsnet("lsnet_t", pretrained, **dict(MODEL_ARGS["lsnet_t"], **kwargs))


@register_model
def lsnet_s(pretrained=False, **kwargs) -> LSNet:
    """LSNet-S: 16.1 M parameters, 0.54 GMACs at 224."""
    return _create_lsnet("lsnet_s", pretrained, **dict(MODEL_ARGS["lsnet_s"], **kwargs))


@register_model
def lsnet_b(pretrained=False, **kwargs) -> LSNet:
    """LSNet-B: 23.3 M parameters, 1.25 GMACs at 224."""
    return _create_lsnet("lsnet_b", pretrained, **dict(MODEL_ARGS["lsnet_b"], **kwargs))


@register_model
def lsnet_t_distill(pretrained=False, **kwargs) -> LSNet:
    """LSNet-T with a distillation head (DeiT-style), as trained for the paper's starred results."""
    return _create_lsnet("lsnet_t_distill", pretrained, **dict(MODEL_ARGS["lsnet_t"], distillation=True, **kwargs))


@register_model
def lsnet_s_distill(pretrained=False, **kwargs) -> LSNet:
    """LSNet-S with a distillation head."""
    return _create_lsnet("lsnet_s_distill", pretrained, **dict(MODEL_ARGS["lsnet_s"], distillation=True, **kwargs))


@register_model
def lsnet_b_distill(pretrained=False, **kwargs) -> LSNet:
    """LSNet-B with a distillation head."""
    return _create_lsnet("lsnet_b_distill", pretrained, **dict(MODEL_ARGS["lsnet_b"], distillation=True, **kwargs))
