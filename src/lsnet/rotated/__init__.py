"""Oriented (rotated-box) object detection on DOTA-format aerial images.

Boxes are ``(cx, cy, w, h, angle)`` in mmrotate's le90 convention (radians in [-pi/2, pi/2),
``w`` the longer side, a positive angle turning x towards y: clockwise on screen); labels are
0-based.

- operators (from :mod:`lsnet.ops`): :func:`box_iou_rotated`, :func:`nms_rotated`,
  :func:`batched_nms_rotated`, :func:`roi_align_rotated`, the box coders, and the conversions
  :func:`obb_to_poly` / :func:`poly_to_obb`;
- data: :mod:`.dota` (the DOTA format, dataset, augmentation), :mod:`.split` (patches and
  merging), :mod:`.evaluation` (DOTA mAP, task-1 submission files), :mod:`.aerial` (a
  synthetic aerial set), :mod:`.visualize` (drawing rotated boxes);
- the detector: :mod:`.models` (Oriented R-CNN), :mod:`.config` (presets), :mod:`.task`
  (training on the engine), :mod:`.inference` (checkpoints, whole-image detection).
"""

from ..ops.rotated_boxes import (DeltaXYWHAOBBoxCoder, MidpointOffsetCoder, batched_nms_rotated, box_iou_rotated,
                                 nms_rotated, obb_to_hbox, obb_to_poly, poly_to_obb)
from ..ops.rotated_roi_align import RotatedRoIAlign, roi_align_rotated
from .aerial import AERIAL_CLASSES, AERIAL_CROP_CLASSES, SMALL_PRESET_SPLIT, make_aerial, make_aerial_crops
from .config import ROTATED_PRESETS, RotatedConfig, resolve_rotated_config
from .dota import (DOTA_RECT_CLASSES, DOTA_V1_CLASSES, DotaDataset, RandomPolyRotate, RandomRotatedFlip,
                   RotatedCompose, collate, dota_train_transform, read_dota_labels, write_dota_labels)
from .evaluation import evaluate_dota, format_dota_table, write_dota_task1
from .inference import detect_image, load_rotated_for_inference
from .models import OrientedRCNN, OrientedRCNNSettings, oriented_rcnn
from .split import merge_patch_detections, parse_patch_name, split_dota
from .task import RotatedTask, evaluate_rotated, train_rotated
from .visualize import draw_rotated_detections

__all__ = [
    "AERIAL_CLASSES", "AERIAL_CROP_CLASSES", "DOTA_RECT_CLASSES", "DOTA_V1_CLASSES", "ROTATED_PRESETS",
    "SMALL_PRESET_SPLIT", "DeltaXYWHAOBBoxCoder", "DotaDataset", "MidpointOffsetCoder", "OrientedRCNN",
    "OrientedRCNNSettings", "RandomPolyRotate", "RandomRotatedFlip", "RotatedCompose", "RotatedConfig",
    "RotatedRoIAlign", "RotatedTask", "batched_nms_rotated", "box_iou_rotated", "collate", "detect_image",
    "dota_train_transform", "draw_rotated_detections", "evaluate_dota", "evaluate_rotated", "format_dota_table",
    "load_rotated_for_inference", "make_aerial", "make_aerial_crops", "merge_patch_detections", "nms_rotated",
    "obb_to_hbox", "obb_to_poly", "oriented_rcnn", "parse_patch_name", "poly_to_obb", "read_dota_labels",
    "resolve_rotated_config", "roi_align_rotated", "split_dota", "train_rotated", "write_dota_labels",
    "write_dota_task1",
]
