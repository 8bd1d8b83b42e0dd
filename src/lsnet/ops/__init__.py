"""Operators of LS convolution. Importing this package needs neither Triton nor CUDA."""

from .backends import register_ska_backend, ska_backend
from .checks import check_ska_shapes
from .ska import SKA, ska, ska_functional, ska_reference, ska_shift

__all__ = ["SKA", "ska", "ska_reference", "ska_shift", "ska_functional", "check_ska_shapes", "register_ska_backend",
           "ska_backend"]
