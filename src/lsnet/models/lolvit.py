"""LOLViT: "Lightweight Backbone Networks Only Require Adaptive Lightweight Self-Attention
Mechanisms" (Li et al.), reconstructed from the paper; no code was published.

LOLViT is a GhostNet with three hybrid stages (strides 8, 16, 32). Each hybrid stage is a
stride-2 GhostNet bottleneck followed by a ``LOLViTBlock``: a 1x1 convolution up-scales the
channels to the Transformer width, the map is serialised into tokens, ``L`` Transformer
layers with Fast Window Attention (FWA) run on them, and ``FeatureFusion`` merges the global
result with the block's (local, GhostNet) input.

FWA (Sec. 4, Eqs. 2-5): queries come from the whole token sequence; keys and values come from
a short "key sequence" made by FAWA (Eq. 4) from a second projection, the *Token*. FAWA sums
the tokens of each window of ``P_l`` columns over the full height of the map (the sequence
split into rows of ``F = W / P_w`` tokens, the rows stacked and summed) and normalises the sums
(divides by the number of tokens summed), so the key length adapts to the input width. The
key sequence is then folded (``Fold`` adjacent keys concatenated along the feature axis), a
1x1 convolution (a ``Linear`` on the folded head dimension, shared by the heads) maps it to
``2 * head_dim`` and ``Split`` gives FWA_K and FWA_V. Attention weights use DReLu (Eq. 3):
``ReLU(x) / ((DP + eps) * N)`` with a learnable ``DP`` (0.5 at init, the best of Table 10)
and ``N`` the key sequence length, or SoftMax (an ablation of the paper). With ``cache=True``
(Eq. 5) only the first layer of a block computes FAWA(Token); later layers take the cached
key sequence through their own 1x1 convolution and have no Token projection.

Parameter counts (Tables 16-17, backbone without classifier) and what reproduces them
-------------------------------------------------------------------------------------------
Every count of both tables is reproduced exactly (``tests/test_lolvit.py`` checks each module
and the totals, 1,056,669 for S and 1,862,709 for X). How:

* ``Conv`` (S 464, X 928): 3x3 stride-2 convolution without bias + BatchNorm, 16 output
  channels for S and 32 for X (the tables list X's channels for both models; 3*9*16 + 2*16 =
  464 is only met with 16).
* ``GhostNetBlock`` (all 12 rows, derived, not fitted): GhostNet's bottleneck with
  ``mid = 2 * in`` channels; its Ghost modules use a **5x5** depth-wise "cheap operation"
  (GhostNet's default is 3x3; 3x3 misses every row); stride-2 blocks have a 3x3 depth-wise
  convolution and a depth-wise 3x3 + 1x1 shortcut (as does S's first, stride-1 block, whose
  channels change); the stride-2 blocks of the hybrid stages carry squeeze-excitation (ratio
  0.25 on ``mid``, GhostNet's SE), the others none. The real channels are
  X: 32 -> 32 -> 64 -> 64 -> 96 -> 128 -> 192 and S: 16 -> 32 -> 48 -> 48 -> 64 -> 96 -> 128
  (S's rows equal X's rows of the same real channels: S "96->128" = X "64->96" = 30,288 and
  S "128->192" = X "96->128" = 60,528). This is timm's ``GhostBottleneck`` with its Ghost
  modules rebuilt by timm's ``GhostModule(dw_size=5)``.
* ``LOLViTBlock`` (S 163,927 / 295,703 / 472,535; X 269,943 / 468,439 / 900,279): the paper
  gives the structure in words only and none of the widths. Our reading: 1x1 Conv+BN+SiLU
  ``c -> d``; per layer LayerNorm, a bias-free ``Linear(d, 2d)`` for Query and Token, the fold
  convolution ``Linear(D*Fold, 2D)`` with bias (``D = d / heads``), the scalar DP, an output
  ``Linear(d, d)``, LayerNorm and an MLP ``d -> m -> d``; FeatureFusion = 1x1 Conv+BN+SiLU
  ``d -> c``, then a bottleneck on ``[input, global]``: 1x1 Conv+BN+SiLU ``2c -> e``, parallel
  depth-wise 5x5 and 7x7 Conv+BN (the "large kernels" of App. A) added to it, 1x1 Conv+BN
  ``e -> c``, added to the block input. With the paper's final configuration (L 1-1-1, Fold
  1-2-4, patch 1-1-1, 4 heads; Sec. 6) a block has
  ``3d^2 + 2cd + 8d + 4c + 2 D^2 Fold + 2D + 1 + (2d+1) m + (3c+80) e`` parameters. The tables
  give hints: all six counts are odd and equal 23 mod 32 (width-dependent terms that are
  multiples of 32 plus one fixed odd part, e.g. the DP scalar, common to every block), and
  S's last block exceeds X's middle block (both c = 128)
  by exactly 4,096, what a 32-wide fold convolution gains from Fold 2 to Fold 4 (``2 * 32^2 *
  2``) if all else in the two blocks is equal. But following that hint, the c = 96 pair (S's
  middle block, X's first) differs by 25,760, which nothing Fold-related explains.
  ``tools/lolvit_block_search.py`` enumerates 752,640 structural readings of the text (local
  layer none / 3x3 / depth-wise + 1x1 / Ghost; up-scaling with or without BN; MobileViT's
  fusion or FeatureFusion with 5x5+7x7 or 3x3+5x5+7x7 branches, on the concatenation or the
  global map alone, hidden width c/2, c or 2c; a final LayerNorm or not; Query/Token bias;
  head width d/4, 8 or 16; the K/V convolution shared by the heads, over all heads or one
  per head, with or without bias; DP per layer or per head; output projection with or without
  bias or none; MLP ratio 1-4; L 1-1-1, 1-2-3 or 2-2-2 with the cache, 2-4-3 or 3-3-3 with
  and without it). With the Transformer width free per block (16..768, step 8) no reading reproduces
  more than one of the six counts; the closest misses a block by 0.32%, by 3.0% when blocks
  of equal channels share ``d``, and by 6.6% with ``d = c, 1.5c`` or ``2c``. (Earlier
  sessions' ad-hoc searches, also with MobileViT's dims and MLP ratios, Ghost up-scaling and
  1-4 layers, found nothing either.) The widths ``(d, m, e)`` below are therefore **fitted**
  per block (solved so that the count is exact, preferring m ~ 2d, e ~ c, d ~ 1.5c); they are
  not the authors' values, which are unknown, and they do not follow the 4,096 hint:

  ========  =====  ====  ====  ====  ====  ===========
  model     stage  c     d     m     e     params
  ========  =====  ====  ====  ====  ====  ===========
  LOLViT-S  1/8    64    136   266   54    163,927
  LOLViT-S  1/16   96    176   318   128   295,703
  LOLViT-S  1/32   128   200   482   185   472,535
  LOLViT-X  1/8    96    184   274   70    269,943
  LOLViT-X  1/16   128   216   426   161   468,439
  LOLViT-X  1/32   192   288   678   160   900,279
  ========  =====  ====  ====  ====  ====  ===========

Other choices the text leaves open: ReLU in the GhostNet parts (GhostNet's), SiLU elsewhere
(MobileViT's); FAWA's window ``P_l`` equals the patch size and its normalisation is the mean;
keys are zero-padded to a multiple of Fold; a map whose size is not a multiple of the patch
size is zero-padded and cropped back; DReLu's ``N`` is the number of keys after folding.

The classifier (not in the tables) is global average pooling and one ``Linear``.
"""

