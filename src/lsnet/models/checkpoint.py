"""Reading and writing LSNet checkpoints: the release's ``.pth`` files, timm-style state
dicts and ``.safetensors``.

Loading never runs code from the file: pickles are read with ``weights_only=True`` and only
the globals the release's files need (``argparse.Namespace``) are allowed.

:func:`open_checkpoint` reads a file once and gives both its weights and what it says about
itself (:meth:`CheckpointFile.info`, checked: a damaged or crafted value is a
:class:`CheckpointError` naming the file, not a failure further on).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..errors import ConfigError, UserError
from .lsknet import LSKNet, lsknet_checkpoint_filter_fn
from .lsnet import MODEL_ARGS, LSNet, checkpoint_filter_fn, release_safe_globals

__all__ = ["CheckpointError", "CheckpointFile", "open_checkpoint", "load_state_dict_file", "load_checkpoint",
           "save_checkpoint", "atomic_write", "read_checkpoint_file", "checkpoint_info", "convert_checkpoint",
           "INFO_KEYS", "PREPROCESSING_KEYS"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file could not be read, or does not fit the model."""


def read_checkpoint_file(path: Path, map_location="cpu") -> Any:
    """The object stored in a checkpoint file, read without running code from it."""
    return _read_file(Path(path), map_location)


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")


def _read_file(path: Path, map_location) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err.strerror or err}") from err
    # torch.save writes a zip archive (PK..), older torch a pickle (protocol 2+ starts with 0x80);
    # anything else fails deep inside the unpickler with an unhelpful EOFError / IndexError.
    if not head:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: the file is empty (0 bytes)")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: it starts with neither a zip archive's "
                              "nor a pickle's header")
    try:
        with torch.serialization.safe_globals(release_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(err))))
        if not names:  # damaged, not a checkpoint, or a pickle the weights-only reader cannot parse
            detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
            reason = detail.group(1).strip() if detail else type(err).__name__
            raise CheckpointError(f"Refusing to load {path}: it is not a PyTorch checkpoint that can be read "
                                  f"without running code from it ({reason})") from err
        raise CheckpointError(
            f"Refusing to load {path}: unpickling it would import {', '.join(names)}, which can run code. "
            f"lsnet only unpickles weights (torch.load(weights_only=True), plus argparse.Namespace for the "
            f"release's files); if you trust this file, load it yourself and pass its state_dict."
        ) from err
    except Exception as err:  # noqa: BLE001 - damaged files make the reader fail in many ways (KeyError, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (damaged or truncated?): "
                              f"{type(err).__name__}: {reason}") from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


