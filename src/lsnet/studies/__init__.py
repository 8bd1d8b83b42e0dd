"""The LSNet paper's studies as tools: robustness evaluation (:mod:`.robustness`, Table 4)
and receptive-field, SKA-weight and feature-map visualisation (:mod:`.visualize`, Figs. 4-6).

Importing this package is cheap: plotting, the corruption generator and timm's model
registry are imported by the functions that need them.
"""

from .robustness import (
           ALEXNET_ERRORS,
           CORRUPTIONS,
           SEVERITIES,
           corruption_errors,
           generate_corrupted,
           imagenet_subset_wnids,
           imagenet_wnids,
           mean_corruption_error,
           relative_mean_corruption_error,
)

__all__ = ["ALEXNET_ERRORS", "CORRUPTIONS", "SEVERITIES", "corruption_errors", "generate_corrupted",
           "imagenet_subset_wnids", "imagenet_wnids", "mean_corruption_error", "relative_mean_corruption_error"]
