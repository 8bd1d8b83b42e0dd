"""Oriented (rotated-box) object detection on DOTA-format aerial images.

Data modules: :mod:`.dota` (the DOTA format, dataset, augmentation), :mod:`.split`
(patches and merging), :mod:`.evaluation` (DOTA mAP, task-1 submission files),
:mod:`.aerial` (a synthetic aerial set) and :mod:`.visualize` (drawing rotated boxes).
Boxes are ``(cx, cy, w, h, angle)`` in mmrotate's le90 convention; labels are 0-based.
"""

from .aerial import (
                   AERIAL_CLASSES,
                   AERIAL_CROP_CLASSES,
                   SMALL_PRESET_SPLIT,
                   make_aerial,
                   make_aerial_crops,
)
from .dota import (
                   DOTA_RECT_CLASSES,
                   DOTA_V1_CLASSES,
                   DotaDataset,
                   RandomPolyRotate,
                   RandomRotatedFlip,
                   RotatedCompose,
                   collate,
                   dota_train_transform,
                   read_dota_labels,
                   write_dota_labels,
)
from .evaluation import evaluate_dota, format_dota_table, write_dota_task1
from .split import merge_patch_detections, parse_patch_name, split_dota
from .visualize import draw_rotated_detections

__all__ = [
                   "AERIAL_CLASSES",
                   "AERIAL_CROP_CLASSES",
                   "DOTA_RECT_CLASSES",
                   "DOTA_V1_CLASSES",
                   "SMALL_PRESET_SPLIT",
                   "DotaDataset",
                   "RandomPolyRotate",
                   "RandomRotatedFlip",
                   "RotatedCompose",
                   "collate",
                   "dota_train_transform",
                   "draw_rotated_detections",
                   "evaluate_dota",
                   "format_dota_table",
                   "make_aerial",
                   "make_aerial_crops",
                   "merge_patch_detections",
                   "parse_patch_name",
                   "read_dota_labels",
                   "split_dota",
                   "write_dota_labels",
                   "write_dota_task1",
]