#: What :meth:`CheckpointFile.info` reports, and :func:`convert_checkpoint` keeps as safetensors metadata.
INFO_KEYS = ("arch", "class_names", "img_size", "crop_pct", "interpolation", "mean", "std", "seed")
#: The preprocessing a checkpoint may record, read from its top-level ``preprocessing`` dict or,
#: for older files, from its ``config`` dict.
PREPROCESSING_KEYS = ("img_size", "crop_pct", "interpolation", "mean", "std")
# "random" is timm's training-time choice; inference resolves it to bicubic
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos", "random")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_info(values: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """``values`` with every known key checked; a wrong value raises CheckpointError naming the file."""
    rules = {
        "arch": (lambda v: isinstance(v, str) and v.strip() != "", "a model name"),
        "class_names": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(n, str) for n in v),
                        "a list of class names"),
        "img_size": (lambda v: _number(v) and v == int(v) and v >= 1, "a positive whole number"),
        "crop_pct": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
        "interpolation": (lambda v: v in _INTERPOLATIONS, "one of " + ", ".join(_INTERPOLATIONS)),
        "mean": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(map(_number, v)), "3 numbers"),
        "std": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(_number(x) and x > 0 for x in v),
                "3 positive numbers"),
        "seed": (lambda v: _number(v) and v == int(v), "a whole number"),
    }
    out: Dict[str, Any] = {}
    for key, value in values.items():
        ok, what = rules[key]
        if not ok(value):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise CheckpointError(f"{path}: its metadata '{key}' is {shown}, not {what} (a damaged file, or not "
                                  "written by lsnet)")
        if key in ("img_size", "seed"):
            value = int(value)
        elif key in ("class_names", "mean", "std"):
            value = list(value)
        out[key] = value
    return out


class CheckpointFile:
    """A checkpoint file read once: its weights (:meth:`state_dict`) and what it says about
    itself (:meth:`info`). Build it with :func:`open_checkpoint`."""

    def __init__(self, path: Path, content: Any, metadata: Optional[Dict[str, str]] = None):
        self.path = Path(path)
        self.content = content  # the stored object: a state_dict or a dict holding one
        self.metadata = metadata or {}  # a .safetensors file's string metadata

    def state_dict(self, use_ema: bool = False) -> Dict[str, torch.Tensor]:
        """The model's (or with ``use_ema`` the EMA) state_dict (see :func:`load_state_dict_file`)."""
        obj, path = self.content, self.path
        if _is_state_dict(obj):
            return dict(obj)
        if isinstance(obj, dict):
            keys = ("model_ema", "state_dict_ema", "ema") if use_ema else ("model", "state_dict")
            for key in keys:
                if _is_state_dict(obj.get(key)):
                    return dict(obj[key])
            weights = obj.get("state_dict")
            if use_ema and _is_state_dict(weights) and any(k.startswith("ema_") for k in weights):
                # mmcv's EMAHook (LSKNet's detectors) keeps the averages beside the weights, as
                # ema_<name with underscores>; the model's filter picks them (lsknet_checkpoint_filter_fn)
                return dict(weights)
            what = "EMA weights (" + ", ".join(keys) + ")" if use_ema else "a state_dict ('model' or 'state_dict')"
            raise CheckpointError(f"{path} holds no {what}; its top-level keys are {sorted(map(str, obj))}")
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict")

    def info(self) -> Dict[str, Any]:
        """What the file says about itself, checked: ``arch``, ``class_names``, ``img_size``,
        ``crop_pct``, ``interpolation``, ``mean``, ``std`` and ``seed`` where recorded."""
        return _info_of(self.content, self.metadata, self.path)


def _info_of(content: Any, metadata: Dict[str, str], path: Path) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    if metadata:  # a converted file: every value JSON-encoded
        for key in INFO_KEYS:
            if key in metadata:
                try:
                    found[key] = json.loads(metadata[key])
                except json.JSONDecodeError:
                    found[key] = metadata[key]
    elif isinstance(content, dict) and not _is_state_dict(content):
        cfg = content.get("config") if isinstance(content.get("config"), dict) else {}
        pre = content.get("preprocessing") if isinstance(content.get("preprocessing"), dict) else {}
        found = {"arch": content.get("arch"), "class_names": content.get("class_names"), "seed": cfg.get("seed")}
        for key in PREPROCESSING_KEYS:
            found[key] = pre.get(key, cfg.get(key))
    return _check_info({k: v for k, v in found.items() if v is not None}, path)


def open_checkpoint(path: PathLike, map_location="cpu") -> CheckpointFile:
    """Read a checkpoint file (release ``.pth``, ours, timm's or ``.safetensors``) once."""
    path = Path(path)
    _check_is_file(path)
    metadata = _safetensors_metadata(path) if path.suffix == ".safetensors" else {}
    return CheckpointFile(path, _read_file(path, map_location), metadata)


def _safetensors_metadata(path: Path) -> Dict[str, str]:
    from safetensors import safe_open

    try:  # the header only: cheap
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # noqa: BLE001 - safetensors raises several kinds for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err


def load_state_dict_file(path: PathLike, use_ema: bool = False, map_location="cpu") -> Dict[str, torch.Tensor]:
    """Read a state_dict from a release ``.pth``, a timm/our checkpoint or a ``.safetensors`` file.

    Accepts a bare state_dict, or a dict holding it under ``model`` / ``state_dict`` (with
    ``model_ema`` / ``state_dict_ema`` used when ``use_ema``), possibly with training state.
    """
    return open_checkpoint(path, map_location).state_dict(use_ema=use_ema)


