"""The backbone-with-neck that the detection tasks share: any timm model with
``features_only`` as a feature extractor (frozen stages, BatchNorm kept in eval mode when
asked) and torchvision's FPN over its four stages, with the levels the LSNet release adds
above and below them. Used by :mod:`lsnet.dense` (RetinaNet, Mask R-CNN, Semantic FPN) and
:mod:`lsnet.rotated` (Oriented R-CNN).

The neck follows the release's detection code: lateral 1x1 and output 3x3 convolutions to
``out_channels`` over the four stages; levels may be added on top (stride-2 convolutions) and
below (a transposed convolution, the release's ``num_extra_trans_convs``). Inputs of any size
work: the top-down pathway upsamples to the size of the lateral it is added to.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from ..errors import ConfigError

__all__ = ["LSNetBackbone", "LSNetFPN"]


class LSNetBackbone(nn.Module):
    """The four LSNet stages as a feature extractor (strides 8, 16, 32, 64).

    Args:
        variant: ``lsnet_t`` / ``lsnet_s`` / ``lsnet_b``, or another timm model with
            ``features_only`` and ``stages`` such as ``lsknet_t`` / ``lsknet_s`` (strides 4-32).
        checkpoint: classification weights to start from (the release's or ours); the
            classifier is dropped.
        norm_eval: keep every BatchNorm in eval mode (statistics frozen) while training, as
            the release's detection and segmentation configs do.
        frozen_stages: freeze the stem and this many first stages (-1: nothing frozen).
        frozen_norm: what the frozen stages' BatchNorm layers do in training: ``"eval"`` keeps
            their statistics (the release), ``"batch"`` normalises with each batch's statistics
            and updates the running ones while every weight stays fixed, for a backbone
            pre-trained on images unlike the new ones. ``norm_eval`` overrides it.
        model_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """

    def __init__(self, variant: str = "lsnet_t", checkpoint: Optional[str] = None, norm_eval: bool = True,
                 frozen_stages: int = -1, frozen_norm: str = "eval", model_kwargs: Optional[Dict] = None):
        super().__init__()
        if frozen_norm not in ("eval", "batch"):  # before loading any weights
            raise ConfigError(f"unknown frozen_norm {frozen_norm!r}; choose eval or batch")
        import timm  # the package's families are registered: importing this module imported lsnet

        from .checkpoint import load_checkpoint

        self.body = timm.create_model(variant, features_only=True, out_indices=(0, 1, 2, 3), **(model_kwargs or {}))
        if checkpoint:
            load_checkpoint(self.body, checkpoint, drop_head=True)
        self.channels: List[int] = self.body.feature_info.channels()
        self.strides: List[int] = self.body.feature_info.reduction()
        self.norm_eval = norm_eval
        self.frozen_stages = frozen_stages
        self.frozen_norm = frozen_norm
        self._freeze()

    def _frozen_modules(self) -> List[nn.Module]:
        net = self.body.model
        if self.frozen_stages < 0:
            return []
        # LSNet has a stem (patch_embed); LSKNet embeds patches inside each of its stages
        stem = [net.patch_embed] if isinstance(getattr(net, "patch_embed", None), nn.Module) else []
        return [*stem, *net.stages[:self.frozen_stages]]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            if self.frozen_norm == "eval":
                module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.body(x)


class _ExtraLevels(ExtraFPNBlock):
    """The levels the release adds to the four FPN outputs, as one torchvision extra block:
    above, stride-2 3x3 convs (the first on the last backbone feature, further ones on the
    previous level after ReLU); below, a 2x2 stride-2 transposed conv on the finest map
    followed by a 3x3 conv (the release's ``num_extra_trans_convs``; torchvision has none)."""

    def __init__(self, last_channels: int, out_channels: int, top: int, below: int):
        super().__init__()
        self.top = nn.ModuleList(
            nn.Conv2d(last_channels if i == 0 else out_channels, out_channels, 3, stride=2, padding=1)
            for i in range(top))
        self.below = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2),
                          nn.Conv2d(out_channels, out_channels, 3, padding=1))
            for _ in range(below))

    def forward(self, results: List[torch.Tensor], x: List[torch.Tensor], names: List[str]):
        results = list(results)
        for i, conv in enumerate(self.top):
            results.append(conv(x[-1] if i == 0 else F.relu(results[-1])))
        for trans in self.below:
            results.insert(0, trans(results[0]))
        return results, [str(i) for i in range(len(results))]


class LSNetFPN(nn.Module):
    """Backbone + FPN returning an ``OrderedDict`` of ``out_channels``-wide maps named "0",
    "1", ... from the finest, as torchvision's detectors expect (``out_channels`` attribute).
    The neck is torchvision's ``FeaturePyramidNetwork`` (its top-down pathway upsamples to
    each lateral's exact size) with :class:`_ExtraLevels` for the release's extra levels.

    Args:
        backbone: an :class:`LSNetBackbone`.
        out_channels: FPN width (256).
        extra_top: levels added above the last stride (RetinaNet: 1).
        extra_trans: levels added below the first stride (Mask R-CNN, Semantic FPN: 1).
    """

    def __init__(self, backbone: LSNetBackbone, out_channels: int = 256, extra_top: int = 0, extra_trans: int = 0):
        super().__init__()
        self.backbone = backbone
        self.out_channels = out_channels
        chans = backbone.channels
        rng = torch.get_rng_state()
        self.neck = FeaturePyramidNetwork(chans, out_channels,
                                          extra_blocks=_ExtraLevels(chans[-1], out_channels, extra_top, extra_trans))
        first = backbone.strides[0]
        self.strides = ([first >> (i + 1) for i in reversed(range(extra_trans))] + list(backbone.strides)
                        + [backbone.strides[-1] << (i + 1) for i in range(extra_top)])
        # The release initialises the neck with Xavier-uniform weights and zero biases. The
        # random stream is rewound and drawn in the order of the neck this one replaced
        # (laterals, outputs, levels above, levels below), so that seeded runs, and the
        # presets measured with them, stay exactly as they were.
        torch.set_rng_state(rng)
        extra = self.neck.extra_blocks
        convs = [m for block in (*self.neck.inner_blocks, *self.neck.layer_blocks, *extra.top, *extra.below)
                 for m in block.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        for m in convs:
            m.reset_parameters()
        for m in convs:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        self._register_load_state_dict_pre_hook(_rename_old_neck_keys)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.backbone(x)
        return self.neck(OrderedDict((str(i), f) for i, f in enumerate(feats)))


# Checkpoints written before the neck was torchvision's name its parts differently.
_OLD_NECK_KEYS = (("lateral.", "neck.inner_blocks.", True), ("output.", "neck.layer_blocks.", True),
                  ("extra_top.", "neck.extra_blocks.top.", False), ("extra_trans.", "neck.extra_blocks.below.", False))


def _rename_old_neck_keys(state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new, wrapped in _OLD_NECK_KEYS:
            if rest.startswith(old):
                index, _, param = rest[len(old):].partition(".")
                state_dict[prefix + new + index + (".0." if wrapped else ".") + param] = state_dict.pop(key)
                break
