"""Oriented R-CNN (Xie et al., ICCV 2021) on any timm backbone with ``features_only``, as the
LSKNet release configures it in mmrotate (``oriented_rcnn`` / ``lsk_*_fpn_1x_dota_le90``).

Boxes are ``(cx, cy, w, h, angle)`` in image pixels with mmrotate's ``le90`` angles (radians in
[-pi/2, pi/2)); labels run from 0 to ``num_classes - 1``.

The parts, with the release's settings as defaults (:class:`OrientedRCNNSettings`):

- neck: an FPN (torchvision's, via :class:`lsnet.models.fpn.LSNetFPN`) on the four backbone
  stages plus one max-pooled level on top (mmdetection's ``FPN(num_outs=5)``): for LSKNet strides
  4, 8, 16, 32, 64;
- oriented RPN: a 3x3 conv and two 1x1 convs per level (objectness for 3 anchors, 6 midpoint-
  offset deltas each); anchors of scale 8 x stride, ratios 0.5/1/2; anchors are assigned to the
  ground truth's enclosing horizontal boxes (IoU >= 0.7 positive, < 0.3 negative, each box's
  best anchors positive when >= 0.3), 256 sampled per image, half positive at most; sigmoid
  cross-entropy and smooth-L1 (beta 1/9); proposals: the 2000 best per level, decoded, a
  horizontal NMS at 0.8 on their enclosing boxes per level, the 2000 best kept;
- RoI head: rotated RoIAlign 7x7 (2 samples per bin side, clockwise) on the four finest levels
  (a RoI goes to level floor(log2(sqrt(w h) / 56)), clamped), two shared 1024-wide FC layers,
  a softmax classifier (``num_classes`` + background) and one class-agnostic regression with
  the xywha delta coder (stds 0.1, 0.1, 0.2, 0.2, 0.1); 512 RoIs sampled per image, a quarter
  positive at most (rotated IoU >= 0.5; the ground-truth boxes join the proposals);
  cross-entropy and smooth-L1 (beta 1);
- test: scores above 0.05, rotated NMS at 0.1 per class, 2000 detections per image.

The RPN and RoI-head logic (anchors, assignment, sampling, losses, post-processing) is written
here because torchvision has no oriented detector; the box operators come from
:mod:`lsnet.ops.rotated_boxes` and :mod:`lsnet.ops.rotated_roi_align`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou

from ..ops.rotated_boxes import (DeltaXYWHAOBBoxCoder, MidpointOffsetCoder, batched_nms_rotated, box_iou_rotated,
                                 obb_to_hbox)
from ..ops.rotated_roi_align import roi_align_rotated

__all__ = ["OrientedRCNN", "OrientedRCNNSettings", "oriented_rcnn"]

#: ImageNet statistics of 0-255 RGB images, as the release's ``img_norm_cfg``; inputs here are in [0, 1].
IMAGE_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
IMAGE_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)


@dataclass
class OrientedRCNNSettings:
    """The detector's hyper-parameters; the defaults are the release's (Oriented R-CNN, DOTA, le90)."""

    fpn_channels: int = 256
    anchor_scales: Tuple[float, ...] = (8.0,)
    anchor_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pos_iou: float = 0.7
    rpn_neg_iou: float = 0.3
    rpn_min_pos_iou: float = 0.3
    rpn_batch: int = 256  # anchors sampled per image
    rpn_pos_fraction: float = 0.5
    allowed_border: float = 0.0  # anchors further outside the image are ignored in training; < 0: none
    rpn_pre_nms: int = 2000  # per level
    rpn_post_nms: int = 2000  # per image
    rpn_nms_iou: float = 0.8
    roi_pos_iou: float = 0.5
    roi_batch: int = 512  # RoIs sampled per image
    roi_pos_fraction: float = 0.25
    roi_size: int = 7
    roi_sampling_ratio: int = 2
    finest_scale: float = 56.0  # RoIs of sqrt(w h) below 2x this go to the finest level
    fc_channels: int = 1024
    score_threshold: float = 0.05
    nms_iou: float = 0.1
    max_per_image: int = 2000

    @classmethod
    def names(cls) -> List[str]:
        """The field names (for configurations that override some of them)."""
        return [f.name for f in fields(cls)]


# ----- parts --------------------------------------------------------------------------------


class OrientedRPNHead(nn.Module):
    """Objectness (one logit per anchor) and midpoint-offset deltas (6 per anchor) on each level."""

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.cls = nn.Conv2d(channels, num_anchors, 1)
        self.reg = nn.Conv2d(channels, num_anchors * 6, 1)
        for m in (self.conv, self.cls, self.reg):  # mmdetection's RPN initialisation
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per level: logits (B, H*W*A) and deltas (B, H*W*A, 6), location-major, anchor-minor."""
        logits, deltas = [], []
        for f in feats:
            h = F.relu(self.conv(f))
            b = f.shape[0]
            logits.append(self.cls(h).permute(0, 2, 3, 1).reshape(b, -1))
            deltas.append(self.reg(h).permute(0, 2, 3, 1).reshape(b, -1, 6))
        return logits, deltas


