"""The LSNet paper's studies as tools: robustness evaluation (:mod:`.robustness`, Table 4),
receptive-field, SKA-weight and feature-map visualisation (:mod:`.visualize`, Figs. 4-6) and
the ablation variants' cost and training (:mod:`.ablation`, Tables 5, 7-9).

Importing this package is cheap: plotting, the corruption generator and timm's model
registry are imported by the functions that need them.
"""

from .ablation import VARIANT_GROUPS, cost_table, train_variants  # the ablation variants (Tables 5, 7-9)
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
           "imagenet_subset_wnids", "imagenet_wnids", "mean_corruption_error", "relative_mean_corruption_error",
           "VARIANT_GROUPS", "cost_table", "train_variants"]
