"""The LSNet paper's ablations (Tables 5, 7, 8 and 9) as tools (``lsnet ablate``).

* :func:`cost_table`: parameters and multiply-accumulates of each variant at 224 x 224 beside
  the paper's "FLOPs" column. The paper's FLOPs are multiply-accumulates (LSNet-T: 0.31 G
  in the paper, 0.316 G MACs counted here), so they are compared with MACs: FLOPs / 2 of
  ``torch.utils.flop_counter`` plus SKA's K*K per output element, which the counter does
  not see (:func:`lsnet.deploy.profile.count_macs`).
* :func:`train_variants`: trains a chosen set of variants one after the other with
  ``lsnet train``'s entry point (:func:`lsnet.classify.train`) and tabulates their accuracy.

Whether a count "matches": within 0.01 G of the paper's figure, which Tables 5, 7 and 8 give
to two decimals; Table 9 gives one decimal, so there the tolerance is 0.05 G (half its last
digit). Every LSNet-T variant matches; in Table 9 ResNet-50 + LS conv counts 2.56 G (paper
2.6) and DeiT-T + LS conv 0.85 G (paper 0.9), both within 0.05 G, but each depends on a
choice the paper does not state (how a stride-2 3x3 convolution becomes an LS convolution,
and what replaces DeiT's class token; see :mod:`lsnet.models.ablations`). Note that the
paper rounds inconsistently: K_S = 5 counts 0.333 G (paper 0.34) and C/G = 4 0.325 G
(paper 0.33) while LSNet-T itself counts 0.316 G (paper 0.31).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError

__all__ = [
    "VARIANT_GROUPS",
    "CostRow",
    "cost_table",
    "format_accuracy_table",
    "format_cost_table",
    "resolve_variants",
    "train_variants",
    "variant_model",
]

logger = logging.getLogger(__name__)


def _lsnet_keys() -> List[str]:
    from ..models.ablations import LSNET_VARIANTS

    return list(LSNET_VARIANTS)


def _table9() -> Dict[str, Tuple[str, float, float]]:
    from ..models.ablations import TABLE9_MODELS

    return TABLE9_MODELS


#: Names that stand for several variants in ``--variants``.
VARIANT_GROUPS: Dict[str, List[str]] = {
    "table5": ["base", "no_lsconv"],
    "table7": ["base", "no_lkp", "kl3", "kl5", "kl9", "no_ska", "ks1", "ks5"],
    "table8": ["base", "cg1", "cg4", "cg16", "cg32", "no_dw", "no_se"],
    "table9": ["resnet50", "resnet50_lsconv", "deit_tiny_patch16_224", "deit_tiny_lsconv"],
}
VARIANT_GROUPS["lsnet"] = list(dict.fromkeys(VARIANT_GROUPS["table7"] + VARIANT_GROUPS["table8"]
                                             + VARIANT_GROUPS["table5"]))
VARIANT_GROUPS["all"] = VARIANT_GROUPS["lsnet"] + VARIANT_GROUPS["table9"]


def resolve_variants(spec: Optional[Sequence[str] | str]) -> List[str]:
    """``'base,kl3,table9'`` (or a list) -> variant keys in order, groups expanded, duplicates
    dropped; ``None`` -> all. A key is an LSNet-T ablation (``kl3``, ``no_ska``, ...), a group
    (``table7``, ...) or any timm model name. Raises :class:`ConfigError` for an unknown one."""
    import timm

    import lsnet  # noqa: F401  registers the ablation models

    if spec is None:
        return list(VARIANT_GROUPS["all"])
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    keys: List[str] = []
    known = set(_lsnet_keys())
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item in VARIANT_GROUPS:
            keys.extend(VARIANT_GROUPS[item])
        elif item in known or item in timm.list_models():
            keys.append(item)
        else:
            raise ConfigError(f"unknown variant {item!r}: choose from {', '.join(_lsnet_keys())}, the groups "
                              f"{', '.join(VARIANT_GROUPS)}, or a timm model name")
    if not keys:
        raise ConfigError("--variants names no variant")
    return list(dict.fromkeys(keys))


def variant_model(key: str, base: str = "lsnet_t") -> Tuple[str, Dict[str, Any]]:
    """The timm name and extra ``create_model`` arguments of a variant on ``base``.

    LSNet-T's ablations use their registered names (``lsnet_t_kl3``: checkpoints then name
    their architecture); on another base (any LSNet, e.g. ``lsnet_s``) the base name with the
    variant's arguments. Any other key is a timm model name, built as it is.
    """
    from ..models.ablations import LSNET_VARIANTS

    if key not in LSNET_VARIANTS:
        return key, {}
    if key == "base":
        return base, {}
    if base == "lsnet_t":
        return f"lsnet_t_{key}", {}
    return base, dict(LSNET_VARIANTS[key].kwargs)


@dataclass
class CostRow:
    """Size and cost of one variant beside the paper's figure."""

    key: str
    label: str
    table: str
    model: str
    model_kwargs: Dict[str, Any]
    params: int
    gmacs: float
    ska_gmacs: float
    paper_gflops: Optional[float]
    tolerance: float
    paper_top1: Optional[float] = None
    seconds: float = 0.0

    @property
    def difference(self) -> Optional[float]:
        return None if self.paper_gflops is None else self.gmacs - self.paper_gflops

    @property
    def matches(self) -> Optional[bool]:
        d = self.difference
        return None if d is None else abs(d) <= self.tolerance + 1e-9

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "difference": self.difference, "matches": self.matches}


