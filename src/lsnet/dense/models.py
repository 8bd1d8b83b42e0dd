"""LSNet backbones with an FPN neck (:mod:`lsnet.models.fpn`, shared with the oriented
detector) for torchvision's RetinaNet and Mask R-CNN, and a Semantic FPN for semantic
segmentation.

The neck follows the release's detection code: lateral 1x1 and output 3x3 convolutions to
256 channels over the four LSNet stages (strides 8, 16, 32, 64); RetinaNet adds a level on
top with a stride-2 convolution on the last backbone feature (strides 8-128); Mask R-CNN
and Semantic FPN add one level below, at stride 4, with a transposed convolution (the
release's ``num_extra_trans_convs=1``). Inputs of any size work: the top-down pathway
upsamples to the size of the lateral it is added to, not by a fixed factor of two.
"""

from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.fpn import LSNetBackbone, LSNetFPN

__all__ = ["LSNetBackbone", "LSNetFPN", "SemanticFPN", "retinanet_lsnet", "maskrcnn_lsnet", "semantic_fpn_lsnet",
           "retinanet_lsnet_t", "retinanet_lsnet_s", "retinanet_lsnet_b", "maskrcnn_lsnet_t", "maskrcnn_lsnet_s",
           "maskrcnn_lsnet_b", "semantic_fpn_lsnet_t", "semantic_fpn_lsnet_s", "semantic_fpn_lsnet_b"]


class SemanticFPN(nn.Module):
    """Semantic FPN (Kirillov et al., 2019): per-level conv-norm-ReLU(-upsample x2) towers
    brought to the finest level, summed, a 1x1 classifier, upsampled to the input size.

    ``forward`` returns logits (N, num_classes, H, W) at the input resolution. With
    ``test_size`` set, inference (eval mode) first resizes the input to that shorter side,
    as torchvision's detectors do with ``min_size``, and upsamples the logits back.
    """

    def __init__(self, fpn: LSNetFPN, num_classes: int, channels: int = 128, dropout: float = 0.1,
                 image_mean: Sequence[float] = (0.485, 0.456, 0.406), image_std: Sequence[float] = (0.229, 0.224, 0.225),
                 test_size: Optional[int] = None):
        super().__init__()
        self.fpn = fpn
        self.test_size = test_size
        # inputs are RGB in [0, 1]; normalised here as torchvision's detectors do in their transform
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, -1, 1, 1), persistent=False)
        self.num_classes = num_classes
        finest = fpn.strides[0]
        self.towers = nn.ModuleList()
        for stride in fpn.strides:
            steps = max(int(round(math.log2(stride / finest))), 0)
            layers: List[nn.Module] = []
            for k in range(max(steps, 1)):
                layers += [nn.Conv2d(fpn.out_channels if k == 0 else channels, channels, 3, padding=1, bias=False),
                           nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
                if steps > 0:
                    layers.append(_Upsample2x())
            self.towers.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.test_size and not self.training and min(size) != self.test_size:
            scale = self.test_size / min(size)
            x = F.interpolate(x, size=(max(1, round(size[0] * scale)), max(1, round(size[1] * scale))),
                              mode="bilinear", align_corners=False, antialias=scale < 1)
        feats = list(self.fpn((x - self.image_mean) / self.image_std).values())
        target = feats[0].shape[-2:]
        out = None
        for tower, f in zip(self.towers, feats):
            y = tower(f)
            if y.shape[-2:] != target:  # odd sizes: the x2 steps may over- or undershoot by a pixel
                y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        logits = self.classifier(self.dropout(out))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class _Upsample2x(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


# ----- builders -----------------------------------------------------------------------------

def retinanet_lsnet(variant: str, num_classes: int, backbone_checkpoint: Optional[str] = None,
                    norm_eval: bool = True, frozen_stages: int = -1, frozen_norm: str = "eval",
                    min_size: int = 800, max_size: int = 1333,
                    fpn_channels: int = 256, head_norm: str = "none", box_loss: str = "l1", **kwargs):
    """torchvision RetinaNet on LSNet-FPN (strides 8-128), anchors as the release's RetinaNet:
    octave base scale 4, 3 scales per octave, aspect ratios 0.5, 1, 2.

    ``num_classes`` counts the object classes; labels run from 1 to num_classes.
    ``fpn_channels`` sets the width of the neck and of the heads (the release: 256).
    ``head_norm="gn"`` puts GroupNorm (8 channels per group) after each head conv and
    ``box_loss="giou"`` regresses boxes with the GIoU loss, as torchvision's RetinaNet v2;
    the defaults ("none", "l1") are the release's head.
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    if head_norm not in ("none", "gn"):
        raise ConfigError(f"unknown RetinaNet head norm {head_norm!r}; choose none or gn")
    if box_loss not in ("l1", "smooth_l1", "giou"):
        raise ConfigError(f"unknown RetinaNet box loss {box_loss!r}; choose l1, smooth_l1 or giou")
    backbone = LSNetBackbone(variant, backbone_checkpoint, norm_eval, frozen_stages, frozen_norm)
    fpn = LSNetFPN(backbone, fpn_channels, extra_top=1)
    sizes = tuple(tuple(4 * s * 2 ** (k / 3) for k in range(3)) for s in fpn.strides)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=((0.5, 1.0, 2.0),) * len(sizes))
    norm = functools.partial(nn.GroupNorm, max(1, fpn_channels // 8)) if head_norm == "gn" else None
    head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes + 1, norm_layer=norm)
    head.regression_head._loss_type = box_loss  # torchvision's switch between its box losses
    model = RetinaNet(fpn, num_classes=num_classes + 1, anchor_generator=anchors, head=head, min_size=min_size,
                      max_size=max_size, **kwargs)
    model.transform.size_divisible = 64
    return model


def maskrcnn_lsnet(variant: str, num_classes: int, backbone_checkpoint: Optional[str] = None,
                   norm_eval: bool = True, frozen_stages: int = -1, frozen_norm: str = "eval",
                   min_size: int = 800, max_size: int = 1333,
                   fpn_channels: int = 256, sampling_ratio: int = 2, **kwargs):
    """torchvision Mask R-CNN on LSNet-FPN (strides 4-64: one transposed-conv level below the
    backbone's stride 8). RoI heads pool from strides 4-32; the RPN uses all five levels.
    ``fpn_channels`` sets the width of the neck and of the mask head (the release: 256);
    ``sampling_ratio`` the RoIAlign sampling points per bin side (fewer: faster on CPU)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    fpn = LSNetFPN(LSNetBackbone(variant, backbone_checkpoint, norm_eval, frozen_stages, frozen_norm), fpn_channels,
                   extra_trans=1)
    anchors = AnchorGenerator(sizes=tuple((8 * s,) for s in fpn.strides),
                              aspect_ratios=((0.5, 1.0, 2.0),) * len(fpn.strides))
    names = [str(i) for i in range(4)]
    model = MaskRCNN(fpn, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                     box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=sampling_ratio),
                     mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=sampling_ratio),
                     min_size=min_size, max_size=max_size, **kwargs)
    if fpn_channels != 256 and "mask_head" not in kwargs:  # torchvision's default mask head is 256 wide
        from torchvision.models.detection.mask_rcnn import (
            MaskRCNNHeads,
            MaskRCNNPredictor,
        )

        model.roi_heads.mask_head = MaskRCNNHeads(fpn_channels, (fpn_channels,) * 4, 1)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes + 1)
    model.transform.size_divisible = 64
    return model