# No ``from __future__ import annotations`` here: torch.fx copies the string annotation of
# ``forward`` into the code it generates, where TorchScript cannot resolve it.
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, register_notrace_module, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from timm.models.ghostnet import GhostBottleneck, GhostModule

from .fuse import fuse_bn_into_conv
from .stages import StagedModel, stage_intermediates, take_intermediates

__all__ = ["LOLViT", "LOLViTBlock", "FWA", "FWALayer", "FeatureFusion", "MobileViTFusion", "GhostNetBlock",
           "drelu", "fawa", "fold_keys", "LOLVIT_CFGS"]


# ----- functional pieces -------------------------------------------------------------------

def drelu(scores: torch.Tensor, dp: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """DReLu (Eq. 3): ``ReLU(scores) / ((dp + eps) * N)``, ``N`` the key count (last dim)."""
    return F.relu(scores) / ((dp + eps) * scores.shape[-1])


def fawa(tokens: torch.Tensor, grid_w: int, window: int = 1) -> torch.Tensor:
    """Full-scene Adaptive Window Aggregation (Eq. 4), normalised.

    ``tokens`` is ``(..., N, D)``, a row-major sequence of a map ``grid_w`` tokens wide. The
    sequence is split into rows of ``grid_w`` tokens, the rows are stacked and summed, and each
    window of ``window`` adjacent columns is summed; the sums are divided by the number of
    tokens in them. Returns ``(..., ceil(grid_w / window), D)``.
    """
    lead = list(tokens.shape[:-2])  # no starred unpacking: TorchScript compiles this
    n, d = tokens.shape[-2], tokens.shape[-1]
    rows = n // grid_w
    cols = tokens.reshape(lead + [rows, grid_w, d]).sum(-3)  # (..., grid_w, D)
    pad = (-grid_w) % window
    if pad:
        cols = F.pad(cols, (0, 0, 0, pad))
    keys = cols.reshape(lead + [(grid_w + pad) // window, window, d]).sum(-2)
    # tokens per window: rows * window, fewer in a padded last window
    count = torch.full((keys.shape[-2], 1), float(rows * window), dtype=tokens.dtype, device=tokens.device)
    if pad:
        count[-1] = rows * (window - pad)
    return keys / count


def fold_keys(keys: torch.Tensor, fold: int) -> torch.Tensor:
    """Fold ``fold`` adjacent keys into one: ``(..., n, D) -> (..., ceil(n / fold), fold * D)``
    (zero-padded to a multiple of ``fold``)."""
    if fold == 1:
        return keys
    lead = list(keys.shape[:-2])
    n, d = keys.shape[-2], keys.shape[-1]
    pad = (-n) % fold
    if pad:
        keys = F.pad(keys, (0, 0, 0, pad))
    return keys.reshape(lead + [(n + pad) // fold, fold * d])


# ----- convolution helpers -----------------------------------------------------------------

class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional activation; ``fuse()`` folds the BN."""

    def __init__(self, in_chs, out_chs, kernel_size=1, stride=1, groups=1, act_layer=nn.SiLU):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2,
                                          groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chs))
        if act_layer is not None:
            self.add_module("act", act_layer())

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """One Conv2d (with bias) followed by the activation, equal in eval mode."""
        conv = fuse_bn_into_conv(self.conv, self.bn)
        return nn.Sequential(conv, self.act) if hasattr(self, "act") else conv


class GhostNetBlock(GhostBottleneck):
    """timm's GhostNet bottleneck with 5x5 cheap operations in both Ghost modules (see the
    module docstring: this is what reproduces the tables' GhostNetBlock counts)."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, stride: int = 1, se_ratio: float = 0.0,
                 dw_kernel_size: int = 3, cheap_kernel_size: int = 5, act_layer=nn.ReLU):
        super().__init__(in_chs, mid_chs, out_chs, dw_kernel_size, stride, act_layer=act_layer, se_ratio=se_ratio)
        self.ghost1 = GhostModule(in_chs, mid_chs, dw_size=cheap_kernel_size, act_layer=act_layer)
        self.ghost2 = GhostModule(mid_chs, out_chs, dw_size=cheap_kernel_size, act_layer=nn.Identity)


# ----- attention -----------------------------------------------------------------------------

class FWA(nn.Module):
    """Fast Window Attention (Eq. 2): full queries, FAWA key sequence, DReLu or SoftMax.

    ``with_token=False`` builds a layer that only takes key sequences from a cache (Eq. 5,
    ``L >= 2``): it has a query projection but no Token projection.
    """

    def __init__(self, dim: int, num_heads: int = 4, fold: int = 1, window: int = 1, attn_fn: str = "drelu",
                 with_token: bool = True, dp_init: float = 0.5, eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"FWA: dim {dim} is not divisible by num_heads {num_heads}")
        if attn_fn not in ("drelu", "softmax"):
            raise ValueError(f"FWA: attn_fn must be 'drelu' or 'softmax', got {attn_fn!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.fold, self.window, self.attn_fn, self.eps = fold, window, attn_fn, eps
        self.with_token = with_token
        self.scale = self.head_dim ** -0.5
        self.qt = nn.Linear(dim, 2 * dim if with_token else dim, bias=False)  # Query (and Token)
        self.kv = nn.Linear(self.head_dim * fold, 2 * self.head_dim)  # 1x1 conv on folded keys -> K, V
        self.dp = nn.Parameter(torch.tensor(float(dp_init)))  # DReLu's DP (unused with SoftMax)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, N, D)

    def key_sequence(self, token: torch.Tensor, grid_w: int) -> torch.Tensor:
        """FAWA(Token) folded: ``(B, N, dim) -> (B, heads, n_keys, fold * head_dim)`` (what the
        cache holds)."""
        return fold_keys(fawa(self._heads(token), grid_w, self.window), self.fold)

    def forward(self, x: torch.Tensor, grid_w: int, cache: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Attend ``x`` (B, N, dim); return the output and the key sequence used (for the cache)."""
        if self.with_token:
            q, token = self.qt(x).chunk(2, dim=-1)
            keys = self.key_sequence(token, grid_w) if cache is None else cache
        else:
            if cache is None:
                raise ValueError("FWA without a Token projection needs a cached key sequence")
            q = self.qt(x)
            keys = cache  # a Tensor, where cache is Optional (TorchScript types each name once)
        k, v = self.kv(keys).chunk(2, dim=-1)  # (B, h, n, D) each
        scores = (self._heads(q) @ k.transpose(-2, -1)) * self.scale
        attn = drelu(scores, self.dp, self.eps) if self.attn_fn == "drelu" else scores.softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(x.shape)
        return self.proj(out), keys


class FWALayer(nn.Module):
    """Pre-norm Transformer layer: ``x + FWA(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, mlp_dim: int, num_heads: int = 4, fold: int = 1, window: int = 1,
                 attn_fn: str = "drelu", with_token: bool = True, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = FWA(dim, num_heads, fold, window, attn_fn, with_token)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.SiLU(), nn.Linear(mlp_dim, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid_w: int, cache: Optional[torch.Tensor] = None):
        """Return the layer output and the key sequence (cache) it used."""
        a, cache = self.attn(self.norm1(x), grid_w, cache)
        x = x + self.drop_path(a)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, cache


# ----- fusion ---------------------------------------------------------------------------------

class FeatureFusion(nn.Module):
    """Global-local fusion (App. A): project the Transformer output back to ``c`` channels,
    then a bottleneck on ``[local, global]`` whose hidden map gets parallel 5x5 and 7x7
    depth-wise branches; the result is added to the block input."""

    def __init__(self, in_chs: int, dim: int, hidden: int, kernels: Sequence[int] = (5, 7)):
        super().__init__()
        self.proj = ConvBnAct(dim, in_chs, 1)
        self.cv1 = ConvBnAct(2 * in_chs, hidden, 1)
        self.branches = nn.ModuleList([ConvBnAct(hidden, hidden, k, groups=hidden, act_layer=None) for k in kernels])
        self.act = nn.SiLU()
        self.cv2 = ConvBnAct(hidden, in_chs, 1, act_layer=None)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Fuse the block input ``x`` (c channels) with the global map ``g`` (dim channels)."""
        h = self.cv1(torch.cat([x, self.proj(g)], dim=1))
        out = h
        for branch in self.branches:
            out = out + branch(h)
        return x + self.cv2(self.act(out))


class MobileViTFusion(nn.Module):
    """MobileViT-v1's fusion (the paper's ablation baseline, Table 11): 1x1 ``dim -> c``, then
    a 3x3 convolution on ``[local, global]``."""

    def __init__(self, in_chs: int, dim: int, hidden: int = 0):
        super().__init__()
        self.proj = ConvBnAct(dim, in_chs, 1)
        self.fuse_conv = ConvBnAct(2 * in_chs, in_chs, 3)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Fuse the block input ``x`` with the global map ``g``."""
        return self.fuse_conv(torch.cat([x, self.proj(g)], dim=1))


@register_notrace_module  # pads and folds by the feature map's size: a leaf for torch.fx
class LOLViTBlock(nn.Module):
    """Up-scaling 1x1 conv, serialisation into patches' token sequences, ``depth`` FWA layers
    (with key-sequence caching), and FeatureFusion with the block input."""

    def __init__(self, in_chs: int, dim: int, mlp_dim: int, fusion_dim: int, depth: int = 1, num_heads: int = 4,
                 fold: int = 1, patch_size: int = 1, window: Optional[int] = None, attn_fn: str = "drelu",
                 cache: bool = True, fusion: str = "feature", drop_path: Union[float, Sequence[float]] = 0.0):
        super().__init__()
        self.patch_size = patch_size
        self.cache = cache
        window = patch_size if window is None else window
        dpr = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.conv_up = ConvBnAct(in_chs, dim, 1)
        self.layers = nn.ModuleList([
            FWALayer(dim, mlp_dim, num_heads, fold, window, attn_fn, with_token=(i == 0 or not cache),
                     drop_path=dpr[i]) for i in range(depth)])
        if fusion == "feature":
            self.fusion = FeatureFusion(in_chs, dim, fusion_dim)
        elif fusion == "mobilevit":
            self.fusion = MobileViTFusion(in_chs, dim)
        else:
            raise ValueError(f"fusion must be 'feature' or 'mobilevit', got {fusion!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.patch_size
        y = self.conv_up(x)
        ph, pw = (-h) % p, (-w) % p
        if ph or pw:
            y = F.pad(y, (0, pw, 0, ph))
        d, hp, wp = y.shape[1], (h + ph) // p, (w + pw) // p
        # (B, d, H, W) -> (B * p * p, hp * wp, d): one sequence per position inside the patch
        t = y.reshape(b, d, hp, p, wp, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, hp * wp, d)
        cache: Optional[torch.Tensor] = None
        for layer in self.layers:
            t, kv = layer(t, wp, cache)
            if self.cache:
                cache = kv
        y = t.reshape(b, p, p, hp, wp, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, hp * p, wp * p)
        if ph or pw:
            y = y[:, :, :h, :w]
        return self.fusion(x, y)


# ----- the network ---------------------------------------------------------------------------

def _ghost(in_chs, out_chs, stride, se=False):
    return dict(in_chs=in_chs, mid_chs=2 * in_chs, out_chs=out_chs, stride=stride, se_ratio=0.25 if se else 0.0)


#: Architecture of each variant: stem width, GhostNetBlocks (5 stages, strides 2..32), and the
#: LOLViTBlocks of stages 3-5 as (d, m, e): Transformer width, MLP width, fusion width.
LOLVIT_CFGS: Dict[str, Dict[str, Any]] = {
    "lolvit_s": dict(
        stem_chs=16,
        ghost=[[_ghost(16, 32, 1)], [_ghost(32, 48, 2), _ghost(48, 48, 1)], [_ghost(48, 64, 2, True)],
               [_ghost(64, 96, 2, True)], [_ghost(96, 128, 2, True)]],
        vit=[(136, 266, 54), (176, 318, 128), (200, 482, 185)],
    ),
    "lolvit_x": dict(
        stem_chs=32,
        ghost=[[_ghost(32, 32, 1)], [_ghost(32, 64, 2), _ghost(64, 64, 1)], [_ghost(64, 96, 2, True)],
               [_ghost(96, 128, 2, True)], [_ghost(128, 192, 2, True)]],
        vit=[(184, 274, 70), (216, 426, 161), (288, 678, 160)],
    ),
}


class LOLViT(StagedModel):
    """LOLViT backbone and classifier (timm conventions).

    Args:
        stem_chs: output channels of the 3x3 stride-2 stem convolution.
        ghost: per stage (5 stages), the GhostNetBlock arguments (see ``GhostNetBlock``).
        vit: for stages 3-5, ``(dim, mlp_dim, fusion_dim)`` of the LOLViTBlock.
        depths: Transformer layers per LOLViTBlock (the paper's ``L``; 1-1-1 is its final).
        folds: ``Fold`` per LOLViTBlock (1-2-4).
        patch_sizes: patch size per LOLViTBlock (1-1-1).
        num_heads: heads per LOLViTBlock (4-4-4).
        attn_fn: ``'drelu'`` or ``'softmax'``.
        cache: key-sequence caching across a block's layers (Eq. 5).
        fusion: ``'feature'`` (FeatureFusion) or ``'mobilevit'`` (MobileViT-v1's fusion).
        drop_path_rate: stochastic depth over the Transformer layers, linearly increasing.
    """

    def __init__(
        self,
        stem_chs: int,
        ghost: Sequence[Sequence[Dict[str, Any]]],
        vit: Sequence[Tuple[int, int, int]],
        depths: Sequence[int] = (1, 1, 1),
        folds: Sequence[int] = (1, 2, 4),
        patch_sizes: Sequence[int] = (1, 1, 1),
        num_heads: Sequence[int] = (4, 4, 4),
        attn_fn: str = "drelu",
        cache: bool = True,
        fusion: str = "feature",
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        if len(ghost) != 5 or len(vit) != 3:
            raise ValueError("LOLViT has 5 stages, the last 3 with a LOLViTBlock")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes, self.in_chans, self.global_pool = num_classes, in_chans, global_pool
        self.grad_checkpointing = False
        self.stem = ConvBnAct(in_chans, stem_chs, 3, 2, act_layer=nn.ReLU)
        dpr = torch.linspace(0, drop_path_rate, max(sum(depths), 1), device="cpu").tolist()  # also under "meta"
        self.stages = nn.Sequential()
        self.feature_info = []
        chs, reduction, j = stem_chs, 2, 0
        for i, blocks in enumerate(ghost):
            stage = nn.Sequential(*[GhostNetBlock(**b) for b in blocks])
            chs = blocks[-1]["out_chs"]
            reduction *= max(b["stride"] for b in blocks) if i > 0 else 1
            if i >= 2:
                k = i - 2
                dim, mlp_dim, fusion_dim = vit[k]
                stage.append(LOLViTBlock(chs, dim, mlp_dim, fusion_dim, depths[k], num_heads[k], folds[k],
                                         patch_sizes[k], attn_fn=attn_fn, cache=cache, fusion=fusion,
                                         drop_path=dpr[j:j + depths[k]]))
                j += depths[k]
            self.stages.append(stage)
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"stages.{i}"))
        self.num_features = self.head_hidden_size = chs
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if device is not None or dtype is not None:  # timm's create_model(..., device=, dtype=)
            self.to(device=device, dtype=dtype)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ----- timm model API ------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self):
        """Parameter names excluded from weight decay (DReLu's DP scalars)."""
        return {n for n, _ in self.named_parameters() if n.endswith(".dp")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        """Parameter groups for layer-wise learning-rate decay."""
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Forward returning the outputs of the selected stages (strides 2, 4, 8, 16, 32)."""
        if torch.jit.is_scripting():
            return take_intermediates(self._stage_outputs_scripted(x), indices, stop_early, intermediates_only,
                                      output_fmt, "LOLViT")
        return stage_intermediates(self.stem, self.stages, self._run, x, indices, stop_early, intermediates_only,
                                   output_fmt, "LOLViT")

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        """Drop the stages after the last requested one (and the head)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def _run(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x)
        return stage(x)

    def _stage_outputs_scripted(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every stage's output, as TorchScript compiles it (it takes no modules as arguments:
        ``_run``)."""
        x = self.stem(x)
        outputs: List[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the five stages: ``(B, 3, H, W) -> (B, C, ceil(H/32), ceil(W/32))``."""
        if torch.jit.is_scripting():
            return self._stage_outputs_scripted(x)[-1]
        x = self.stem(x)
        for stage in self.stages:
            x = self._run(stage, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, dropout and the classifier."""
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def fuse(self) -> "LOLViT":
        """Fold every BatchNorm into the convolution before it, in place (eval mode)."""
        self.eval()
        for module in list(self.modules()):
            if isinstance(module, GhostBottleneck) and isinstance(module.bn_dw, nn.BatchNorm2d):
                module.conv_dw = fuse_bn_into_conv(module.conv_dw, module.bn_dw)
                module.bn_dw = nn.Identity()
            if isinstance(module, ConvBnAct):
                continue  # handled through its parent below
            for name, child in list(module.named_children()):
                if isinstance(child, ConvBnAct):
                    setattr(module, name, child.fuse())
            if isinstance(module, nn.Sequential):
                kids = list(module._modules.items())
                for (n1, a), (n2, b) in zip(kids, kids[1:]):
                    if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                        module._modules[n1] = fuse_bn_into_conv(a, b)
                        module._modules[n2] = nn.Identity()
        return self


# ----- registry ------------------------------------------------------------------------------

def _cfg(**kwargs):
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "stem.conv", "classifier": "head",
        "paper_ids": "LOLViT (Li et al., Northeastern University)", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "lolvit_s.untrained": _cfg(),
    "lolvit_x.untrained": _cfg(),
})


def _create_lolvit(variant: str, pretrained: bool = False, **kwargs) -> LOLViT:
    if pretrained:
        raise ValueError(f"{variant}: no pretrained weights exist (the paper published none)")
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3, 4))
    args = dict(LOLVIT_CFGS[variant], **kwargs)
    return build_model_with_cfg(LOLViT, variant, pretrained,
                                feature_cfg=dict(feature_cls="getter", out_indices=out_indices), **args)


@register_model
def lolvit_s(pretrained: bool = False, **kwargs) -> LOLViT:
    """LOLViT-S (Table 16): 1,056,669 backbone parameters."""
    return _create_lolvit("lolvit_s", pretrained, **kwargs)


@register_model
def lolvit_x(pretrained: bool = False, **kwargs) -> LOLViT:
    """LOLViT-X (Table 17): 1,862,709 backbone parameters."""
    return _create_lolvit("lolvit_x", pretrained, **kwargs)
