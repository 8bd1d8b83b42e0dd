"""What the sub-commands share in their arguments: comma-separated lists of numbers, the
options of :class:`lsnet.engine.RunConfig` that every task's ``train`` takes, old option
spellings kept working (:class:`DeprecatedAlias`), the preset-dependent defaults shown in
``--help`` (:func:`show_preset_defaults`) and the published weights ``--pretrained`` fetches
(:func:`fetch_pretrained`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["AMP_DTYPES", "add_amp_arguments", "amp_overrides", "add_run_arguments", "check_predict_output",
           "float_list", "int_list", "DeprecatedAlias", "note_deprecated", "warn_deprecated", "show_preset_defaults",
           "format_default", "fetch_pretrained", "pretrained_backbone"]

logger = logging.getLogger(__name__)


def _numbers(text: str, kind, name: str) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {name}, e.g. 8,11; got {text!r}") from None


def int_list(text: str) -> Tuple[int, ...]:
    """``"1,16"`` -> ``(1, 16)``."""
    return _numbers(text, int, "integers")


def float_list(text: str) -> Tuple[float, ...]:
    """``"8,11"`` -> ``(8.0, 11.0)``; fractions allowed."""
    return _numbers(text, float, "numbers")


AMP_DTYPES = ("float16", "bfloat16")


class _Amp(argparse.Action):
    """``--amp``: timm's switch (the dtype from ``--amp-dtype``). ``--amp DTYPE``: the older
    spelling of ``--amp --amp-dtype DTYPE``, still accepted."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        if values is not None:
            if values not in AMP_DTYPES:
                parser.error(f"argument --amp: expected no value (the dtype goes to --amp-dtype), got {values!r}")
            namespace.amp_dtype = values
            note_deprecated(namespace, f"--amp {values}", f"--amp --amp-dtype {values}")


def add_amp_arguments(p: argparse.ArgumentParser) -> None:
    """timm's ``--amp`` switch with ``--amp-dtype``, and ``--no-amp`` (read by :func:`amp_overrides`)."""
    p.add_argument("--amp", nargs="?", action=_Amp, dest="amp_on", metavar="DTYPE",
                   help="mixed precision (autocast) in --amp-dtype. With DTYPE: the older spelling of --amp "
                        "--amp-dtype DTYPE")
    p.add_argument("--amp-dtype", choices=AMP_DTYPES,
                   help="autocast dtype; implies --amp (default float16 as in timm; bfloat16 is the CPU's)")
    p.add_argument("--no-amp", dest="amp_on", action="store_false", default=None,
                   help="full precision (e.g. for a resumed run that used --amp)")


def _resumed_amp(path: str) -> Optional[str]:
    """The autocast dtype of the run a ``--resume`` checkpoint belongs to (None when it cannot
    tell; resuming reports a bad file itself)."""
    import torch

    try:
        config = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("config") or {}
    except Exception:
        return None
    return config.get("amp") if isinstance(config, dict) else None


