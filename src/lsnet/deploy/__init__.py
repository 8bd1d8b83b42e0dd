"""Deployment and measurement: MAC counting (and, later, export and benchmarks)."""

from .profile import ModelProfile, count_macs, profile_model

__all__ = ["ModelProfile", "count_macs", "profile_model"]