def _describe(key: str) -> Tuple[str, str, Optional[float], float, Optional[float]]:
    """(label, table, paper GFLOPs, tolerance, paper top-1) of a variant key."""
    from ..models.ablations import LSNET_VARIANTS

    if key in LSNET_VARIANTS:
        v = LSNET_VARIANTS[key]
        return v.label, v.table, v.paper_gflops, 0.01, v.paper_top1
    if key in _table9():
        label, gflops, top1 = _table9()[key]
        return label, "9", gflops, 0.05, top1
    return key, "-", None, 0.01, None


def cost_table(keys: Optional[Sequence[str]] = None, img_size: int = 224, base: str = "lsnet_t",
               progress: bool = False) -> List[CostRow]:
    """Parameters and MACs of each variant (all by default) at ``img_size``, 1000 classes."""
    import timm

    from ..deploy.profile import count_macs

    rows = []
    keys = resolve_variants(keys)
    for key in keys:
        name, kwargs = variant_model(key, base)
        label, table, paper, tol, top1 = _describe(key)
        if base != "lsnet_t" and key in _lsnet_keys():
            paper = top1 = None  # the paper's figures are LSNet-T's
        t0 = time.perf_counter()
        model = timm.create_model(name, **kwargs)
        if getattr(model, "pretrained_cfg", {}).get("fixed_input_size") and img_size != 224:
            model = timm.create_model(name, img_size=img_size, **kwargs)
        params = sum(p.numel() for p in model.parameters())
        macs, ska = count_macs(model, img_size)
        rows.append(CostRow(key, label, table, name, kwargs, params, macs / 1e9, ska / 1e9,
                            paper if img_size == 224 else None, tol, top1, time.perf_counter() - t0))
        if progress:
            logger.info(f"{key}: {params / 1e6:.2f} M parameters, {macs / 1e9:.3f} GMACs")
    return rows


