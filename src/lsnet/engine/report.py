"""What a training run shows and leaves behind: progress bars, ``metrics.jsonl``, ``curves.png``
(and TensorBoard scalars when it is installed and asked for)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

__all__ = ["MetricsLog", "progress_bar", "plot_curves", "read_metrics", "metric_label", "curves_figure"]


class _NoBar:
    def update(self, n=1, **postfix):
        pass

    def close(self):
        pass


class _Bar:
    """tqdm with a postfix, writing to stderr."""

    def __init__(self, total: int, desc: str):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                         mininterval=0.5, disable=None)

    def update(self, n=1, **postfix):
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(n)

    def close(self):
        self._bar.close()


class _Lines:
    """Where no terminal shows a bar (a log file, a batch job): a line through ``logging``
    every ``interval`` seconds, so that a long epoch is never silent."""

    def __init__(self, total: int, desc: str, interval: float):
        self.total, self.desc, self.interval = total, desc, interval
        self.done, self.postfix = 0, {}
        self.start = self.last = time.monotonic()

    def update(self, n=1, **postfix):
        self.done += n
        self.postfix.update(postfix)
        now = time.monotonic()
        if now - self.last >= self.interval and self.done < self.total:
            self.last = now
            extra = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
            logging.getLogger("lsnet.progress").info(
                f"{self.desc}: {self.done}/{self.total} steps ({now - self.start:.0f}s)  {extra}".rstrip())

    def close(self):
        pass


def progress_bar(total: int, desc: str, enabled: bool = True, interval: float = 30.0):
    """Progress over ``total`` steps: a tqdm bar on a terminal, a logged line every
    ``interval`` seconds otherwise, nothing on non-main processes."""
    if not enabled:
        return _NoBar()
    return _Bar(total, desc) if sys.stderr.isatty() else _Lines(total, desc, interval)


def read_metrics(path) -> List[Dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, epochs counted from 1 (as the console's
    ``epoch 1/15``; logs written before that counted from 0 and are renumbered)."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if any(r.get("epoch") == 0 for r in records):  # an evaluation follows a finished epoch: 0 is the old count
        records = [{**r, "epoch": r["epoch"] + 1} if isinstance(r.get("epoch"), int) else r for r in records]
    return records


_METRIC_NAMES = {"top1": "top-1 (%)", "top5": "top-5 (%)", "loss": "loss", "mIoU": "mIoU",
                 "pixel_acc": "pixel accuracy", "bbox_AP": "box AP", "bbox_AP50": "box AP50", "segm_AP": "mask AP",
                 "segm_AP50": "mask AP50", "mAP50": "mAP50"}
_PREFIXES = (("val_", "validation"), ("ema_", "EMA validation"), ("train_", "training"))


def metric_label(key: str) -> str:
    """A readable name for a ``metrics.jsonl`` key: ``val_top1`` -> ``validation top-1 (%)``,
    ``ema_loss`` -> ``EMA validation loss``, ``train_loss`` -> ``training loss``."""
    for prefix, words in _PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            return f"{words} {_METRIC_NAMES.get(rest, rest.replace('_', ' '))}"
    return _METRIC_NAMES.get(key, key.replace("_", " "))


def _series(ax, records: List[Dict[str, Any]], x_key: str, key: str) -> bool:
    """Plot ``key`` against ``x_key`` over the records that hold it; False when none does."""
    points = [(r[x_key], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if not points:
        return False
    ax.plot([x for x, _ in points], [y for _, y in points], marker="o", ms=3, label=metric_label(key))
    return True


def curves_figure(records: List[Dict[str, Any]], metric_keys=("val_top1", "ema_top1"),
                  metric_title: str = "validation top-1 (%)", x_key: str = "epoch"):
    """The figure of ``curves.png``: three panels against ``x_key`` (epoch, counted from 1, or
    iteration for iteration-based schedules): the training loss, with the validation loss
    beside it when the evaluation measures one (``val_loss``, ``ema_loss``), the validation
    metrics (the ``metric_keys`` present) and the learning rate; legends name the series in
    words (:func:`metric_label`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for key in ("train_loss", "val_loss", "ema_loss"):
        _series(axes[0], records, x_key, key)
    axes[0].set_title("loss")
    axes[0].legend()
    if any([_series(axes[1], records, x_key, key) for key in metric_keys]):
        axes[1].legend()
    axes[1].set_title(metric_title)
    _series(axes[2], records, x_key, "lr")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel(x_key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(records: List[Dict[str, Any]], path, metric_keys=("val_top1", "ema_top1"),
                metric_title: str = "validation top-1 (%)", x_key: str = "epoch") -> None:
    """Write :func:`curves_figure` to ``path`` (PNG, atomically)."""
    import matplotlib.pyplot as plt

    fig = curves_figure(records, metric_keys, metric_title, x_key)
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


class MetricsLog:
    """Appends one JSON object per epoch to ``metrics.jsonl`` and redraws ``curves.png``."""

    def __init__(self, out: Path, enabled: bool = True, tensorboard: bool = False, x_key: str = "epoch",
                 metric_keys=("val_top1", "ema_top1"), metric_title: str = "validation top-1 (%)"):
        self.out, self.enabled = Path(out), enabled
        self.x_key, self.metric_keys, self.metric_title = x_key, tuple(metric_keys), metric_title
        self.records: List[Dict[str, Any]] = []
        self._tb = None
        if enabled and (self.out / "metrics.jsonl").exists():
            self.records = read_metrics(self.out / "metrics.jsonl")  # a resumed run continues its log
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                logging.getLogger(__name__).warning("--tensorboard needs the tensorboard package; skipping it")

    def append(self, record: Dict[str, Any]) -> None:
        """Log the record of one finished epoch."""
        if not self.enabled:
            return
        # a resumed run may repeat epochs after the last checkpoint: keep the newest
        x = self.x_key
        self.records = [r for r in self.records if r[x] < record[x]] + [record]
        (self.out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.records))
        plot_curves(self.records, self.out / "curves.png", self.metric_keys, self.metric_title, x)
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._tb.add_scalar(key, value, record[x])

    def close(self) -> None:
        """Flush TensorBoard."""
        if self._tb is not None:
            self._tb.close()
