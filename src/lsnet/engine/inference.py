"""Inference plumbing shared by ``lsnet eval``, ``predict`` and ``export``: a model and its
preprocessing from one checkpoint, read once.

Preprocessing is resolved once, in this order (later wins): timm's
``resolve_model_data_config`` of the model (its ``pretrained_cfg``), what the checkpoint
recorded (``preprocessing`` or, in older files, ``config``: image size, crop, interpolation,
mean and std; see :data:`lsnet.models.checkpoint.PREPROCESSING_KEYS`), and the options the
user gave. :func:`preprocessing_record` is what training writes into its checkpoints.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..models.checkpoint import CheckpointError, CheckpointFile, load_checkpoint, open_checkpoint

__all__ = ["Preprocessing", "InferenceModel", "resolve_preprocessing", "preprocessing_record", "load_for_inference",
           "check_options", "check_output_file", "check_same_classes",
           "TaskCheckpoint", "open_task_checkpoint", "rebuild_task_model"]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a classifier: resize the short side to ``img_size /
    crop_pct``, centre-crop ``img_size``, normalise with ``mean`` / ``std``."""

    img_size: int
    crop_pct: float
    interpolation: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    def transform(self) -> Callable:
        """PIL image (any mode) -> normalised CHW float tensor."""
        from ..data import build_transforms

        return build_transforms(False, self.img_size, crop_pct=self.crop_pct, interpolation=self.interpolation,
                                mean=self.mean, std=self.std)

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_options(img_size: Optional[int] = None, crop_pct: Optional[float] = None,
                  interpolation: Optional[str] = None, topk: Optional[int] = None,
                  batch_size: Optional[int] = None) -> None:
    """Refuse option values that cannot work, naming the option (``None`` means not given)."""
    if img_size is not None and img_size < 1:
        raise ConfigError(f"--img-size must be at least 1, got {img_size}")
    if crop_pct is not None and not (math.isfinite(crop_pct) and 0 < crop_pct <= 1):
        raise ConfigError(f"--crop-pct must be in (0, 1] (the fraction of the resized image kept), got {crop_pct}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ConfigError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if topk is not None and topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {topk}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")


def check_output_file(path: Optional[Union[str, os.PathLike]], option: str, create_parent: bool = False) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a path
    whose folder is missing (unless ``create_parent``), not a folder or not writable."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {p} is a folder; give a file name")
    parent = p.parent
    if create_parent:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ConfigError(f"{option} {p}: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{option} {p} cannot be written (permission denied)")


def _timm_data_config(model: Optional[nn.Module]) -> Dict[str, Any]:
    from timm.data import resolve_data_config, resolve_model_data_config

    return resolve_model_data_config(model) if model is not None else resolve_data_config({})


def resolve_preprocessing(model: Optional[nn.Module] = None, recorded: Optional[Dict[str, Any]] = None, *,
                          img_size: Optional[int] = None, crop_pct: Optional[float] = None,
                          interpolation: Optional[str] = None) -> Preprocessing:
    """The model's ``pretrained_cfg`` (via timm), overridden by what a checkpoint ``recorded``
    (keys ``img_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``), overridden by the
    options given here."""
    check_options(img_size=img_size, crop_pct=crop_pct, interpolation=interpolation)
    cfg = _timm_data_config(model)
    values: Dict[str, Any] = {"img_size": int(cfg["input_size"][-1]), "crop_pct": float(cfg["crop_pct"]),
                              "interpolation": cfg["interpolation"], "mean": cfg["mean"], "std": cfg["std"]}
    values.update({k: v for k, v in (recorded or {}).items() if k in values and v is not None})
    given = {"img_size": img_size, "crop_pct": crop_pct, "interpolation": interpolation}
    values.update({k: v for k, v in given.items() if v is not None})
    if values["interpolation"] not in INTERPOLATIONS:  # timm's "random" is a training-time choice
        values["interpolation"] = "bicubic"
    return Preprocessing(img_size=int(values["img_size"]), crop_pct=float(values["crop_pct"]),
                         interpolation=str(values["interpolation"]),
                         mean=tuple(float(v) for v in values["mean"]), std=tuple(float(v) for v in values["std"]))