def semantic_fpn_lsnet(variant: str, num_classes: int, backbone_checkpoint: Optional[str] = None,
                       norm_eval: bool = True, frozen_stages: int = -1, frozen_norm: str = "eval",
                       channels: int = 128,
                       fpn_channels: int = 256, test_size: Optional[int] = None) -> SemanticFPN:
    """Semantic FPN on LSNet-FPN (strides 4-64); ``channels`` is the width of the per-level
    towers, ``fpn_channels`` that of the neck (the release: 128 and 256); ``test_size``
    the shorter side inference resizes to (None: as given)."""
    fpn = LSNetFPN(LSNetBackbone(variant, backbone_checkpoint, norm_eval, frozen_stages, frozen_norm), fpn_channels,
                   extra_trans=1)
    return SemanticFPN(fpn, num_classes, channels, test_size=test_size)


def _named(builder, variant):
    def build(num_classes: int, **kwargs):
        return builder(variant, num_classes, **kwargs)

    build.__name__ = f"{builder.__name__}_{variant.split('_')[1]}"
    build.__doc__ = f"{builder.__doc__.splitlines()[0]} Backbone: {variant}."
    return build


retinanet_lsnet_t, retinanet_lsnet_s, retinanet_lsnet_b = (_named(retinanet_lsnet, v) for v in
                                                           ("lsnet_t", "lsnet_s", "lsnet_b"))
maskrcnn_lsnet_t, maskrcnn_lsnet_s, maskrcnn_lsnet_b = (_named(maskrcnn_lsnet, v) for v in
                                                        ("lsnet_t", "lsnet_s", "lsnet_b"))
semantic_fpn_lsnet_t, semantic_fpn_lsnet_s, semantic_fpn_lsnet_b = (_named(semantic_fpn_lsnet, v) for v in
                                                                    ("lsnet_t", "lsnet_s", "lsnet_b"))