def _cell(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_cost_table(rows: Sequence[CostRow], img_size: int = 224) -> str:
    """Markdown table of :func:`cost_table`'s rows."""
    lines = [f"| variant | table | model | params (M) | GMACs at {img_size} | paper GFLOPs | difference | "
             f"match | paper top-1 (%) |",
             "|---|---|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        match = "-" if r.matches is None else ("yes" if r.matches else "no")
        tol = "" if r.matches is None else f" (±{r.tolerance:g})"
        paper = _cell(r.paper_gflops, ".2f" if r.tolerance < 0.05 else ".1f")  # as the paper prints it
        lines.append(f"| {r.label} | {r.table} | {r.model} | {r.params / 1e6:.2f} | {r.gmacs:.3f} | {paper} | "
                     f"{_cell(r.difference, '+.3f')} | {match}{tol} | {_cell(r.paper_top1, '.1f')} |")
    return "\n".join(lines)


# ----- training ------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """One trained variant."""

    key: str
    label: str
    model: str
    model_kwargs: Dict[str, Any]
    output: str
    params: int = 0
    gmacs: float = 0.0  # at the training resolution, with the trained classifier
    img_size: int = 0
    epochs: int = 0
    best_top1: Optional[float] = None
    best_epoch: Optional[int] = None
    last_top1: Optional[float] = None
    seconds: float = 0.0
    interrupted: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)


def _fixed_input_size(name: str) -> bool:
    from timm.models import get_pretrained_cfg_value

    try:
        return bool(get_pretrained_cfg_value(name, "fixed_input_size"))
    except RuntimeError:
        return False


def _last_top1(out: Path) -> Optional[float]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return None
    last = None
    for line in path.read_text().splitlines():
        try:
            last = json.loads(line)
        except json.JSONDecodeError:
            continue
    return None if not last or "val_top1" not in last else float(last["val_top1"])


def train_variants(keys: Sequence[str], overrides: Dict[str, Any], output: str | Path,
                   base: str = "lsnet_t") -> List[TrainResult]:
    """Train each variant with ``lsnet train``'s entry point, in ``output/<key>``, and write
    ``output/ablation.md`` and ``output/ablation.json`` (after each variant, so a stopped run
    keeps what it finished).

    ``overrides`` are ``lsnet train``'s options as the user set them (``epochs``, ``data``,
    ...); ``model_kwargs`` among them apply to every variant, under the variant's own.
    Models with a fixed input size (ViTs) are built at the run's ``img_size``.
    """
    from ..classify import resolve_config, train
    from ..deploy.profile import count_macs
    from ..engine.inference import load_for_inference

    out = Path(output)
    results: List[TrainResult] = []
    keys = resolve_variants(keys)
    for i, key in enumerate(keys):
        name, kwargs = variant_model(key, base)
        kwargs = {**dict(overrides.get("model_kwargs") or {}), **kwargs}
        values = {**overrides, "model": name, "model_kwargs": kwargs, "output": str(out / key)}
        cfg = resolve_config(values)
        if _fixed_input_size(name) and "img_size" not in kwargs:
            cfg = resolve_config({**values, "model_kwargs": {**kwargs, "img_size": cfg.img_size}})
        logger.info(f"ablation {i + 1}/{len(keys)}: {key} ({name}"
                    + (f" {' '.join(f'{k}={v!r}' for k, v in cfg.model_kwargs.items())}" if cfg.model_kwargs else "")
                    + f") -> {cfg.output}")
        t0 = time.perf_counter()
        summary = train(cfg)
        result = TrainResult(key, _describe(key)[0], name, dict(cfg.model_kwargs), cfg.output, img_size=cfg.img_size,
                             epochs=int(summary.get("epochs", 0)), seconds=time.perf_counter() - t0,
                             interrupted=bool(summary.get("interrupted")))
        best = summary.get("best") or {}
        if best.get("epoch", -1) >= 0 and isinstance(best.get("top1"), (int, float)) and math.isfinite(best["top1"]):
            result.best_top1, result.best_epoch = float(best["top1"]), int(best["epoch"]) + 1
        result.last_top1 = _last_top1(Path(cfg.output))
        if Path(summary["best_path"]).is_file():  # the checkpoint rebuilds its model: measure that one
            im = load_for_inference(summary["best_path"])
            result.params = sum(p.numel() for p in im.model.parameters())
            result.gmacs = count_macs(im.model, cfg.img_size)[0] / 1e9
        results.append(result)
        write_results(results, out)
        if result.interrupted:
            logger.warning(f"interrupted during {key}: the table holds the variants finished so far")
            break
    return results


def write_results(results: Sequence[TrainResult], output: str | Path) -> Tuple[Path, Path]:
    """Write ``ablation.md`` and ``ablation.json`` into ``output``; returns their paths."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "ablation.md", out / "ablation.json"
    md.write_text(format_accuracy_table(results) + "\n")
    js.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return md, js


def format_accuracy_table(results: Sequence[TrainResult]) -> str:
    """Markdown table of trained variants."""
    lines = ["| variant | model | params (M) | GMACs | img size | epochs | best top-1 (%) | best epoch | "
             "last top-1 (%) | time (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        model = r.model + (" " + " ".join(f"{k}={v!r}" for k, v in r.model_kwargs.items()) if r.model_kwargs else "")
        lines.append(f"| {r.label} | {model} | {r.params / 1e6:.2f} | {r.gmacs:.3f} | {r.img_size} | {r.epochs} | "
                     f"{_cell(r.best_top1, '.2f')} | {r.best_epoch or '-'} | {_cell(r.last_top1, '.2f')} | "
                     f"{r.seconds:.0f}{' (interrupted)' if r.interrupted else ''} |")
    return "\n".join(lines)
