"""Dense prediction with LSNet backbones: detection, instance and semantic segmentation.

Models (torchvision RetinaNet / Mask R-CNN on LSNet-FPN, Semantic FPN), COCO and ADE20K
readers, a synthetic shapes dataset for offline runs, and COCO / mIoU evaluation.
"""

from .models import (LSNetBackbone, LSNetFPN, SemanticFPN, maskrcnn_lsnet, maskrcnn_lsnet_b, maskrcnn_lsnet_s,
                     maskrcnn_lsnet_t, retinanet_lsnet, retinanet_lsnet_b, retinanet_lsnet_s, retinanet_lsnet_t,
                     semantic_fpn_lsnet, semantic_fpn_lsnet_b, semantic_fpn_lsnet_s, semantic_fpn_lsnet_t)

__all__ = ["LSNetBackbone", "LSNetFPN", "SemanticFPN", "retinanet_lsnet", "maskrcnn_lsnet", "semantic_fpn_lsnet",
           "retinanet_lsnet_t", "retinanet_lsnet_s", "retinanet_lsnet_b", "maskrcnn_lsnet_t", "maskrcnn_lsnet_s",
           "maskrcnn_lsnet_b", "semantic_fpn_lsnet_t", "semantic_fpn_lsnet_s", "semantic_fpn_lsnet_b"]