def preprocessing_record(img_size: int, crop_pct: float, interpolation: str, mean: Sequence[float],
                         std: Sequence[float]) -> Dict[str, Any]:
    """What a training checkpoint stores under its top-level key ``preprocessing`` so that
    evaluation and prediction prepare images as validation did."""
    return Preprocessing(int(img_size), float(crop_pct), str(interpolation), tuple(map(float, mean)),
                         tuple(map(float, std))).to_dict()


@dataclass
class InferenceModel:
    """A classifier ready for inference and what its checkpoint said about it."""

    model: nn.Module  # in eval mode, on the CPU
    arch: str
    num_classes: int
    class_names: List[str]
    preprocessing: Preprocessing
    checkpoint: str
    seed: int = 0
    info: Dict[str, Any] = field(default_factory=dict)  # the checkpoint's own metadata, checked

    def transform(self) -> Callable:
        """The evaluation transform of :attr:`preprocessing`."""
        return self.preprocessing.transform()


def _classifier_key(arch: str, state: Dict[str, torch.Tensor]) -> Optional[str]:
    """Key of the classifier's weight in ``state``, where there is one."""
    from timm.models import get_pretrained_cfg_value

    try:
        classifier = get_pretrained_cfg_value(arch, "classifier")
    except RuntimeError:  # a model registered without a pretrained configuration
        classifier = None
    if isinstance(classifier, (tuple, list)):
        classifier = classifier[0]
    for name in (classifier, "head.l", "head.fc", "fc", "classifier", "head"):
        if not name:
            continue
        for key in (f"{name}.weight", f"module.{name}.weight"):
            if key in state and state[key].dim() >= 2:
                return key
    return None


def _imagenet_names() -> List[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(1000)]


def load_for_inference(checkpoint: Union[str, os.PathLike, CheckpointFile], arch: Optional[str] = None, *,
                       use_ema: bool = False, num_classes: Optional[int] = None, img_size: Optional[int] = None,
                       crop_pct: Optional[float] = None, interpolation: Optional[str] = None) -> InferenceModel:
    """Build the model a checkpoint was trained as, load its weights (reading the file once)
    and resolve its preprocessing (see the module docstring).

    ``arch`` defaults to the checkpoint's, else ``lsnet_t``; the number of classes comes from
    the classifier's weights, else the checkpoint's class names, else ``num_classes``, else
    1000. ``img_size`` / ``crop_pct`` / ``interpolation`` override what the checkpoint
    recorded. Raises :class:`~lsnet.models.checkpoint.CheckpointError` for a file that cannot
    be read or does not fit, :class:`~lsnet.errors.ConfigError` for a bad option.
    """
    import timm

    import lsnet  # noqa: F401 - registers the LSNet models with timm

    check_options(img_size=img_size, crop_pct=crop_pct, interpolation=interpolation)
    ck = checkpoint if isinstance(checkpoint, CheckpointFile) else open_checkpoint(checkpoint)
    info = ck.info()
    state = ck.state_dict(use_ema=use_ema)
    if arch and info.get("arch") and arch != info["arch"]:
        raise ConfigError(f"--model {arch} but {ck.path} was trained as {info['arch']}")
    arch = arch or info.get("arch") or "lsnet_t"
    if arch not in timm.list_models():
        raise ConfigError(f"unknown model {arch!r} (not registered with timm)")
    key = _classifier_key(arch, state)
    names = info.get("class_names")
    if key is not None:
        n = int(state[key].shape[0])
    else:
        n = len(names) if names else (num_classes or 1000)
    if num_classes is not None and num_classes != n:
        raise ConfigError(f"--num-classes {num_classes} but {ck.path} has {n} classes")
    if names and len(names) != n:
        raise CheckpointError(f"{ck.path}: its metadata names {len(names)} classes but its classifier has {n} "
                              "outputs (a damaged file, or not written by lsnet)")
    kwargs: Dict[str, Any] = {"num_classes": n}
    if arch.startswith("lsnet") and info.get("img_size"):
        kwargs["img_size"] = info["img_size"]  # sets the attention-bias grid the weights were trained with
    saved = ck.content.get("config") if isinstance(ck.content, dict) else None
    extra = saved.get("model_kwargs") if isinstance(saved, dict) else None
    if isinstance(extra, dict) and (arch == saved.get("model") or not saved.get("model")):
        kwargs.update(extra)  # trained with lsnet train --model-kwargs
    model = timm.create_model(arch, **kwargs)
    load_checkpoint(model, ck, use_ema=use_ema)
    if not names:
        names = _imagenet_names() if n == 1000 else [str(i) for i in range(n)]
    pre = resolve_preprocessing(model, info, img_size=img_size, crop_pct=crop_pct, interpolation=interpolation)
    return InferenceModel(model=model.eval(), arch=arch, num_classes=n, class_names=list(names), preprocessing=pre,
                          checkpoint=str(ck.path), seed=int(info.get("seed", 0)), info=info)


