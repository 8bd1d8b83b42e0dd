"""Where SKA runs on each device type: a registry that optional backends (the Triton kernels
for CUDA) join when they are imported, so that importing lsnet never needs them."""

from __future__ import annotations

import contextlib
import importlib
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch

__all__ = ["register_ska_backend", "ska_backend", "backend_for", "SKAKernels", "register_ska_kernels", "kernels_for"]

SKAFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SKAKernels(NamedTuple):
    """The plain (autograd-free) kernels of one device type, called by the ``lsnet::ska`` operators.

    ``forward(x, w, k) -> y`` and ``backward(gy, x, w, k, need_x, need_w) -> (grad_x, grad_w)``
    get inputs whose shapes :func:`lsnet.ops.check_ska_shapes` has accepted (``k`` is K). Their
    outputs must follow the operators' layout contract: ``y`` and ``grad_x`` as
    ``torch.empty_like(x)``, ``grad_w`` as ``torch.empty_like(w)``; a gradient that is not needed
    is an empty tensor of shape (0,). ``fused(x, w, k, scale, shift) -> SKA(x, w) * scale[c] +
    shift[c] + x`` (optional) serves ``lsnet::ska_bn_residual``.
    """

    forward: Callable[..., torch.Tensor]
    backward: Callable[..., Tuple[torch.Tensor, torch.Tensor]]
    fused: Optional[Callable[..., torch.Tensor]] = None


_BACKENDS: Dict[str, SKAFunction] = {}
_KERNELS: Dict[str, SKAKernels] = {}
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


def register_ska_kernels(device_type: str, kernels: SKAKernels) -> None:
    """Run the ``torch.ops.lsnet.ska`` / ``ska_backward`` operators on ``device_type`` with ``kernels``."""
    _KERNELS[device_type] = kernels


def _import_optional(device_type: str) -> None:
    if device_type in _OPTIONAL and device_type not in _TRIED:
        _TRIED.add(device_type)
        try:
            importlib.import_module(_OPTIONAL[device_type])
        except ImportError:  # Triton missing or broken: the generic path serves
            pass


def backend_for(device_type: str) -> Optional[SKAFunction]:
    """The registered SKA implementation for ``device_type``, importing the optional module
    that provides it on first use; None when there is none (the generic path runs)."""
    if device_type not in _BACKENDS:
        _import_optional(device_type)
    return _BACKENDS.get(device_type)


def kernels_for(device_type: str) -> Optional[SKAKernels]:
    """The registered :class:`SKAKernels` of ``device_type`` (importing the optional module that
    provides them on first use); None when there are none (the operators run the torch path)."""
    if device_type not in _KERNELS:
        _import_optional(device_type)
    return _KERNELS.get(device_type)
