"""Where SKA runs on each device type: a registry that optional backends (the Triton kernels
for CUDA) join when they are imported, so that importing lsnet never needs them."""

from __future__ import annotations

import contextlib
import importlib
from typing import Callable, Dict, Optional

import torch

__all__ = ["register_ska_backend", "ska_backend", "backend_for"]

SKAFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_BACKENDS: Dict[str, SKAFunction] = {}
# Modules imported on the first SKA call on a device type; they register themselves.
_OPTIONAL = {"cuda": "lsnet.ops.ska_triton"}
_TRIED: set = set()


def register_ska_backend(device_type: str, fn: SKAFunction) -> None:
    """Use ``fn(x, w)`` for SKA on tensors of ``device_type`` (e.g. ``"cuda"``); ``fn`` gets
    inputs whose shapes :func:`lsnet.ops.check_ska_shapes` has already accepted."""
    _BACKENDS[device_type] = fn


@contextlib.contextmanager
def ska_backend(device_type: str, fn: SKAFunction):
    """Temporarily route SKA on ``device_type`` to ``fn`` (e.g. to benchmark the reference)."""
    previous = _BACKENDS.get(device_type)
    _BACKENDS[device_type] = fn
    try:
        yield
    finally:
        if previous is None:
            _BACKENDS.pop(device_type, None)
        else:
            _BACKENDS[device_type] = previous


def backend_for(device_type: str) -> Optional[SKAFunction]:
    """The registered SKA implementation for ``device_type``, importing the optional module
    that provides it on first use; None when there is none (the generic path runs)."""
    if device_type not in _BACKENDS and device_type in _OPTIONAL and device_type not in _TRIED:
        _TRIED.add(device_type)
        try:
            importlib.import_module(_OPTIONAL[device_type])
        except ImportError:  # Triton missing or broken: the generic path serves
            return None
    return _BACKENDS.get(device_type)
