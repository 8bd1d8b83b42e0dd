"""Tiny LSNet variants registered in timm for fast training tests (every block kind present).

Imported by tests and by the scripts the tests start with torchrun."""

from __future__ import annotations

from timm.models import register_model

import lsnet  # noqa: F401
from lsnet.models.lsnet import LSNet

_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
TINY = dict(embed_dim=(16, 32, 48, 64), depth=(0, 1, 2, 2), num_heads=(2, 2, 2, 2), key_dim=(8, 8, 8, 8))


def _register():
    import timm

    if "lsnet_test" in timm.list_models():
        return

    @register_model
    def lsnet_test(pretrained=False, **kwargs):
        """A tiny LSNet for tests."""
        return LSNet(**{**TINY, **{k: v for k, v in kwargs.items() if k not in _TIMM_ONLY}})

    @register_model
    def lsnet_test_distill(pretrained=False, **kwargs):
        """A tiny LSNet with a distillation head, for tests."""
        return LSNet(**{**TINY, "distillation": True, **{k: v for k, v in kwargs.items() if k not in _TIMM_ONLY}})


_register()
