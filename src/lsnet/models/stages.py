"""What every model family of the package shares in timm's feature API: running a stem and
a list of stages while collecting the outputs ``forward_intermediates`` asks for."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.models._features import feature_take_indices

__all__ = ["stage_intermediates", "take_intermediates", "StagedModel"]


def stage_intermediates(stem: nn.Module, stages: Sequence[nn.Module], run: Callable, x: torch.Tensor,
                        indices: Optional[Union[int, List[int]]], stop_early: bool, intermediates_only: bool,
                        output_fmt: str, family: str):
    """``stem`` then ``run(stage, x)`` for each stage, keeping the outputs of the stages
    ``indices`` selects (timm's convention: an int n takes the last n); returns the list,
    or ``(final output, list)`` unless ``intermediates_only``."""
    if output_fmt != "NCHW":
        raise ValueError(f"{family} features are NCHW only")
    take_indices, max_index = feature_take_indices(len(stages), indices)
    intermediates = []
    x = stem(x)
    for i, stage in enumerate(stages[: max_index + 1] if stop_early else stages):
        x = run(stage, x)
        if i in take_indices:
            intermediates.append(x)
    return intermediates if intermediates_only else (x, intermediates)


def take_intermediates(outputs: List[torch.Tensor], indices: Optional[Union[int, List[int]]], stop_early: bool,
                       intermediates_only: bool, output_fmt: str, family: str
                       ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
    """What :func:`stage_intermediates` returns, from every stage's output (in order): the form
    TorchScript compiles, which takes no modules as arguments and so runs every stage (with
    ``stop_early`` the final output is still the last selected stage's)."""
    if output_fmt != "NCHW":
        raise ValueError(f"{family} features are NCHW only")
    take_indices, max_index = feature_take_indices(len(outputs), indices)
    intermediates: List[torch.Tensor] = []
    for i in range(len(outputs)):
        if i in take_indices:
            intermediates.append(outputs[i])
    if intermediates_only:
        return intermediates
    return (outputs[max_index] if stop_early else outputs[-1]), intermediates


class StagedModel(nn.Module):
    """The timm methods every family here implements alike (the classifier is ``head``)."""

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute each stage in the backward pass to save memory."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier layer."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        """Replace the classifier (a ``Linear`` on ``num_features``, after average pooling) by a
        new one for ``num_classes`` (0: none), on the model's device and dtype, in its mode."""
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        ref = next(self.parameters())
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head = head.to(device=ref.device, dtype=ref.dtype).train(self.training)
