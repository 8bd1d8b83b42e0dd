"""Deployment and measurement: MAC counting, compiled and CUDA-graph inference, ONNX export (``.export``) and ``lsnet bench`` (``.bench``)."""

from .compiled import compile_for_inference
from .cuda_graph import CUDAGraphModel, capture_cuda_graph
from .profile import ModelProfile, count_macs, profile_model

__all__ = ["compile_for_inference", "CUDAGraphModel", "capture_cuda_graph", "ModelProfile", "count_macs", "profile_model"]
