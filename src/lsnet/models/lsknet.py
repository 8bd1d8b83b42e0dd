"""LSKNet: "Large Selective Kernel Network for Remote Sensing Object Detection" (Li et al.,
ICCV 2023), the backbone of the authors' mmrotate release, in timm's conventions.

Paper: https://arxiv.org/abs/2303.09030

Four stages, each an overlapping patch embedding (convolution with bias + BatchNorm), a
series of blocks and a LayerNorm over channels. A block is VAN's: ``x + layer_scale_1 *
attn(norm1(x))`` then ``x + layer_scale_2 * mlp(norm2(x))`` with BatchNorm as norms; its
token mixer is the LSK block, which mixes two large depth-wise receptive fields (5x5, then
7x7 dilated by 3) with a per-pixel spatial selection computed from their channel mean and
max. The normalised outputs of the four stages (strides 4, 8, 16, 32) are the backbone's
features; the classifier (VAN's) averages the last one and applies one ``Linear``.

Module names, key names and numerics follow the release, so its files (the ImageNet
backbones ``lsk_{t,s}_backbone.pth.tar`` and the mmrotate detectors, whose backbone keys are
prefixed ``backbone.``) load strictly. On top of the release: any input size,
``features_only``/``forward_intermediates``, gradient checkpointing, ``reset_classifier``
and BatchNorm folding for inference (``fuse()``).
"""

# No ``from __future__ import annotations`` here: torch.fx copies the string annotation of
# ``forward`` into the code it generates, where TorchScript cannot resolve it.
import contextlib
import math
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq

from .fuse import fuse_bn_into_conv, fuse_bn_into_conv1x1
from .lsnet import release_safe_globals
from .stages import StagedModel, stage_intermediates, take_intermediates

__all__ = ["LSKNet", "LSKBlock", "LSKAttention", "LSKMlp", "LSKNetBlock", "OverlapPatchEmbed", "LSKNET_ARGS",
           "lsknet_checkpoint_filter_fn"]


