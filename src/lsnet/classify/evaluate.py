"""Evaluation: top-1, top-5 and loss over a dataset, gathered across processes."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.distributed import DistInfo, all_reduce_sum
from ..engine.loop import autocast_context

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, info: DistInfo = DistInfo(),
             amp: Optional[str] = None, channels_last: bool = False, progress=None) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # correct@1, correct@5, loss sum, count
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp):
            logits = model(images)
        if isinstance(logits, (tuple, list)):
            logits = (logits[0] + logits[1]) / 2
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(targets[:, None])
        sums += torch.tensor([hit[:, 0].sum().item(), hit.any(1).sum().item(),
                              F.cross_entropy(logits, targets, reduction="sum").item(), targets.numel()],
                             dtype=torch.float64)
        if progress is not None:
            progress.update(1)
    model.train(was_training)
    sums = all_reduce_sum(sums.to(device if device.type == "cuda" else "cpu"), info).cpu()
    count = max(sums[3].item(), 1.0)
    return {"top1": 100.0 * sums[0].item() / count, "top5": 100.0 * sums[1].item() / count,
            "loss": sums[2].item() / count, "count": int(sums[3].item())}
