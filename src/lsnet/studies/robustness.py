"""Robustness of classifiers (the LSNet paper's Table 4): ImageNet-C mCE, ImageNet-A, -R and
-Sketch top-1, and the same corruption benchmark generated offline on any validation split.

Metrics (Hendrycks & Dietterich, ICLR 2019). For corruption c and severity s let E_{s,c} be
the top-1 error (a fraction). The corruption error is normalised by AlexNet's::

    CE_c = (sum_s E_{s,c}) / (sum_s E^AlexNet_{s,c}),     mCE = 100 * mean_c CE_c

with AlexNet's errors averaged over the five severities (:data:`ALEXNET_ERRORS`, so the sums
become means). Against a baseline model instead of AlexNet, the relative corruption error
subtracts each model's clean error::

    relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean)

and the relative mCE is 100 times its mean over the corruptions.

Protocol of the LSNet release: float32, fused model; ImageNet-C images (already 224 x 224)
are centre-cropped at the model's size without resizing; ImageNet-A, -R and -Sketch images
are resized to ``size / 0.875`` (bicubic) and centre-cropped. ImageNet-A and -R have 200
classes: the 1000 logits are restricted to them (:func:`imagenet_subset_wnids`), in the
order of the sorted 1000 WordNet ids, which is also ImageNet's class order.

Offline, :func:`generate_corrupted` writes the 15 corruptions x 5 severities of a validation
split (digits by default) in ImageNet-C's layout with the ``imagecorruptions`` package
(``pip install 'lsnet[studies]'``), prepared at the model's evaluation geometry as ImageNet-C
was (resize, centre crop, then corrupt), and cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import IMG_EXTENSIONS, DataError, DataFileNotFoundError
from ..errors import ConfigError

__all__ = [
    "ALEXNET_ERRORS",
    "CORRUPTIONS",
    "SEVERITIES",
    "ImageNetCResult",
    "check_imagenet_c_root",
    "corrupted_cache_dir",
    "corruption_errors",
    "evaluate_folder",
    "evaluate_imagenet_c",
    "evaluate_imagenet_variant",
    "generate_corrupted",
    "imagenet_c_transform",
    "imagenet_subset_wnids",
    "imagenet_wnids",
    "mean_corruption_error",
    "plot_corruption_errors",
    "relative_mean_corruption_error",
    "resize_crop_transform",
]

logger = logging.getLogger(__name__)

#: The 15 ImageNet-C corruptions (the folder names of the released set), in the standard order.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")

#: Severities of each corruption.
SEVERITIES = (1, 2, 3, 4, 5)

#: AlexNet's top-1 error on each ImageNet-C corruption, averaged over the five severities.
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816,
    "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204,
    "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}

_WNID = re.compile(r"^n\d{8}$")
_CACHE_VERSION = 1


# ----- metrics ----------------------------------------------------------------------------

def corruption_errors(errors: Mapping[str, Sequence[float]]) -> Dict[str, float]:
    """Each corruption's error averaged over its severities (fractions in, fractions out)."""
    out = {}
    for name, values in errors.items():
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"no severities for corruption {name!r}")
        out[name] = sum(values) / len(values)
    return out


def mean_corruption_error(errors: Mapping[str, Sequence[float]], reference: Mapping[str, float] = ALEXNET_ERRORS
                          ) -> Tuple[Dict[str, float], float]:
    """``({corruption: CE}, mCE)``: CE_c = mean_s E_{s,c} / reference_c and mCE = 100 * mean_c CE_c.

    ``errors`` maps corruptions to their errors per severity (fractions); ``reference``
    holds the reference model's errors averaged over severities (AlexNet's by default, or a
    baseline's from :func:`corruption_errors`)."""
    missing = [c for c in errors if c not in reference]
    if missing:
        raise ValueError(f"no reference error for corruption(s) {', '.join(missing)}")
    ce = {c: e / float(reference[c]) for c, e in corruption_errors(errors).items()}
    return ce, 100.0 * sum(ce.values()) / len(ce)