class OverlapPatchEmbed(nn.Module):
    """Convolution with bias (``proj``), stride ``stride`` and padding ``kernel // 2``, then
    BatchNorm2d (``norm``)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 7, stride: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, patch_size // 2)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class LSKBlock(nn.Module):
    """The large selective kernel: two depth-wise convolutions in series (5x5, then 7x7 with
    dilation 3: receptive fields 5 and 23), each reduced to ``dim / 2`` channels, weighted per
    pixel by a two-channel sigmoid map computed from their channel mean and max, summed and
    projected back to ``dim`` channels; the result gates the input."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, stride=1, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, half, 1)
        self.conv2 = nn.Conv2d(dim, half, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(half, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = self.conv0(x)
        large = self.conv_spatial(small)
        small, large = self.conv1(small), self.conv2(large)
        both = torch.cat([small, large], dim=1)
        pooled = torch.cat([both.mean(dim=1, keepdim=True), both.amax(dim=1, keepdim=True)], dim=1)
        select = self.conv_squeeze(pooled).sigmoid()
        mixed = small * select[:, 0:1] + large * select[:, 1:2]
        return x * self.conv(mixed)


class LSKAttention(nn.Module):
    """1x1 ``proj_1``, GELU, the LSK block (``spatial_gating_unit``), 1x1 ``proj_2``, plus the
    input."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LSKBlock(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DWConv(nn.Module):
    """Depth-wise 3x3 convolution with bias, kept in its own module for the release's key
    name ``mlp.dwconv.dwconv``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class LSKMlp(nn.Module):
    """1x1 ``fc1``, depth-wise 3x3, GELU, dropout, 1x1 ``fc2``, dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class LSKNetBlock(nn.Module):
    """``x + drop_path(layer_scale_1 * attn(norm1(x)))``, then ``x + drop_path(layer_scale_2 *
    mlp(norm2(x)))``; BatchNorm norms, per-channel layer scales initialised to 1e-2."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-2):
        super().__init__()
        # registration order = the release's state_dict order (norm1, norm2, attn, mlp)
        self.norm1 = nn.BatchNorm2d(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.attn = LSKAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = LSKMlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


def _channel_layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map, as the release does it: on the flattened
    tokens, reshaped back."""
    b, c, h, w = x.shape
    x = norm(x.flatten(2).transpose(1, 2))
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()


class LSKNet(StagedModel):
    """LSKNet backbone and classifier.

    The modules of stage ``i`` (1-4) are ``patch_embed{i}``, ``block{i}`` (a Sequential of
    :class:`LSKNetBlock`) and ``norm{i}``, the release's names; ``stages`` gives them grouped.

    Args:
        embed_dims: channels per stage.
        depths: blocks per stage.
        mlp_ratios: MLP expansion per stage.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for no classifier.
        drop_rate: dropout inside the MLPs (the release's ``drop_rate``; its detection
            configs use 0.1). There is no dropout before the classifier (VAN has none).
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
        global_pool: ``'avg'`` or ``''`` (no pooling in ``forward_head``).
        device, dtype: where and in which floating-point type the parameters live (timm's
            ``create_model(..., device=, dtype=)``).

    Scriptable (``torch.jit.script``) and traceable by torch.fx (timm's feature extraction).
    """

    __jit_unused_properties__ = ["stages"]  # a list of module lists: not scriptable

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 6, 3),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        if not (len(embed_dims) == len(depths) == len(mlp_ratios)) or not embed_dims:
            raise ValueError(f"LSKNet: embed_dims, depths and mlp_ratios need one entry per stage; got {embed_dims}, "
                             f"{depths}, {mlp_ratios}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes, self.in_chans, self.global_pool = num_classes, in_chans, global_pool
        self.embed_dims = tuple(embed_dims)
        self.num_stages = len(embed_dims)
        self.grad_checkpointing = False
        # on the CPU even under a `with torch.device("meta")` block: the rates are Python floats
        dpr = torch.linspace(0, drop_path_rate, max(sum(depths), 1), device="cpu").tolist()
        self.feature_info = []
        cur, chans, reduction = 0, in_chans, 1
        for i, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios, strict=True)):
            first = i == 0
            # setattr in this order gives the release's key order: patch_embed1, block1, norm1, ...
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(chans, dim, 7 if first else 3, 4 if first else 2))
            setattr(self, f"block{i + 1}", nn.Sequential(*[
                LSKNetBlock(dim, ratio, drop_rate, dpr[cur + j]) for j in range(depth)]))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim, eps=1e-6))
            cur += depth
            chans = dim
            reduction *= 4 if first else 2
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f"norm{i + 1}"))
        self.num_features = self.head_hidden_size = chans
        self.head = nn.Linear(chans, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the release's initialisation (VAN's): He-normal convolutions by fan-out, truncated
        # normal linears, unit LayerNorms
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def stages(self) -> List[nn.ModuleList]:
        """Each stage's modules ``[patch_embed{i}, block{i}, norm{i}]`` (views: the modules are
        the model's own, e.g. to freeze a stage)."""
        return [nn.ModuleList(self._stage_modules(i)) for i in range(self.num_stages)]

    def _stage_modules(self, i: int):
        return getattr(self, f"patch_embed{i + 1}"), getattr(self, f"block{i + 1}"), getattr(self, f"norm{i + 1}")

    # ----- timm model API ------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self):
        """Parameter names excluded from weight decay (the layer scales)."""
        return {n for n, _ in self.named_parameters() if "layer_scale" in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        """Parameter groups for layer-wise learning-rate decay."""
        if coarse:
            return dict(stem=r"^patch_embed1", blocks=r"^(?:patch_embed|block|norm)(\d+)")
        # a stage's patch embedding goes before its blocks, its norm after them
        return dict(stem=r"^patch_embed1", blocks=[(r"^block(\d+)\.(\d+)", None), (r"^patch_embed(\d+)", None),
                                                   (r"^norm(\d+)", (99999,))])

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        patch_embed, blocks, norm = self._stage_modules(i)
        x = patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(blocks, x)
        else:
            x = blocks(x)
        return _channel_layer_norm(norm, x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Forward returning the normalised outputs of the selected stages (strides 4, 8, 16,
        32); ``norm`` is accepted for timm's API, every stage output is normalised anyway."""
        if torch.jit.is_scripting():
            return take_intermediates(self._stage_outputs_scripted(x), indices, stop_early, intermediates_only,
                                      output_fmt, "LSKNet")
        # stages are passed by index: the modules of a stage are three attributes of the model
        return stage_intermediates(nn.Identity(), list(range(self.num_stages)), self._run_stage, x, indices,
                                   stop_early, intermediates_only, output_fmt, "LSKNet")

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        """Drop the stages after the last requested one (and the head)."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            for name in ("patch_embed", "block", "norm"):
                delattr(self, f"{name}{i + 1}")
        self.num_stages = max_index + 1
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The four stages: ``(B, C, H, W) -> (B, C4, ceil(H/32), ceil(W/32))``, normalised."""
        if torch.jit.is_scripting():
            return self._stage_outputs_scripted(x)[-1]
        for i in range(self.num_stages):
            x = self._run_stage(i, x)
        return x

    def _stage_outputs_scripted(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every stage's (normalised) output, as TorchScript compiles it: it reads no attribute by
        a computed name (``_stage_modules``), so walk the children instead, which are registered
        in stage order (``patch_embed1``, ``block1``, ``norm1``, ``patch_embed2``, ..., then
        ``head``). Told apart by name: TorchScript's ``isinstance`` on unrolled children is
        unreliable."""
        outputs: List[torch.Tensor] = []
        for name, child in self.named_children():
            if name.startswith("patch_embed") or name.startswith("block"):
                x = child(x)
            elif name.startswith("norm"):  # _channel_layer_norm (TorchScript takes no module arguments)
                b, c, h, w = x.shape
                x = child(x.flatten(2).transpose(1, 2)).reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
                outputs.append(x)
        return outputs

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average of the last stage's normalised tokens (VAN's head), then the classifier."""
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def fuse(self) -> "LSKNet":
        """Fold BatchNorms into convolutions, in place (eval mode): each patch embedding's norm
        into its ``proj``, and each block's ``norm2`` into ``mlp.fc1`` (a 1x1 convolution, so
        the fold is exact). ``norm1`` stays: its output is also the attention's shortcut."""
        self.eval()
        for i in range(self.num_stages):
            patch_embed, blocks, _ = self._stage_modules(i)
            if isinstance(patch_embed.norm, nn.BatchNorm2d):
                patch_embed.proj = fuse_bn_into_conv(patch_embed.proj, patch_embed.norm)
                patch_embed.norm = nn.Identity()
            for block in blocks:
                if isinstance(block.norm2, nn.BatchNorm2d):
                    block.mlp.fc1 = fuse_bn_into_conv1x1(block.norm2, block.mlp.fc1)
                    block.norm2 = nn.Identity()
        return self


# ----- checkpoints -----------------------------------------------------------------------

def _mmcv_ema_name(key: str, prefix: str = "backbone.") -> str:
    """Where mmcv's EMAHook keeps the average of parameter ``key``: a buffer of the detector
    named after the parameter's full name, dots replaced by underscores."""
    return "ema_" + (prefix + key).replace(".", "_")


def lsknet_checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: LSKNet, use_ema: bool = False,
                                keep_model_head: bool = True) -> Dict[str, torch.Tensor]:
    """Adapt a release file's state_dict (ImageNet backbone or mmrotate detector) to ``model``.

    Unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` and DDP's ``module.`` prefix. From a
    detector (keys ``backbone.*``) only the backbone is kept, without the prefix; the neck and
    heads, and mmcv's EMA copies (``ema_backbone_...``), are dropped, or with ``use_ema`` the
    EMA copies replace the parameters they average. With ``keep_model_head`` (timm's
    pretrained path) a file without classifier leaves the model's own initialised one, as timm
    does when the classifier does not fit.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    elif "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    detector = any(k.startswith("backbone.") for k in state_dict)
    out = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")} if detector else {
        k: v for k, v in state_dict.items() if not k.startswith("ema_")}
    if use_ema:
        prefix = "backbone." if detector else ""
        for key in list(out):
            ema = state_dict.get(_mmcv_ema_name(key, prefix))
            if ema is not None:
                out[key] = ema
    if keep_model_head and not any(k.startswith("head.") for k in out):
        out.update({k: v for k, v in model.state_dict().items() if k.startswith("head.")})
    return out


# ----- registry ----------------------------------------------------------------------------

def _cfg(**kwargs):
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed1.proj", "classifier": "head",
        "license": "cc-by-nc-4.0", "paper_ids": "arXiv:2303.09030", **kwargs,
    }


#: File name of each variant's ImageNet-pretrained backbone in the authors' release (not on the
#: model hub: pass it with ``pretrained_cfg_overlay=dict(file=...)`` or ``lsnet.load_checkpoint``).
RELEASE_FILES = {"lsknet_t": "lsk_t_backbone.pth.tar", "lsknet_s": "lsk_s_backbone.pth.tar"}

default_cfgs = generate_default_cfgs({
    "lsknet_t.in1k": _cfg(),
    "lsknet_s.in1k": _cfg(),
})

#: Architecture of each variant (the release's).
LSKNET_ARGS = {
    "lsknet_t": dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4)),
    "lsknet_s": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), mlp_ratios=(8, 8, 4, 4)),
}


def _create_lsknet(variant: str, pretrained: bool = False, **kwargs) -> LSKNet:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    # the ImageNet backbones were saved by timm's training script, which pickles its argparse
    # arguments: timm reads files weights-only, so allow exactly that global
    safe = torch.serialization.safe_globals(release_safe_globals()) if pretrained else contextlib.nullcontext()
    with safe:
        return build_model_with_cfg(LSKNet, variant, pretrained, pretrained_filter_fn=lsknet_checkpoint_filter_fn,
                                    feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
                                    **dict(LSKNET_ARGS[variant], **kwargs))


@register_model
def lsknet_t(pretrained: bool = False, **kwargs) -> LSKNet:
    """LSKNet-T: 3,990,190 backbone parameters (4.25 M with a 1000-class classifier)."""
    return _create_lsknet("lsknet_t", pretrained, **kwargs)


@register_model
def lsknet_s(pretrained: bool = False, **kwargs) -> LSKNet:
    """LSKNet-S: 13,840,892 backbone parameters (14.35 M with a 1000-class classifier)."""
    return _create_lsknet("lsknet_s", pretrained, **kwargs)