def _guess_variant(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    w = state_dict.get("patch_embed.4.c.weight")
    if w is None:
        return None
    for name, args in MODEL_ARGS.items():
        if args["embed_dim"][0] == w.shape[0]:
            return name
    return None


def _short(items: List[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def _classifier_prefixes(model: nn.Module) -> Tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cls = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(cls, str):
        cls = (cls,)
    prefixes = set(c.rsplit(".", 1)[0] for c in (cls or ()))
    return tuple(sorted(prefixes | {"head", "head_dist"}))


#: Model families with a checkpoint filter: load_checkpoint fills these inside a features_only wrapper.
_FAMILIES = (LSNet, LSKNet)


def _target(model: nn.Module) -> nn.Module:
    """The LSNet (or LSKNet) inside a features_only wrapper, or the model itself."""
    inner = getattr(model, "model", None)
    return inner if not isinstance(model, _FAMILIES) and isinstance(inner, _FAMILIES) else model


def load_checkpoint(model: nn.Module, path: Union[PathLike, CheckpointFile], strict: bool = True,
                    drop_head: bool = False, use_ema: bool = False) -> Dict[str, List[str]]:
    """Load a checkpoint file into ``model`` (an LSNet or LSKNet, or its ``features_only``
    wrapper).

    Args:
        model: the model to fill.
        path: release ``.pth``, our ``.pth`` or ``.safetensors``, or a file already read by
            :func:`open_checkpoint`. For an LSKNet also the release's ImageNet backbones and
            mmrotate detectors (their backbone is kept, the rest dropped).
        strict: every key must match (names and shapes); otherwise one ``CheckpointError``
            lists the missing, unexpected and mis-shaped keys.
        drop_head: ignore the checkpoint's classifier where it does not fit (another number
            of classes, or a model without head), keeping the model's own, as timm does.
        use_ema: load the EMA weights of a training checkpoint (for an LSKNet detector, the
            averages mmcv's EMAHook stored beside the weights).

    Returns:
        dict with the ``missing``, ``unexpected`` and ``dropped`` keys (all empty when strict).
    """
    target = _target(model)
    ck = path if isinstance(path, CheckpointFile) else open_checkpoint(path)
    path = ck.path
    state_dict = ck.state_dict(use_ema=use_ema)
    if isinstance(target, LSNet):
        state_dict = checkpoint_filter_fn(state_dict, target)
    elif isinstance(target, LSKNet):
        # a file without classifier is reported as missing keys here (drop_head keeps the model's)
        state_dict = lsknet_checkpoint_filter_fn(state_dict, target, use_ema=use_ema, keep_model_head=False)
    else:
        state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    own = target.state_dict()
    dropped: List[str] = []
    if drop_head:
        heads = _classifier_prefixes(target)
        for k in list(state_dict):
            if k.split(".")[0] in heads and (k not in own or own[k].shape != state_dict[k].shape):
                dropped.append(k)
                del state_dict[k]
    heads = _classifier_prefixes(target)
    missing = [k for k in own if k not in state_dict and not (drop_head and k.split(".")[0] in heads)]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})"
                 for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if misshaped or (strict and (missing or unexpected)):
        lines = [f"Checkpoint {path} does not fit {type(target).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if misshaped:
            lines.append(f"  mis-shaped keys ({len(misshaped)}): {_short(misshaped, 6)}")
        guess = _guess_variant(state_dict)
        if guess and isinstance(target, LSNet) and tuple(MODEL_ARGS[guess]["embed_dim"]) != target.embed_dim:
            lines.append(f"  the file looks like a checkpoint of {guess}")
        elif all(m.split(".")[0] in _classifier_prefixes(target) for m in misshaped + missing + unexpected):
            lines.append("  only the classifier differs: pass drop_head=True (or build the model with the "
                         "checkpoint's num_classes)")
        raise CheckpointError("\n".join(lines))
    target.load_state_dict(state_dict, strict=False)
    return {"missing": missing, "unexpected": unexpected, "dropped": dropped}


def _temp_pattern(path: Path) -> "re.Pattern[str]":
    """Names of atomic_write's temporary files for ``path``: ``.NAME.PID.XXXXXXXX.tmp``
    (mkstemp's 8 random characters; files of older versions lack the PID)."""
    return re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # another user's process, or not checkable: keep its file
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files that a killed save of ``path`` left behind (never those of a
    save still running: their process is alive)."""
    pattern = _temp_pattern(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return
    for tmp in candidates:
        m = pattern.fullmatch(tmp.name)
        if m is None or (m.group(1) is not None and _pid_alive(int(m.group(1)))):
            continue
        try:
            tmp.unlink()
            removed.append(tmp.name)
        except OSError:
            continue
    if removed:
        logger.warning("removed %d temporary file(s) left by an interrupted save of %s: %s", len(removed), path,
                       ", ".join(sorted(removed)))


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``:
    a crash at any moment leaves either the old file or the new one, never a partial one.

    Temporary files of earlier saves of ``path`` that were killed are removed first. A
    folder that cannot be written and a full disk raise :class:`CheckpointError` naming
    ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise CheckpointError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        write(tmp)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise CheckpointError(f"cannot write {path}: {err.strerror or err}") from err
        # torch.save reports a full disk as "PytorchStreamWriter failed writing file ... unexpected pos"
        if isinstance(err, RuntimeError) and ("PytorchStreamWriter" in str(err) or "unexpected pos" in str(err)):
            raise CheckpointError(f"cannot write {path}: writing failed part-way (is the disk full?)") from err
        raise


def save_checkpoint(model_or_state: Union[nn.Module, Dict[str, torch.Tensor]], path: PathLike,
                    extra: Optional[Dict[str, Any]] = None, metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write weights to ``path`` atomically (a temporary file, then a rename).

    ``.safetensors``: the state_dict only (``metadata`` as string pairs). Other suffixes: a
    torch file ``{'model': state_dict, **extra}`` in the release's layout, readable by
    :func:`load_checkpoint` and by the release's own code.
    """
    path = Path(path)
    target = _target(model_or_state) if isinstance(model_or_state, nn.Module) else None
    state = target.state_dict() if target is not None else dict(model_or_state)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = {"format": "pt", **{str(k): str(v) for k, v in (metadata or {}).items()}}
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    else:
        payload = {"model": state, **(extra or {})}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def checkpoint_info(path: PathLike) -> Dict[str, Any]:
    """What a checkpoint says about itself (see :meth:`CheckpointFile.info`): from a training
    checkpoint of ``lsnet train`` or the metadata of a file written by :func:`convert_checkpoint`;
    an empty dict for bare weights. Reads only the header of a ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        _check_is_file(path)
        return _info_of(None, _safetensors_metadata(path), path)
    return open_checkpoint(path).info()


def convert_checkpoint(src: PathLike, dst: PathLike, use_ema: bool = False, half: bool = False) -> Dict[str, Any]:
    """Write the weights of checkpoint ``src`` alone to ``dst`` (``.safetensors``), keeping
    :func:`checkpoint_info` as metadata (no optimizer state, no pickle).

    ``half`` stores floating tensors of two or more dimensions (convolution and linear weights)
    as float16 and keeps one-dimensional ones (biases, BatchNorm statistics) in float32: some
    running means of trained models lie below float16's smallest normal number. Loading casts
    them back to the model's dtype. Returns a summary: tensors, bytes, float16 tensors and their
    largest rounding error relative to each tensor's largest magnitude.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"output must be a .safetensors file, got {dst}")
    ck = open_checkpoint(src)
    state, info = ck.state_dict(use_ema=use_ema), ck.info()
    converted, worst, halved = {}, 0.0, 0
    for key, value in state.items():
        if half and value.is_floating_point() and value.dim() >= 2:
            low = value.to(torch.float16)
            scale = value.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
            worst = max(worst, float(((low.float() - value.float()).abs().max() / scale)))
            converted[key], halved = low, halved + 1
        else:
            converted[key] = value
    meta = {k: json.dumps(v) for k, v in info.items()}
    meta["source"] = src.name
    save_checkpoint(converted, dst, metadata=meta)
    return {"path": str(dst), "tensors": len(converted), "bytes": dst.stat().st_size, "float16_tensors": halved,
            "max_rel_rounding_error": worst, **info}
