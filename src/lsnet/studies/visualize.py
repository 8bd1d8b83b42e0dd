"""What LSNet looks at: effective receptive fields (the paper's Fig. 4), SKA's dynamic
aggregation weights (Fig. 5) and the LKP and SKA feature maps (Fig. 6).

Effective receptive field, as RepLKNet measures it (``erf/visualize_erf.py`` and
``erf/analyze_erf.py`` of DingXiaoH/RepLKNet-pytorch): for each image, the gradient of the
centre point of a stage's output -- the ReLU of the output at the centre pixel, summed over
channels -- with respect to the input; its positive part (``gradient="relu"``, RepLKNet's
choice; ``"abs"`` takes absolute values instead) summed over the input channels; averaged
over the images (an image whose map has a NaN is passed over). For display and analysis the
map is log-scaled, ``log10(x + 1)``, and divided by its maximum. The high-contribution area
ratio at threshold t is that of the smallest centred square (side 3, 5, 7, ... around pixel
``(H // 2, W // 2)``, at most ``H // 2 - 1`` steps out) whose sum exceeds t times the total
of the log-scaled map: ``side**2 / (H * W)``; ``None`` when no such square fits.

SKA weights: an LS convolution (:class:`lsnet.models.lsnet.LSConv`, any module with ``lkp``
and ``ska`` children) computes, per pixel and per group of channels, a K x K kernel with its
LKP; :func:`capture_ls_conv` records them from the SKA call itself (a forward hook), with the
LS convolution's input, LKP's perception features (the input of its last 1 x 1 convolution)
and SKA's output.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = [
    "ERF_THRESHOLDS",
    "StageOutput",
    "capture_ls_conv",
    "effective_receptive_field",
    "erf_log_scale",
    "feature_pixel",
    "high_contribution_area",
    "high_contribution_ratios",
    "image_tensor",
    "input_gradient_map",
    "ls_convs",
    "plot_erf",
    "plot_ls_features",
    "plot_ska_weights",
    "select_ls_conv",
]

#: Thresholds of RepLKNet's high-contribution area ratio.
ERF_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


# ----- effective receptive field -----------------------------------------------------------

class StageOutput(nn.Module):
    """The output of stage ``stage`` (an index into the model's ``feature_info``, negative
    from the end) of a timm model, through ``forward_intermediates`` where the model has it,
    else timm's feature extraction wrapper."""

    def __init__(self, model: nn.Module, stage: int = -1):
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not info:
            raise ConfigError(f"{type(model).__name__} has no feature_info: not a timm model with features_only")
        n = len(info)
        if not -n <= stage < n:
            raise ConfigError(f"--stage {stage} is out of range for {type(model).__name__} ({n} stages: 0-{n - 1})")
        self.stage = stage % n
        self.num_stages = n
        entry = info[self.stage]
        self.reduction = int(entry["reduction"] if isinstance(entry, dict) else info.get_dicts()[self.stage]["reduction"])
        self.model = model
        self._features = None
        if not hasattr(model, "forward_intermediates"):
            from timm.models import FeatureListNet

            self._features = FeatureListNet(model, out_indices=(self.stage,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._features is not None:
            return self._features(x)[0]
        out = self.model.forward_intermediates(x, indices=[self.stage], intermediates_only=True, stop_early=True)
        return out[0]


def input_gradient_map(module: nn.Module, x: torch.Tensor, gradient: str = "relu") -> np.ndarray:
    """The (H, W) contribution map of one batch ``x``: the gradient of the ReLU of ``module(x)``'s
    centre pixel (summed over channels and the batch) with respect to ``x``, its positive part
    (``"relu"``) or magnitude (``"abs"``) summed over the batch and the input channels."""
    if gradient not in ("relu", "abs"):
        raise ConfigError(f"gradient must be 'relu' or 'abs', got {gradient!r}")
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    if out.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) output, got shape {tuple(out.shape)}")
    centre = F.relu(out[:, :, out.shape[2] // 2, out.shape[3] // 2]).sum()
    (grad,) = torch.autograd.grad(centre, x)
    grad = F.relu(grad) if gradient == "relu" else grad.abs()
    return grad.sum((0, 1)).double().cpu().numpy()


def effective_receptive_field(module: nn.Module, images: Iterable[torch.Tensor], gradient: str = "relu",
                              progress=None) -> Tuple[np.ndarray, int]:
    """``(mean contribution map, images used)`` over ``images`` (each (1, C, H, W) or a batch
    counted as one), with ``module`` in eval mode; maps with a NaN are passed over."""
    was_training = module.training
    module.eval()
    total, used = None, 0
    try:
        for x in images:
            grad_map = input_gradient_map(module, x, gradient)
            if progress is not None:
                progress.update(1)
            if np.isnan(grad_map).any():
                continue
            total = grad_map if total is None else total + grad_map
            used += 1
    finally:
        module.train(was_training)
    if total is None:
        raise ValueError("no image gave a finite contribution map")
    return total / used, used


def erf_log_scale(erf: np.ndarray) -> np.ndarray:
    """``log10(erf + 1)`` divided by its maximum (RepLKNet's analysis and heat map)."""
    data = np.log10(np.asarray(erf, dtype=np.float64) + 1.0)
    peak = data.max()
    return data / peak if peak > 0 else data


def high_contribution_area(data: np.ndarray, threshold: float) -> Optional[Tuple[int, float]]:
    """``(side, area ratio)`` of the smallest centred square of ``data`` whose sum exceeds
    ``threshold`` times the total (RepLKNet's ``get_rectangle``), else ``None``."""
    data = np.asarray(data, dtype=np.float64)
    h, w = data.shape
    total = data.sum()
    if total <= 0:
        return None
    for i in range(1, h // 2):
        square = data[h // 2 - i: h // 2 + i + 1, w // 2 - i: w // 2 + i + 1]
        if square.sum() / total > threshold:
            side = 2 * i + 1
            return side, side / h * side / w
    return None


def high_contribution_ratios(erf: np.ndarray, thresholds: Sequence[float] = ERF_THRESHOLDS
                             ) -> Dict[float, Optional[Tuple[int, float]]]:
    """The high-contribution areas of a raw contribution map (log-scaled first, as RepLKNet does)."""
    data = erf_log_scale(erf)
    return {t: high_contribution_area(data, t) for t in thresholds}


# ----- LS convolution internals ------------------------------------------------------------

def ls_convs(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every LS convolution in ``model`` (modules with ``lkp``
    and ``ska`` children), in forward order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(getattr(m, "lkp", None), nn.Module) and isinstance(getattr(m, "ska", None), nn.Module)]


def select_ls_conv(model: nn.Module, layer: int | str | None = None) -> Tuple[str, nn.Module]:
    """The LS convolution ``layer``: its position in :func:`ls_convs` (negative from the end;
    default the last), or its qualified name."""
    convs = ls_convs(model)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no LS convolution (a module with lkp and ska)")
    names = [n for n, _ in convs]
    if layer is None:
        return convs[-1]
    if isinstance(layer, str) and not layer.lstrip("-").isdigit():
        if layer not in names:
            raise ConfigError(f"--layer {layer!r} is not an LS convolution; the model has {', '.join(names)}")
        return convs[names.index(layer)]
    i = int(layer)
    if not -len(convs) <= i < len(convs):
        raise ConfigError(f"--layer {i} is out of range: the model has {len(convs)} LS convolutions "
                          f"({', '.join(f'{k}: {n}' for k, n in enumerate(names))})")
    return convs[i]


@torch.no_grad()
def capture_ls_conv(model: nn.Module, ls_conv: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Run ``model(x)`` and record, at ``ls_conv``: ``input`` (N, C, h, w), ``weights`` (the
    per-pixel kernels SKA received, (N, C/G, K*K, h, w)), ``lkp`` (LKP's perception features,
    the input of its last 1 x 1 convolution ``cv4``) and ``ska`` (SKA's output, (N, C, h, w))."""
    got: Dict[str, torch.Tensor] = {}

    def on_input(_m, args):
        got["input"] = args[0].detach()

    def on_ska(_m, args, out):
        got["weights"] = args[1].detach()
        got["ska"] = out.detach()

    def on_lkp(_m, args):
        got["lkp"] = args[0].detach()

    handles = [ls_conv.register_forward_pre_hook(on_input), ls_conv.ska.register_forward_hook(on_ska)]
    cv4 = getattr(ls_conv.lkp, "cv4", None)
    if isinstance(cv4, nn.Module):
        handles.append(cv4.register_forward_pre_hook(on_lkp))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if "weights" not in got:
        raise RuntimeError("the LS convolution did not run in the forward pass")
    return got


def feature_pixel(y: int, x: int, image_size: Tuple[int, int], feature_size: Tuple[int, int]) -> Tuple[int, int]:
    """The feature-map pixel covering input pixel ``(y, x)``."""
    fy = min(int(y * feature_size[0] / image_size[0]), feature_size[0] - 1)
    fx = min(int(x * feature_size[1] / image_size[1]), feature_size[1] - 1)
    return fy, fx


def image_tensor(image, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A PIL image resized to ``size`` x ``size`` (bicubic, as RepLKNet's ERF script), as a
    normalised (1, 3, size, size) tensor."""
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

    tf = T.Compose([T.Resize((size, size), interpolation=InterpolationMode.BICUBIC), T.ToTensor(),
                    T.Normalize(tuple(mean), tuple(std))])
    return tf(image.convert("RGB")).unsqueeze(0)


# ----- plots -------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    _plt().close(fig)
    tmp.replace(path)


def _ratio_text(ratios) -> str:
    parts = []
    for t, v in ratios.items():
        parts.append(f"{round(100 * t)}%: " + ("n/a" if v is None else f"{v[1]:.3f}"))
    return ", ".join(parts)


def plot_erf(maps: Dict[str, np.ndarray], path, subtitles: Optional[Dict[str, str]] = None) -> None:
    """One heat map per model of its log-scaled, normalised contribution map."""
    plt = _plt()
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(4.0 * n + 1.2, 4.6), squeeze=False)
    image = None
    for ax, (label, erf) in zip(axes[0], maps.items()):
        image = ax.imshow(erf_log_scale(erf), cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        sub = (subtitles or {}).get(label) or _ratio_text(high_contribution_ratios(erf))
        ax.set_xlabel(sub, fontsize=7.5)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes[0]), fraction=0.025, pad=0.02, label="log10(x+1) / max")
    _save(fig, path)


def _denormalise(x: torch.Tensor, mean, std) -> np.ndarray:
    img = x[0].cpu().double() * torch.tensor(std, dtype=torch.float64)[:, None, None] + \
        torch.tensor(mean, dtype=torch.float64)[:, None, None]
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def plot_ska_weights(x: torch.Tensor, weights: torch.Tensor, pixels: Sequence[Tuple[int, int]], path, *,
                     mean, std, title: str = "", max_groups: int = 16) -> List[Dict]:
    """For each input pixel ``(y, x)``: the image with the pixel's K x K kernel (mean over the
    channel groups) drawn over its footprint, then each group's kernel. Returns the kernels
    drawn, as lists (``[{"pixel", "feature_pixel", "kernels"}]``)."""
    plt = _plt()
    w = weights[0].double().cpu()  # (G, K*K, h, w)
    groups, kk, fh, fw = w.shape
    k = round(math.sqrt(kk))
    h_img, w_img = x.shape[-2:]
    shown = min(groups, max_groups)
    img = _denormalise(x, mean, std)
    fig, axes = plt.subplots(len(pixels), shown + 1, figsize=(1.25 * shown + 3.2, 2.9 * len(pixels)),
                             squeeze=False, gridspec_kw={"width_ratios": [2.5] + [1] * shown})
    out = []
    for row, (py, px) in enumerate(pixels):
        fy, fx = feature_pixel(py, px, (h_img, w_img), (fh, fw))
        kernels = w[:, :, fy, fx].reshape(groups, k, k).numpy()
        out.append({"pixel": [int(py), int(px)], "feature_pixel": [fy, fx], "kernels": kernels.tolist()})
        ax = axes[row][0]
        ax.imshow(img)
        sy, sx = h_img / fh, w_img / fw  # input pixels per feature pixel
        cy, cx = (fy + 0.5) * sy, (fx + 0.5) * sx
        mean_k = kernels.mean(0)
        ax.imshow(mean_k, cmap="coolwarm", alpha=0.75, interpolation="nearest",
                  extent=(cx - k * sx / 2, cx + k * sx / 2, cy + k * sy / 2, cy - k * sy / 2))
        ax.plot([px], [py], marker="+", color="black", ms=8)
        ax.set_xlim(0, w_img)
        ax.set_ylim(h_img, 0)
        ax.set_title(f"pixel ({py}, {px}) -> feature ({fy}, {fx})", fontsize=8)
        ax.axis("off")
        vmax = float(np.abs(kernels[:shown]).max()) or 1.0
        for g in range(shown):
            a = axes[row][g + 1]
            a.imshow(kernels[g], cmap="coolwarm", vmin=-vmax, vmax=vmax, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if row == 0:
                a.set_title(f"group {g}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return out


def _channel_mean(t: torch.Tensor) -> np.ndarray:
    m = t[0].double().mean(0).cpu().numpy()
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def plot_ls_features(rows: Sequence[Tuple[str, torch.Tensor, Dict[str, torch.Tensor]]], path, *, mean, std,
                     title: str = "") -> None:
    """One row per image: the image, then the channel means (each min-max scaled) of the LS
    convolution's input, LKP's perception features and SKA's output."""
    plt = _plt()
    cols = ["image", "LS conv input", "LKP features", "SKA output"]
    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.6 * len(rows)), squeeze=False)
    for r, (name, x, got) in enumerate(rows):
        panels = [_denormalise(x, mean, std), _channel_mean(got["input"]),
                  _channel_mean(got["lkp"]) if "lkp" in got else None, _channel_mean(got["ska"])]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            if panel is not None:
                ax.imshow(panel, cmap=None if c == 0 else "jet", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
