"""Operators of LS convolution. Importing this package needs neither Triton nor CUDA."""

from .backends import register_ska_backend, ska_backend
from .checks import check_ska_shapes
from .rotated_boxes import (
    DeltaXYWHAOBBoxCoder as DeltaXYWHAOBBoxCoder,
    MidpointOffsetCoder as MidpointOffsetCoder,
    batched_nms_rotated as batched_nms_rotated,
    box_area_rotated as box_area_rotated,
    box_iou_rotated as box_iou_rotated,
    hbox_to_obb as hbox_to_obb,
    nms_rotated as nms_rotated,
    norm_angle as norm_angle,
    norm_angle_le90 as norm_angle_le90,
    obb_to_hbox as obb_to_hbox,
    obb_to_poly as obb_to_poly,
    poly_to_obb as poly_to_obb,
)
from .rotated_roi_align import RotatedRoIAlign as RotatedRoIAlign
from .rotated_roi_align import roi_align_rotated as roi_align_rotated
from .ska import SKA, ska, ska_functional, ska_reference, ska_shift
from .ska_fused import bn_scale_shift, ska_affine_residual

__all__ = ["SKA", "ska", "ska_reference", "ska_shift", "ska_functional", "check_ska_shapes", "register_ska_backend",
           "ska_backend", "ska_affine_residual", "bn_scale_shift"]