def relative_mean_corruption_error(errors: Mapping[str, Sequence[float]], clean_error: float,
                                   base_errors: Mapping[str, Sequence[float]], base_clean_error: float
                                   ) -> Tuple[Dict[str, float], float]:
    """``({corruption: relative CE}, relative mCE)`` against a baseline (see the module docstring).

    A corruption on which the baseline loses nothing (its mean error not above its clean
    error) has no relative CE (``nan``) and is left out of the mean; ``nan`` when none is left.
    """
    mine, base = corruption_errors(errors), corruption_errors(base_errors)
    missing = [c for c in mine if c not in base]
    if missing:
        raise ValueError(f"the baseline has no error for corruption(s) {', '.join(missing)}")
    rel = {}
    for c, e in mine.items():
        denominator = base[c] - float(base_clean_error)
        rel[c] = (e - float(clean_error)) / denominator if denominator > 0 else math.nan
    finite = [v for v in rel.values() if math.isfinite(v)]
    return rel, (100.0 * sum(finite) / len(finite)) if finite else math.nan


# ----- WordNet ids ------------------------------------------------------------------------

def imagenet_wnids() -> List[str]:
    """The 1000 ImageNet-1k WordNet ids, sorted: the index of a wnid is its class index."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


def imagenet_subset_wnids(name: str) -> List[str]:
    """The 200 WordNet ids of ImageNet-A (``name="a"``) or ImageNet-R (``"r"``), sorted.

    Shipped as package data (``lsnet/studies/imagenet_{a,r}_wnids.txt``); they are the
    classes of ``indices_in_1k`` / ``imagenet_r_mask`` in the datasets' evaluation code."""
    from importlib import resources

    key = name.lower().removeprefix("imagenet-").removeprefix("imagenet_")
    if key not in ("a", "r"):
        raise ValueError(f"ImageNet-A ('a') or ImageNet-R ('r'), got {name!r}")
    text = resources.files(__package__).joinpath(f"imagenet_{key}_wnids.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


# ----- transforms -------------------------------------------------------------------------

def imagenet_c_transform(img_size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """ImageNet-C evaluation: centre crop at ``img_size``, no resize (the release's protocol)."""
    from torchvision import transforms as T

    from ..data import ToRGB

    return T.Compose([ToRGB(), T.CenterCrop(img_size), T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])


def resize_crop_transform(img_size: int, mean: Sequence[float], std: Sequence[float],
                          crop_pct: float = 0.875, interpolation: str = "bicubic") -> Callable:
    """ImageNet-A/-R/-Sketch evaluation: resize to ``img_size / crop_pct``, centre crop."""
    from ..data import build_transforms

    return build_transforms(False, img_size, crop_pct=crop_pct, interpolation=interpolation, mean=mean, std=std)


# ----- evaluation -------------------------------------------------------------------------

def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = model(images)
    if isinstance(out, (tuple, list)):  # distillation heads outside eval mode
        out = (out[0] + out[1]) / 2
    return out.float()


@torch.no_grad()
def evaluate_folder(model: nn.Module, samples: Sequence[Tuple[str, int]], transform: Callable, *,
                    logit_index: Optional[Sequence[int]] = None, batch_size: int = 64, workers: int = 0,
                    device: Optional[torch.device] = None, progress=None, root: str = "") -> Tuple[float, int]:
    """``(top-1 error as a fraction, images scored)`` of ``model`` on ``(path, label)`` samples.

    ``logit_index`` restricts the logits to those classes first (labels then index into it).
    Unreadable images are left out (and counted by the dataset's log)."""
    from torch.utils.data import DataLoader

    from ..data import ImageFolderDataset, collate_readable

    dataset = ImageFolderDataset(list(samples), [], transform=transform, root=root, substitute=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_readable)
    device = device or torch.device("cpu")
    index = torch.as_tensor(list(logit_index), device=device) if logit_index is not None else None
    wrong = count = 0
    for batch in loader:
        if batch is None:
            continue
        images, targets = batch[0].to(device), batch[1].to(device)
        logits = _logits(model, images)
        if index is not None:
            logits = logits.index_select(1, index)
        wrong += int((logits.argmax(1) != targets).sum())
        count += int(targets.numel())
        if progress is not None:
            progress.update(int(targets.numel()))
    skipped = dataset.skipped_files()
    if skipped:
        logger.warning("%s: %d unreadable image(s) left out, e.g. %s", root or "dataset", len(skipped), skipped[0])
    if count == 0:
        raise DataError(f"{root or 'dataset'}: no readable image to evaluate")
    return wrong / count, count


def _class_folder_samples(folder: Path, class_to_label: Mapping[str, int]) -> List[Tuple[str, int]]:
    """``(path, label)`` for the images under ``folder/<class>/`` (sorted, recursive)."""
    from ..data import list_images

    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "is missing"
        raise DataError(f"{folder} {what} (expected {folder}/<class>/<images>)")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<images>)")
    unknown = [c for c in classes if c not in class_to_label]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise DataError(f"{folder}: class folder(s) {shown} ({len(unknown)}) are not classes of the model")
    samples = []
    for c in classes:
        try:
            files = list_images([folder / c])
        except DataError as err:
            raise DataError(f"{folder / c}: class folder has no image files ({', '.join(IMG_EXTENSIONS)})") from err
        samples.extend((str(p), class_to_label[c]) for p in files)
    return samples


def check_imagenet_c_root(root, corruptions: Sequence[str] = CORRUPTIONS,
                          severities: Sequence[int] = SEVERITIES) -> None:
    """Refuse, before any work, an ImageNet-C root that lacks a corruption or severity folder
    (the message names the first one missing)."""
    root = Path(root)
    if not root.is_dir():
        raise DataFileNotFoundError(f"{root}: ImageNet-C folder does not exist")
    for c in corruptions:
        if not (root / c).is_dir():
            raise DataError(f"{root}: corruption folder {c}/ is missing "
                            f"(expected {root}/{c}/<severity 1-5>/<class>/<images>)")
        for s in severities:
            if not (root / c / str(s)).is_dir():
                raise DataError(f"{root}: severity folder {c}/{s}/ is missing "
                                f"(expected {root}/{c}/{s}/<class>/<images>)")


def _count_images(folder: Path) -> int:
    return sum(1 for _, _, files in os.walk(folder, followlinks=True) for f in files
               if f.lower().endswith(IMG_EXTENSIONS))


@dataclass
class ImageNetCResult:
    """Errors (fractions) of one model on a corruption benchmark."""

    errors: Dict[str, List[float]]  # corruption -> error per severity
    clean_error: Optional[float] = None
    counts: Dict[str, int] = field(default_factory=dict)

    def corruption_errors(self) -> Dict[str, float]:
        return corruption_errors(self.errors)


def evaluate_imagenet_c(model: nn.Module, root, transform: Callable, class_to_label: Mapping[str, int], *,
                        corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
                        clean_root=None, batch_size: int = 64, workers: int = 0,
                        device: Optional[torch.device] = None, progress=None) -> ImageNetCResult:
    """Errors of ``model`` on every ``root/<corruption>/<severity>/<class>/`` folder (and on
    ``clean_root/<class>/`` when given), labels from ``class_to_label`` by folder name."""
    root = Path(root)
    check_imagenet_c_root(root, corruptions, severities)
    result = ImageNetCResult(errors={})
    kw = {"batch_size": batch_size, "workers": workers, "device": device, "progress": progress}
    if clean_root is not None:
        samples = _class_folder_samples(Path(clean_root), class_to_label)
        result.clean_error, result.counts["clean"] = evaluate_folder(model, samples, transform,
                                                                     root=str(clean_root), **kw)
    for c in corruptions:
        result.errors[c] = []
        for s in severities:
            folder = root / c / str(s)
            samples = _class_folder_samples(folder, class_to_label)
            err, n = evaluate_folder(model, samples, transform, root=str(folder), **kw)
            result.errors[c].append(err)
            result.counts[f"{c}/{s}"] = n
    return result


def evaluate_imagenet_variant(model: nn.Module, root, which: str, transform: Callable, *, batch_size: int = 64,
                              workers: int = 0, device: Optional[torch.device] = None, progress=None
                              ) -> Tuple[float, int]:
    """Top-1 error of a 1000-class ``model`` on ImageNet-A (``which="a"``), -R (``"r"``) or
    -Sketch (``"sketch"``): class folders named by wnid; for A and R the logits are restricted
    to the 200 classes of the set."""
    wnids = imagenet_wnids()
    if which in ("a", "r"):
        subset = imagenet_subset_wnids(which)
        position = {w: i for i, w in enumerate(wnids)}
        logit_index = [position[w] for w in subset]
        class_to_label = {w: i for i, w in enumerate(subset)}
    elif which == "sketch":
        logit_index, class_to_label = None, {w: i for i, w in enumerate(wnids)}
    else:
        raise ValueError(f"which must be 'a', 'r' or 'sketch', got {which!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataFileNotFoundError(f"{root}: ImageNet-{which.upper() if len(which) == 1 else 'Sketch'} "
                                    "folder does not exist")
    samples = _class_folder_samples(root, class_to_label)
    return evaluate_folder(model, samples, transform, logit_index=logit_index, batch_size=batch_size,
                           workers=workers, device=device, progress=progress, root=str(root))


# ----- offline generation -----------------------------------------------------------------

def _require_imagecorruptions():
    try:
        import imagecorruptions
    except ImportError as err:
        raise ConfigError("generating corruptions needs the imagecorruptions package (the maintained "
                          "imagecorruptions-imaug release): pip install 'lsnet[studies]'") from err
    return imagecorruptions


def corrupted_cache_dir(data: str, img_size: int, crop_pct: float, interpolation: str, seed: int,
                        max_images: Optional[int], base=None) -> Path:
    """Where :func:`generate_corrupted` caches a set: ``base`` (default
    ``$XDG_CACHE_HOME/lsnet/corrupted`` or ``~/.cache/lsnet/corrupted``) / a name made of
    the data source and the generation parameters."""
    if base is None:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lsnet" / "corrupted"
    if data == "digits":
        tag = "digits"
    else:
        path = str(Path(data).resolve())
        tag = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(data).resolve().name) + "-" + \
            hashlib.sha1(path.encode()).hexdigest()[:8]
    n = "all" if max_images is None else str(max_images)
    return Path(base) / f"{tag}-{img_size}px-crop{crop_pct:g}-{interpolation}-seed{seed}-n{n}-v{_CACHE_VERSION}"


