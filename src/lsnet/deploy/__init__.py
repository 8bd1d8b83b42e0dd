"""Deployment and measurement: MAC counting, compiled inference, ONNX export (``.export``) and ``lsnet bench`` (``.bench``)."""

from .compiled import compile_for_inference
from .profile import ModelProfile, count_macs, profile_model

__all__ = ["compile_for_inference", "ModelProfile", "count_macs", "profile_model"]
