"""LSNet models (and LOLViT, LSKNet), registered in timm's registry on import."""

from .checkpoint import CheckpointError, load_checkpoint, load_state_dict_file, save_checkpoint
from .fuse import fuse
from .lolvit import LOLViT, lolvit_s, lolvit_x  # registers lolvit_s / lolvit_x in timm
from .lsknet import LSKNet, lsknet_s, lsknet_t  # registers lsknet_t / lsknet_s in timm
from .lsnet import (MODEL_ARGS, LSNet, PretrainedWeightsUnavailable, checkpoint_filter_fn, lsnet_b,
                    lsnet_b_distill, lsnet_s, lsnet_s_distill, lsnet_t, lsnet_t_distill)
from . import ablations  # noqa: E402,F401  registers the paper's ablation models (lsnet_t_kl3, resnet50_lsconv, ...)

#: Names registered in timm by this package.
MODEL_NAMES = ("lsnet_t", "lsnet_s", "lsnet_b", "lsnet_t_distill", "lsnet_s_distill", "lsnet_b_distill")

#: LSKNet backbones registered in timm by this package.
LSKNET_NAMES = ("lsknet_t", "lsknet_s")

__all__ = ["LSNet", "LOLViT", "LSKNet", "MODEL_ARGS", "MODEL_NAMES", "LSKNET_NAMES", "fuse", "load_checkpoint",
           "save_checkpoint", "load_state_dict_file", "CheckpointError", "PretrainedWeightsUnavailable",
           "checkpoint_filter_fn"]
