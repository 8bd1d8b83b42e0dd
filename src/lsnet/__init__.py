"""lsnet: LSNet ("See Large, Focus Small", CVPR 2025) as a timm-compatible package.

``import lsnet`` registers ``lsnet_t``, ``lsnet_s``, ``lsnet_b`` and their ``_distill``
variants with timm, so ``timm.create_model('lsnet_t')`` works.
"""

from . import ops
from .models import (MODEL_NAMES, CheckpointError, LSNet, PretrainedWeightsUnavailable, fuse, load_checkpoint,
                     save_checkpoint)

__version__ = "0.1.0"

__all__ = ["ops", "LSNet", "MODEL_NAMES", "fuse", "load_checkpoint", "save_checkpoint", "CheckpointError",
           "PretrainedWeightsUnavailable", "__version__"]