def amp_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The ``amp`` configuration field the command line sets: ``{}`` when it says nothing,
    ``{"amp": None}`` for ``--no-amp`` (a resumed run that used autocast stops), else the dtype:
    ``--amp-dtype``'s, or for a bare ``--amp`` the resumed run's own, else float16 (timm's)."""
    from ..errors import ConfigError

    amp_on, dtype = getattr(args, "amp_on", None), getattr(args, "amp_dtype", None)
    if amp_on is False:
        if dtype:
            raise ConfigError("--no-amp and --amp-dtype contradict each other; give one")
        return {"amp": None}
    if amp_on or dtype:
        resumed = _resumed_amp(args.resume) if not dtype and getattr(args, "resume", None) else None
        return {"amp": dtype or resumed or "float16"}
    return {}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How a run executes (the engine's options): resume, overwrite, stop early, device, data
    workers, seed, gradient clipping, mixed precision, memory layout. Unset options keep the
    preset's value."""
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue from a last.pth, with its run's configuration and folder (options given override "
                        "them)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="start a new run in an --output folder that holds another run")
    p.add_argument("--stop-after", type=int, metavar="EPOCHS",
                   help="end this invocation after that many epochs (the schedule still spans the whole run)")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument("-j", "--workers", type=int, help="data-loading processes")
    p.add_argument("--seed", type=int, help="random seed (initialisation, sampling, augmentation)")
    p.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm")
    add_amp_arguments(p)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout")


def check_predict_output(output: str, score_threshold: Optional[float] = None) -> Path:
    """The ``--output`` folder of a predict command (not an existing file), after checking
    ``--score-threshold`` (when the command has one) lies in [0, 1]; before any work."""
    from ..errors import ConfigError

    if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file; give a folder")
    return out


# ----- old spellings --------------------------------------------------------------------------

def note_deprecated(namespace: argparse.Namespace, old: str, new: str) -> None:
    """Remember that the command line used ``old`` where ``new`` is the current spelling."""
    notes = list(getattr(namespace, "deprecated_options", None) or [])
    if (old, new) not in notes:
        notes.append((old, new))
    namespace.deprecated_options = notes


def warn_deprecated(args: argparse.Namespace) -> None:
    """One warning per old spelling the command line used (called once logging is set up)."""
    for old, new in getattr(args, "deprecated_options", None) or []:
        logger.warning(f"{old} is deprecated; use {new} (the old spelling still works)")


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option, left out of ``--help``: it stores into the current option's
    ``dest`` and notes itself, so the command warns (:func:`warn_deprecated`).

    ``add_argument("--input-size", action=DeprecatedAlias, replacement="--img-size",
    dest="img_size", type=int)``
    """

    def __init__(self, option_strings, dest, replacement: str, nargs=None, const=None, help=None, **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, const=const, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        note_deprecated(namespace, option_string, self.replacement)


# ----- defaults that depend on the preset -----------------------------------------------------

def format_default(value: Any) -> str:
    """A configuration value as a command line would give it: on/off, none, 1,2 for a tuple."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(format_default(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={v!r}" for k, v in value.items()) or "none"
    return str(value)


#: One column of :func:`show_preset_defaults`: its label, a configuration (field -> value), and
#: None for a preset, or the label of the column it varies (e.g. another model under that
#: preset): a varying column is shown for an option only where it holds a different value.
Column = Tuple[str, Mapping[str, Any], Optional[str]]


def show_preset_defaults(parser: argparse.ArgumentParser, columns: Sequence[Column], skip: Sequence[str] = (),
                         fields: Optional[Mapping[str, str]] = None,
                         none: Optional[Mapping[str, str]] = None) -> None:
    """Append to the help of each option of ``parser`` that sets a configuration field its
    default as the presets resolve it: ``(default: 0.1)`` when they agree, else
    ``(default: 15 for small; 300 for imagenet)``.

    ``columns`` come from the configuration classes (resolved per preset), so the help follows
    them. ``skip`` lists fields left alone; ``fields`` maps an option's ``dest`` to its field
    where they differ; ``none`` says what None means for a field where "none" would mislead
    (e.g. ``{"workers": "auto"}``). Fields that are None in every preset are left alone unless
    ``none`` names them.
    """
    fields, none = dict(fields or {}), dict(none or {})
    by_label = {label: values for label, values, _ in columns}
    presets = [values for _, values, base in columns if base is None]
    for action in parser._actions:
        field = fields.get(action.dest, action.dest)
        if (not action.option_strings or action.help == argparse.SUPPRESS or field in skip
                or action.const is False  # a --no-X beside --X, which shows the default
                or any(field not in values for values in presets)
                or (field not in none and all(v[field] is None for v in presets))):
            continue
        groups: Dict[str, List[str]] = {}
        for label, values, base in columns:
            if base is not None and (field not in values or values[field] == by_label[base][field]):
                continue
            value = values[field]
            text = none.get(field, "none") if value is None else format_default(value)
            groups.setdefault(text, []).append(label)
        if len(groups) == 1:
            shown = f"default: {next(iter(groups))}"
        else:
            shown = "default: " + "; ".join(f"{text} for {', '.join(labels)}" for text, labels in groups.items())
        shown = shown.replace("%", "%%")  # argparse formats help strings with %
        action.help = f"{action.help} ({shown})" if action.help else f"({shown})"


# ----- published weights ----------------------------------------------------------------------

def pretrained_backbone(over: Dict[str, Any], default_backbone: str) -> None:
    """``--pretrained`` of the detection commands: the backbone's published weights become
    ``backbone_checkpoint`` in the overrides ``over``; refused beside ``--resume`` or an explicit file."""
    from ..errors import ConfigError

    if over.get("resume"):
        raise ConfigError("--pretrained starts a new run; --resume continues from its checkpoint's weights")
    if over.get("backbone_checkpoint"):
        raise ConfigError("--pretrained and --backbone-checkpoint both give the backbone's weights; use one")
    over["backbone_checkpoint"] = fetch_pretrained(over.get("backbone") or default_backbone)


class _Unreachable(ConnectionError):
    """The hub cannot be asked (offline): its message goes into the user's error."""


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url``'s host accepts a TCP connection within ``timeout`` seconds (assumed so
    behind a proxy, which a direct connection cannot tell)."""
    import os
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return True
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch_pretrained(model: str, option: str = "--pretrained") -> str:
    """The local file of the weights timm publishes for ``model`` (what ``pretrained=True``
    loads), downloaded into the Hugging Face or torch hub cache on first use.

    Weights fetched before come from the cache without a network call; offline (the hub's host
    refuses a connection within 3 s) the error comes at once. Raises
    :class:`lsnet.errors.ConfigError` for a model without published weights, or when they cannot
    be fetched, naming ``--initial-checkpoint`` for a downloaded file.
    """
    import timm
    from timm.models import get_pretrained_cfg

    import lsnet  # noqa: F401 - registers the project's models

    from ..errors import ConfigError

    if model not in timm.list_models():
        raise ConfigError(f"unknown model {model!r} (not a timm model name)")
    cfg = get_pretrained_cfg(model)
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else dict(vars(cfg) if cfg else {})
    hub_id, url, file = cfg.get("hf_hub_id"), cfg.get("url"), cfg.get("file")
    if file:
        return str(file)
    if not hub_id and not url:
        raise ConfigError(f"{option}: {model} has no published weights timm can fetch; start from a file with "
                          f"--initial-checkpoint FILE")
    where = f"the Hugging Face hub ({hub_id})" if hub_id else url
    try:
        if hub_id:
            from huggingface_hub import constants, hf_hub_download

            names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors",
                                                                                 "pytorch_model.bin"]
            for name in names:  # fetched before: from the cache, without asking the hub
                try:
                    return str(hf_hub_download(hub_id, name, local_files_only=True))
                except Exception:
                    pass
            if constants.HF_HUB_OFFLINE:
                raise _Unreachable("HF_HUB_OFFLINE is set and they are not in the cache")
            if not _reachable(constants.ENDPOINT):  # offline: say so now, not after the hub's retries
                raise _Unreachable(f"cannot reach {constants.ENDPOINT}")
            for name in names:
                try:
                    return str(hf_hub_download(hub_id, name))
                except Exception as err:  # the hub has no such file: try the next name (timm's order)
                    missing = type(err).__name__.endswith("EntryNotFoundError") and "Local" not in type(err).__name__
                    if name == names[-1] or not missing:
                        raise
        from timm.models._hub import download_cached_file

        return str(download_cached_file(url, check_hash=False, progress=False))
    except Exception as err:  # offline, refused, missing: every one gets the same advice
        from ..models.lsnet import RELEASE_FILES

        release = (f" (the authors' release: https://huggingface.co/jameslahm/lsnet/blob/main/{RELEASE_FILES[model]})"
                   if model in RELEASE_FILES else "")
        reason = str(err) if isinstance(err, _Unreachable) else type(err).__name__
        raise ConfigError(f"{option}: could not fetch the published weights of {model} from {where} "
                          f"({reason}); download them{release} and give the file with "
                          f"--initial-checkpoint FILE") from None