@dataclass
class TaskCheckpoint:
    """A checkpoint written by a task on the engine (``fit``), read once: its configuration,
    weights, class names and the kind of task that wrote it."""

    path: Path
    content: Dict[str, Any]
    config: Dict[str, Any]
    class_names: List[str]
    kind: str


def open_task_checkpoint(path: Union[str, os.PathLike], writer: str) -> TaskCheckpoint:
    """Read a training checkpoint without running code; one :class:`CheckpointError` naming
    the file (and ``writer``, the command that should have written it) for anything else."""
    ck = open_checkpoint(path)
    content = ck.content
    config = content.get("config") if isinstance(content, dict) else None
    if not isinstance(config, dict) or not isinstance(content.get("model"), dict):
        raise CheckpointError(f"{ck.path} is not a checkpoint written by {writer}")
    names = content.get("class_names")
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{ck.path}: its metadata 'class_names' is not a list of class names (a damaged file, "
                              "or not written by lsnet)")
    kind = content.get("task") or config.get("task") or "classify"
    return TaskCheckpoint(path=ck.path, content=content, config=config, class_names=list(names), kind=kind)


def rebuild_task_model(ck: TaskCheckpoint, make_config: Callable[[Dict[str, Any]], Any],
                       build_model: Callable[[Any, int], nn.Module], describe: Callable[[Any], str]):
    """(configuration, model with the checkpoint's weights): ``make_config`` turns the saved
    configuration into the task's, ``build_model(cfg, num_classes)`` rebuilds the model (the
    checkpoint holds every weight, so no pre-trained file is read); a configuration or weights
    that do not fit stop with one :class:`CheckpointError` (``describe(cfg)`` names the model)."""
    try:
        cfg = make_config(ck.config)
        model = build_model(cfg, len(ck.class_names))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{ck.path}: its configuration cannot be used ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from err
    try:
        model.load_state_dict(ck.content["model"])
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise CheckpointError(f"{ck.path}: its weights do not fit {describe(cfg)} with the {len(ck.class_names)} "
                              f"classes its metadata names ({detail})") from err
    return cfg, model


def check_same_classes(trained: Sequence[str], found: Sequence[str], checkpoint: str, data: str) -> None:
    """Refuse to evaluate on a dataset whose classes (names, in order) differ from the
    checkpoint's: the metrics would compare unrelated labels."""
    if list(trained) != list(found):
        def show(names: Sequence[str]) -> str:
            return "[" + ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") + f"] ({len(names)})"

        raise ConfigError(f"{checkpoint} was trained on classes {show(list(trained))} but {data} has "
                          f"{show(list(found))}")