def _generation_params(data, img_size, crop_pct, interpolation, seed, max_images, corruptions, severities):
    return {"version": _CACHE_VERSION, "data": data if data == "digits" else str(Path(data).resolve()),
            "img_size": img_size, "crop_pct": crop_pct, "interpolation": interpolation, "seed": seed,
            "max_images": max_images, "corruptions": list(corruptions), "severities": list(severities)}


def _image_seed(seed: int, corruption: int, severity: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, corruption, severity, index]).generate_state(1)[0])


def generate_corrupted(data: str, out_dir, *, img_size: int, crop_pct: float = 0.875,
                       interpolation: str = "bicubic", seed: int = 0, max_images: Optional[int] = None,
                       corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
                       regenerate: bool = False, progress: bool = True) -> Tuple[Path, List[str]]:
    """Write the validation split of ``data`` ("digits" or an ImageFolder root with ``val/``)
    corrupted, as ``out_dir/<corruption>/<severity>/<class>/<n>.png``, and the uncorrupted
    images as ``out_dir/clean/<class>/<n>.png``; returns ``(out_dir, class names)``.

    Each image is first prepared at the evaluation geometry (short side resized to
    ``img_size / crop_pct``, centre crop ``img_size``), as ImageNet-C was made from 224-pixel
    crops, then corrupted with ``imagecorruptions`` (seeded per image). PNG, not JPEG, so that
    no second compression is added. A complete set (``manifest.json``, written last, with the
    same parameters) is reused unless ``regenerate``. ``max_images`` keeps that many
    validation images, spread evenly over the split.
    """
    from ..data import build_eval_dataset
    from ..engine.report import progress_bar

    out_dir = Path(out_dir)
    params = _generation_params(data, img_size, crop_pct, interpolation, seed, max_images, corruptions, severities)
    manifest = out_dir / "manifest.json"
    if not regenerate and manifest.is_file():
        try:
            saved = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            saved = {}
        if saved.get("params") == params:
            logger.info("reusing the corrupted images in %s", out_dir)
            return out_dir, list(saved["class_names"])
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise ConfigError(f"unknown corruption(s) {', '.join(unknown)} (choose from {', '.join(CORRUPTIONS)})")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise ConfigError(f"severities must be in 1-5, got {bad}")
    ic = _require_imagecorruptions()
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

    val, class_names, _ = build_eval_dataset(data, transform=None, seed=seed)
    n = len(val)
    picks = list(range(n)) if max_images is None or max_images >= n else \
        sorted({round(float(i)) for i in np.linspace(0, n - 1, max_images)})
    resize = T.Compose([T.Resize(math.floor(img_size / crop_pct), interpolation=InterpolationMode(interpolation)),
                        T.CenterCrop(img_size)])
    if manifest.exists():
        manifest.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ["clean", *corruptions]:
        folder = out_dir / name
        for path in sorted(folder.rglob("*.png")) if folder.is_dir() else []:
            path.unlink()  # a stale set of other parameters
    bar = progress_bar(len(picks) * (1 + len(corruptions) * len(severities)), "corrupting", enabled=progress)
    written = 0
    for i in picks:
        item = val[i]
        if item is None:  # unreadable file, recorded by the dataset
            bar.update(1 + len(corruptions) * len(severities))
            continue
        img, label = item
        base = np.asarray(resize(img.convert("RGB")), dtype=np.uint8)
        cls = class_names[label]
        name = f"{i:06d}.png"
        (out_dir / "clean" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(base).save(out_dir / "clean" / cls / name)
        bar.update(1)
        for ci, c in enumerate(corruptions):
            for s in severities:
                folder = out_dir / c / str(s) / cls
                folder.mkdir(parents=True, exist_ok=True)
                s_seed = _image_seed(seed, CORRUPTIONS.index(c), s, i)
                np.random.seed(s_seed % 2 ** 32)  # the package draws from numpy's global generator
                kwargs = {"seed": s_seed % 2 ** 31} if c in ("glass_blur", "impulse_noise") else {}
                out = ic.corrupt(base, severity=s, corruption_name=c, **kwargs)
                Image.fromarray(np.asarray(out, dtype=np.uint8)).save(folder / name)
                bar.update(1)
        written += 1
    bar.close()
    if written == 0:
        raise DataError(f"{data}: no readable validation image to corrupt")
    manifest.write_text(json.dumps({"params": params, "class_names": list(class_names), "images": written},
                                   indent=2))
    return out_dir, list(class_names)


# ----- plot -------------------------------------------------------------------------------

def plot_corruption_errors(results: Mapping[str, ImageNetCResult], path, title: str = "",
                           severities: Sequence[int] = SEVERITIES) -> None:
    """One panel per corruption: top-1 error (%) against severity, one line per model (its
    clean error dashed in the same colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corruptions = list(next(iter(results.values())).errors)
    cols = min(5, len(corruptions))
    rows = math.ceil(len(corruptions) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.5 * rows + 0.6), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, c in enumerate(corruptions):
        ax = axes[k // cols][k % cols]
        for j, (label, res) in enumerate(results.items()):
            colour = colours[j % len(colours)]
            ax.plot(list(severities), [100 * e for e in res.errors[c]], marker="o", ms=3, color=colour, label=label)
            if res.clean_error is not None:
                ax.axhline(100 * res.clean_error, color=colour, ls="--", lw=0.8)
        ax.set_title(c.replace("_", " "), fontsize=9)
        ax.set_xticks(list(severities))
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("top-1 error (%)")
        if k // cols == rows - 1:
            ax.set_xlabel("severity")
    for k in range(len(corruptions), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=9,
               bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        fig.suptitle(title, y=0.02, fontsize=9, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