class RotatedBoxHead(nn.Module):
    """Two shared FC layers, a classifier over ``num_classes`` + background (last) and a
    class-agnostic xywha regression."""

    def __init__(self, channels: int, roi_size: int, fc_channels: int, num_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(channels * roi_size * roi_size, fc_channels)
        self.fc2 = nn.Linear(fc_channels, fc_channels)
        self.cls = nn.Linear(fc_channels, num_classes + 1)
        self.reg = nn.Linear(fc_channels, 5)
        for m in (self.fc1, self.fc2):  # mmdetection's Shared2FCBBoxHead: Xavier-uniform FC layers
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.reg.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.reg.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))
        return self.cls(x), self.reg(x)


def level_anchors(stride: int, scales: Sequence[float], ratios: Sequence[float], size: Tuple[int, int],
                  device: torch.device) -> torch.Tensor:
    """mmdetection's anchors of one level as (H*W*A, 4) xyxy: per location (x, y) * stride (no
    half-stride offset), A = len(ratios) * len(scales) boxes of width stride * scale / sqrt(ratio)
    and height stride * scale * sqrt(ratio) (ratio = h / w), ratio-major."""
    ratios_t = torch.tensor(ratios, dtype=torch.float32, device=device)
    scales_t = torch.tensor(scales, dtype=torch.float32, device=device)
    h_ratio = ratios_t.sqrt()
    ws = (stride / h_ratio[:, None] * scales_t[None, :]).reshape(-1)
    hs = (stride * h_ratio[:, None] * scales_t[None, :]).reshape(-1)
    base = torch.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], dim=1)
    ys = torch.arange(size[0], dtype=torch.float32, device=device) * stride
    xs = torch.arange(size[1], dtype=torch.float32, device=device) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


def assign_max_iou(iou: torch.Tensor, pos_thr: float, neg_thr: float, min_pos_iou: float,
                   low_quality: bool) -> torch.Tensor:
    """mmdetection's MaxIoUAssigner on an (num_gt, num_boxes) IoU matrix: for each box the index
    of its ground truth (>= 0), -1 for background, -2 for ignored (between the thresholds)."""
    num_gt, num_boxes = iou.shape
    assigned = torch.full((num_boxes,), -2, dtype=torch.long, device=iou.device)
    if num_gt == 0 or num_boxes == 0:
        assigned.fill_(-1)
        return assigned
    best_iou, best_gt = iou.max(dim=0)
    assigned[(best_iou >= 0) & (best_iou < neg_thr)] = -1
    positive = best_iou >= pos_thr
    assigned[positive] = best_gt[positive]
    if low_quality:
        # each ground truth also takes the boxes that overlap it most (all of them, on ties)
        # (mmdetection loops over the boxes in order, so on a shared box the last one wins)
        gt_best = iou.max(dim=1, keepdim=True).values
        takes = (iou == gt_best) & (gt_best >= min_pos_iou)
        order = torch.arange(1, num_gt + 1, device=iou.device)[:, None]
        last = (takes * order).max(dim=0).values
        assigned[last > 0] = last[last > 0] - 1
    return assigned


