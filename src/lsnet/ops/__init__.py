"""Operators of LS convolution. Importing this package needs neither Triton nor CUDA."""

from .ska import (SKA, check_ska_shapes, register_ska_backend, ska, ska_backend, ska_functional, ska_reference,
                  ska_shift)

__all__ = ["SKA", "ska", "ska_reference", "ska_shift", "ska_functional", "check_ska_shapes", "register_ska_backend",
           "ska_backend"]