def sample_assigned(assigned: torch.Tensor, num: int, pos_fraction: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """mmdetection's RandomSampler: (positive indices, negative indices), at most
    ``num * pos_fraction`` positives, negatives filling up to ``num``; drawn from torch's RNG."""
    pos = torch.nonzero(assigned >= 0).squeeze(1)
    neg = torch.nonzero(assigned == -1).squeeze(1)
    max_pos = int(num * pos_fraction)
    if pos.numel() > max_pos:
        pos = pos[torch.randperm(pos.numel(), device=pos.device)[:max_pos]]
    max_neg = num - pos.numel()
    if neg.numel() > max_neg:
        neg = neg[torch.randperm(neg.numel(), device=neg.device)[:max_neg]]
    return pos, neg


# ----- the detector -------------------------------------------------------------------------


class OrientedRCNN(nn.Module):
    """Oriented R-CNN: ``model(images)`` in eval mode returns per image a dict of ``boxes``
    (N, 5), ``scores`` (N,) and ``labels`` (N,); ``model(images, targets)`` in training mode
    returns the four losses (``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_cls``, ``loss_bbox``).

    ``images`` is a list of (3, H, W) RGB tensors in [0, 1] (sizes may differ; they are padded
    to a multiple of 32) or a batch tensor; each target holds ``boxes`` (N, 5) and ``labels`` (N,).
    ``fpn`` is a :class:`lsnet.models.fpn.LSNetFPN` without extra levels.
    """

    def __init__(self, fpn: nn.Module, num_classes: int, settings: Optional[OrientedRCNNSettings] = None):
        super().__init__()
        self.settings = s = settings or OrientedRCNNSettings()
        self.num_classes = num_classes
        self.fpn = fpn
        self.roi_strides = list(fpn.strides)  # RoIs are pooled from the backbone's four levels
        self.anchor_strides = self.roi_strides + [self.roi_strides[-1] * 2]  # plus the pooled one
        self.num_anchors = len(s.anchor_scales) * len(s.anchor_ratios)
        self.rpn = OrientedRPNHead(fpn.out_channels, self.num_anchors)
        self.box_head = RotatedBoxHead(fpn.out_channels, s.roi_size, s.fc_channels, num_classes)
        self.rpn_coder = MidpointOffsetCoder()
        self.box_coder = DeltaXYWHAOBBoxCoder()
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self.size_divisor = 32

    # -- input ------------------------------------------------------------------------------
    def batch_images(self, images) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Normalise and zero-pad (after normalisation, as mmdetection's Pad) to one batch whose
        sides are multiples of 32; returns it with each image's own (H, W)."""
        if torch.is_tensor(images) and images.dim() == 4:
            images = list(images)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        height = -(-max(h for h, _ in sizes) // self.size_divisor) * self.size_divisor
        width = -(-max(w for _, w in sizes) // self.size_divisor) * self.size_divisor
        batch = images[0].new_zeros((len(images), 3, height, width))
        for i, im in enumerate(images):
            batch[i, :, :im.shape[-2], :im.shape[-1]] = (im - self.image_mean[0]) / self.image_std[0]
        return batch, sizes

    def features(self, batch: torch.Tensor) -> List[torch.Tensor]:
        """The FPN levels, finest first, plus the max-pooled level above the last."""
        feats = list(self.fpn(batch).values())
        return feats + [F.max_pool2d(feats[-1], 1, stride=2)]

    def anchors(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The anchors of every level, in the order of the RPN's outputs."""
        s = self.settings
        return [level_anchors(stride, s.anchor_scales, s.anchor_ratios, tuple(f.shape[-2:]), f.device)
                for stride, f in zip(self.anchor_strides, feats)]

    # -- forward ----------------------------------------------------------------------------
    def forward(self, images, targets: Optional[List[Dict[str, torch.Tensor]]] = None):
        batch, sizes = self.batch_images(images)
        feats = self.features(batch)
        anchors = self.anchors(feats)
        logits, deltas = self.rpn(feats)
        proposals = self.proposals(anchors, logits, deltas, sizes)
        if self.training:
            if targets is None:
                raise ValueError("OrientedRCNN in training mode needs targets")
            losses = self.rpn_loss(anchors, logits, deltas, targets, sizes)
            losses.update(self.roi_loss(feats, proposals, targets))
            return losses
        return self.detect(feats, proposals, sizes)

    # -- RPN ----------------------------------------------------------------------------------
    @torch.no_grad()
    def proposals(self, anchors: List[torch.Tensor], logits: List[torch.Tensor], deltas: List[torch.Tensor],
                  sizes: List[Tuple[int, int]]) -> List[torch.Tensor]:
        """Per image the RPN's proposals (N, 5): the best ``rpn_pre_nms`` of each level, decoded,
        NMS on their enclosing horizontal boxes per level, the best ``rpn_post_nms`` kept."""
        s = self.settings
        out = []
        for i, size in enumerate(sizes):
            boxes, scores, levels = [], [], []
            for lvl, (a, lg, d) in enumerate(zip(anchors, logits, deltas)):
                score = lg[i].detach().float().sigmoid()
                if score.numel() > s.rpn_pre_nms:
                    score, keep = score.topk(s.rpn_pre_nms)
                else:
                    keep = torch.arange(score.numel(), device=score.device)
                boxes.append(self.rpn_coder.decode(a[keep], d[i, keep].detach().float(), max_shape=size))
                scores.append(score)
                levels.append(torch.full_like(score, lvl, dtype=torch.long))
            boxes_t, scores_t, levels_t = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
            valid = (boxes_t[:, 2] > 0) & (boxes_t[:, 3] > 0)
            boxes_t, scores_t, levels_t = boxes_t[valid], scores_t[valid], levels_t[valid]
            keep = batched_nms(obb_to_hbox(boxes_t), scores_t, levels_t, s.rpn_nms_iou)[:s.rpn_post_nms]
            out.append(boxes_t[keep])
        return out

    def rpn_loss(self, anchors: List[torch.Tensor], logits: List[torch.Tensor], deltas: List[torch.Tensor],
                 targets: List[Dict[str, torch.Tensor]], sizes: List[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        """Sigmoid cross-entropy of the sampled anchors and smooth-L1 (beta 1/9) of the positive
        ones' midpoint-offset deltas, both over the number of sampled anchors in the batch."""
        s = self.settings
        all_anchors = torch.cat(anchors)
        all_logits = torch.cat(logits, dim=1)
        all_deltas = torch.cat(deltas, dim=1)
        cls_losses, reg_losses, num_samples = [], [], 0
        for i, (target, (h, w)) in enumerate(zip(targets, sizes)):
            gt = target["boxes"].to(all_anchors)
            if s.allowed_border >= 0:
                b = s.allowed_border
                inside = ((all_anchors[:, 0] >= -b) & (all_anchors[:, 1] >= -b)
                          & (all_anchors[:, 2] < w + b) & (all_anchors[:, 3] < h + b))
            else:
                inside = torch.ones(len(all_anchors), dtype=torch.bool, device=all_anchors.device)
            index = torch.nonzero(inside).squeeze(1)
            anchors_in = all_anchors[index]
            iou = box_iou(obb_to_hbox(gt), anchors_in) if len(gt) else anchors_in.new_zeros((0, len(anchors_in)))
            assigned = assign_max_iou(iou, s.rpn_pos_iou, s.rpn_neg_iou, s.rpn_min_pos_iou, low_quality=True)
            pos, neg = sample_assigned(assigned, s.rpn_batch, s.rpn_pos_fraction)
            sampled = torch.cat([pos, neg])
            labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(all_logits.dtype)
            cls_losses.append(F.binary_cross_entropy_with_logits(all_logits[i, index[sampled]], labels,
                                                                 reduction="sum"))
            if len(pos):
                wanted = self.rpn_coder.encode(anchors_in[pos], gt[assigned[pos]])
                reg_losses.append(F.smooth_l1_loss(all_deltas[i, index[pos]], wanted.to(all_deltas.dtype),
                                                   beta=1.0 / 9, reduction="sum"))
            num_samples += len(sampled)
        norm = max(num_samples, 1)
        zero = all_deltas.sum() * 0  # keeps the graph (and DDP) whole when no anchor is positive
        return {"loss_rpn_cls": sum(cls_losses) / norm, "loss_rpn_bbox": (sum(reg_losses) + zero) / norm}

    # -- RoI head -------------------------------------------------------------------------------
    def roi_features(self, feats: List[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Rotated RoIAlign of ``rois`` (K, 6: batch index, cx, cy, w, h, angle), each on the level
        its size maps to (mmdetection's rule: floor(log2(sqrt(w h) / finest_scale)), clamped)."""
        s = self.settings
        levels = len(self.roi_strides)
        scale = (rois[:, 3] * rois[:, 4]).clamp(min=0).sqrt()
        target = torch.floor(torch.log2(scale / s.finest_scale + 1e-6)).clamp(0, levels - 1).long()
        out = feats[0].new_zeros((len(rois), feats[0].shape[1], s.roi_size, s.roi_size))
        for lvl in range(levels):
            index = torch.nonzero(target == lvl).squeeze(1)
            if len(index):
                out[index] = roi_align_rotated(feats[lvl], rois[index], s.roi_size, 1.0 / self.roi_strides[lvl],
                                               s.roi_sampling_ratio, aligned=True, clockwise=True)
        return out

    def roi_loss(self, feats: List[torch.Tensor], proposals: List[torch.Tensor],
                 targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Assign proposals (with the ground truth added) by rotated IoU, sample, and score the
        box head: cross-entropy over the samples, smooth-L1 of the positives over the samples."""
        s = self.settings
        rois, labels, wanted, positive = [], [], [], []
        for i, (props, target) in enumerate(zip(proposals, targets)):
            gt = target["boxes"].to(props)
            gt_labels = target["labels"].to(props.device)
            boxes = torch.cat([props, gt])
            iou = box_iou_rotated(gt, boxes) if len(gt) else boxes.new_zeros((0, len(boxes)))
            assigned = assign_max_iou(iou, s.roi_pos_iou, s.roi_pos_iou, s.roi_pos_iou, low_quality=False)
            pos, neg = sample_assigned(assigned, s.roi_batch, s.roi_pos_fraction)
            chosen = boxes[torch.cat([pos, neg])]
            rois.append(torch.cat([chosen.new_full((len(chosen), 1), i), chosen], dim=1))
            labels.append(torch.cat([gt_labels[assigned[pos]], gt_labels.new_full((len(neg),), self.num_classes)]))
            wanted.append(self.box_coder.encode(boxes[pos], gt[assigned[pos]]))
            positive.append(torch.cat([torch.ones_like(pos, dtype=torch.bool),
                                       torch.zeros_like(neg, dtype=torch.bool)]))
        rois_t = torch.cat(rois)
        cls, reg = self.box_head(self.roi_features(feats, rois_t))
        labels_t, positive_t = torch.cat(labels), torch.cat(positive)
        norm = max(len(rois_t), 1)
        loss_cls = F.cross_entropy(cls, labels_t, reduction="sum") / norm
        loss_bbox = (F.smooth_l1_loss(reg[positive_t], torch.cat(wanted).to(reg.dtype), beta=1.0, reduction="sum")
                     + reg.sum() * 0) / norm
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}

    @torch.no_grad()
    def detect(self, feats: List[torch.Tensor], proposals: List[torch.Tensor],
               sizes: List[Tuple[int, int]]) -> List[Dict[str, torch.Tensor]]:
        """Score and refine the proposals; per class, scores above ``score_threshold`` and rotated
        NMS; the best ``max_per_image`` per image."""
        s = self.settings
        rois = torch.cat([torch.cat([p.new_full((len(p), 1), i), p], dim=1) for i, p in enumerate(proposals)])
        cls, reg = self.box_head(self.roi_features(feats, rois)) if len(rois) else (None, None)
        results, start = [], 0
        for i, (props, size) in enumerate(zip(proposals, sizes)):
            n = len(props)
            if n == 0:
                empty = props.new_zeros((0,))
                results.append({"boxes": props.new_zeros((0, 5)), "scores": empty, "labels": empty.long()})
                continue
            scores = cls[start:start + n].float().softmax(-1)[:, :self.num_classes]
            boxes = self.box_coder.decode(props, reg[start:start + n].float(), max_shape=size)
            start += n
            box_index, label = torch.nonzero(scores > s.score_threshold, as_tuple=True)
            kept_scores = scores[box_index, label]
            kept_boxes = boxes[box_index]
            keep = batched_nms_rotated(kept_boxes, kept_scores, label, s.nms_iou)[:s.max_per_image]
            results.append({"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": label[keep]})
        return results


def oriented_rcnn(backbone: str, num_classes: int, settings: Optional[OrientedRCNNSettings] = None,
                  backbone_checkpoint: Optional[str] = None, norm_eval: bool = False, frozen_stages: int = -1,
                  frozen_norm: str = "eval", drop_path_rate: float = 0.0) -> OrientedRCNN:
    """Oriented R-CNN on the timm backbone ``backbone`` (e.g. ``lsknet_t``, ``lsnet_t``; any model
    with ``features_only``), optionally starting from a classification or backbone checkpoint."""
    from ..models.fpn import LSNetBackbone, LSNetFPN

    settings = settings or OrientedRCNNSettings()
    kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    body = LSNetBackbone(backbone, backbone_checkpoint, norm_eval, frozen_stages, frozen_norm, model_kwargs=kwargs)
    fpn = LSNetFPN(body, settings.fpn_channels)
    return OrientedRCNN(fpn, num_classes, settings)
