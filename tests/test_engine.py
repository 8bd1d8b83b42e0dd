"""The shared training engine on a small task of its own (a linear classifier of random
points), and the run-folder rules every task inherits through it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lsnet.cli.main import main
from lsnet.engine import RunConfig, Task, TrainingError, UpdateSchedule, fit, train_loader
from lsnet.engine.loop import check_output_dir, resume_overrides
from lsnet.engine.report import curves_figure, metric_label, read_metrics
from lsnet.errors import UserError


@dataclass
class PointsConfig(RunConfig):
    epochs: int = 4
    lr: float = 0.1
    batch_size: int = 16
    workers: int = 0
    poison_after: int = -1  # updates after which the loss becomes NaN (-1: never)


class Points(torch.utils.data.Dataset):
    def __init__(self, n=96, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, 0] + 0.5 * self.x[:, 1] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class PointsTask(Task):
    kind = "points"
    best_key = "accuracy"

    def setup(self, run):
        self.train_dataset, self.val = Points(), Points(48, seed=1)
        self.class_names = ["no", "yes"]
        self.updates = 0

    def build_model(self, run):
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))

    def build_loader(self, run):
        return train_loader(self.train_dataset, self.cfg.batch_size, self.cfg, run.info)

    def build_optimizer(self, run, model):
        return torch.optim.SGD(model.parameters(), lr=self.cfg.lr, momentum=0.9)

    def build_scheduler(self, run, optimizer, updates_per_epoch):
        total = self.cfg.epochs * updates_per_epoch
        return UpdateSchedule(optimizer, lambda it: 1 - it / total)

    def schedule(self, updates_per_epoch):
        return self.cfg.epochs, None

    def loss(self, run, model, batch):
        x, y = batch
        self.updates += 1
        loss = F.cross_entropy(model(x), y)
        if 0 <= self.cfg.poison_after < self.updates:
            loss = loss * float("nan")
        return loss, len(x)

    def evaluate(self, run, model):
        model.eval()
        with torch.no_grad():
            acc = (model(self.val.x).argmax(1) == self.val.y).float().mean().item()
        return {"accuracy": acc}


def _cfg(tmp_path, **kw):
    return PointsConfig(output=str(tmp_path / "run"), **kw)


class _Messages(logging.Handler):
    """The messages of one logger at INFO and above, whatever the command line configured."""

    def __init__(self, name):
        super().__init__(logging.INFO)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


def test_fit_trains_writes_the_run_and_keeps_the_best(tmp_path):
    with _Messages("lsnet.engine.loop") as log:
        res = fit(PointsTask(_cfg(tmp_path)))
    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # metrics.jsonl counts epochs as the console does: "epoch 1/4" is the record with epoch 1
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and records[-1]["iteration"] == 4 * 6
    printed = [m.split(":")[0] for m in log.messages if m.startswith("epoch ")]
    assert printed == [f"epoch {e}/4" for e in (1, 2, 3, 4)]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert res["best_value"] == max(r["val_accuracy"] for r in records) and res["best_value"] > 0.8
    best = torch.load(out / "best.pth", weights_only=True)
    assert best["best"]["accuracy"] == res["best_value"] and best["task"] == "points"
    assert json.loads((out / "config.json").read_text())["task"] == "points"
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


class SparseEvalTask(PointsTask):
    def eval_every(self, updates_per_epoch):
        return 3


def test_epochs_without_evaluation_print_their_own_line(tmp_path):
    """Evaluating every third epoch: metrics.jsonl holds the evaluations (3 and the last, 4), and
    the console still shows every epoch, saying when the next evaluation comes."""
    with _Messages("lsnet.engine.loop") as log:
        fit(SparseEvalTask(_cfg(tmp_path)))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [3, 4]
    lines = [m for m in log.messages if m.startswith("epoch ")]
    assert [m.split(":")[0] for m in lines] == [f"epoch {e}/4" for e in (1, 2, 3, 4)]
    assert lines[0].endswith("(next evaluation after epoch 3)") and "loss " in lines[0]
    assert "val accuracy" in lines[2] and "next evaluation" not in lines[2]


def test_resume_equals_a_straight_run(tmp_path):
    fit(PointsTask(_cfg(tmp_path / "a")))
    fit(PointsTask(_cfg(tmp_path / "b", stop_after=2)))
    assert torch.load(tmp_path / "b" / "run" / "last.pth", weights_only=True)["epoch"] == 1
    fit(PointsTask(_cfg(tmp_path / "b", resume=str(tmp_path / "b" / "run" / "last.pth"))))
    a, b = (torch.load(p / "run" / "last.pth", weights_only=True) for p in (tmp_path / "a", tmp_path / "b"))
    assert a["num_updates"] == b["num_updates"] == 24
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, msg=k)
    assert [r["epoch"] for r in read_metrics(tmp_path / "b" / "run" / "metrics.jsonl")] == [1, 2, 3, 4]


def test_resume_renumbers_a_log_that_counted_epochs_from_0(tmp_path):
    """A run started before epochs were counted from 1 and resumed now: one numbering in its log."""
    fit(PointsTask(_cfg(tmp_path, stop_after=2)))
    log = tmp_path / "run" / "metrics.jsonl"
    old = [{**r, "epoch": r["epoch"] - 1} for r in read_metrics(log)]
    log.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert [r["epoch"] for r in old] == [0, 1]
    fit(PointsTask(_cfg(tmp_path, resume=str(tmp_path / "run" / "last.pth"))))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert [r["iteration"] for r in records] == [6, 12, 18, 24]


def test_curves_name_their_series_and_show_the_validation_loss():
    import matplotlib.pyplot as plt

    records = [{"epoch": e, "iteration": 10 * e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "ema_loss": 2.1 / e,
                "lr": 1e-3, "val_top1": 10.0 * e, "ema_top1": 9.0 * e} for e in (1, 2, 3)]
    fig = curves_figure(records)
    loss, metric, lr = fig.axes
    labels = lambda ax: [t.get_text() for t in ax.get_legend().get_texts()]  # noqa: E731
    assert labels(loss) == ["training loss", "validation loss", "EMA validation loss"]
    assert labels(metric) == ["validation top-1 (%)", "EMA validation top-1 (%)"]
    assert list(loss.lines[1].get_xdata()) == [1, 2, 3] and list(loss.lines[1].get_ydata()) == [2.2, 1.1, 2.2 / 3]
    assert lr.get_xlabel() == "epoch"
    # without a validation loss (a dense task), only the training loss; its own metric names
    fig = curves_figure([{k: v for k, v in r.items() if not k.endswith("loss") or k == "train_loss"}
                         | {"val_bbox_AP50": 0.5} for r in records], metric_keys=("val_bbox_AP50",),
                        metric_title="validation bbox_AP50", x_key="iteration")
    assert labels(fig.axes[0]) == ["training loss"] and labels(fig.axes[1]) == ["validation box AP50"]
    assert list(fig.axes[0].lines[0].get_xdata()) == [10, 20, 30]
    assert metric_label("val_mIoU") == "validation mIoU"
    assert metric_label("val_pixel_acc") == "validation pixel accuracy"
    plt.close("all")


def test_resume_continues_the_run_with_its_configuration_and_folder(tmp_path):
    fit(PointsTask(_cfg(tmp_path, epochs=7, lr=0.05, stop_after=1)))
    last = str(tmp_path / "run" / "last.pth")
    values = resume_overrides({"resume": last}, "points")
    assert (values["epochs"], values["lr"], values["output"]) == (7, 0.05, str(tmp_path / "run"))
    assert "stop_after" not in values  # it ended the invocation that wrote the checkpoint, not the run
    values = resume_overrides({"resume": last, "epochs": 9}, "points")
    assert values["epochs"] == 9  # an option given on resume wins
    with pytest.raises(TrainingError, match="points checkpoint, not a classify"):
        resume_overrides({"resume": last}, "classify")


def test_a_folder_holding_another_run_is_refused_unless_overwrite(tmp_path):
    fit(PointsTask(_cfg(tmp_path, epochs=1)))
    before = (tmp_path / "run" / "last.pth").read_bytes()
    with pytest.raises(TrainingError, match="holds another run"):
        fit(PointsTask(_cfg(tmp_path, epochs=2)))
    assert (tmp_path / "run" / "last.pth").read_bytes() == before
    res = fit(PointsTask(_cfg(tmp_path, epochs=2, overwrite=True)))
    assert res["epochs"] == 2
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2  # the old run's log was not continued


def test_output_that_is_a_file_or_unwritable_stops_before_anything(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(TrainingError, match="is a file"):
        check_output_dir(a_file, None, False)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # running as root: permissions do not bind
            pytest.skip("permissions are not enforced for this user")
        with pytest.raises(TrainingError, match="not writable"):
            check_output_dir(locked / "run", None, False)
    finally:
        locked.chmod(0o700)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match="loss became nan at epoch 2, step 3"):
        fit(PointsTask(_cfg(tmp_path, poison_after=8)))
    ck = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert ck["epoch"] == 0 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_a_full_disk_is_reported_in_one_line(tmp_path, monkeypatch):
    import lsnet.engine.loop as loop

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(loop.torch, "save", full)
    with pytest.raises(TrainingError, match="could not write .*last.pth.*disk full"):
        fit(PointsTask(_cfg(tmp_path, epochs=1)))
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    assert main(["train", "--model", "lsnet_t", "--data", str(tmp_path / "nowhere"), "--output",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # a run that stops on bad data leaves no folder

    import lsnet.classify.task as task

    def broken(cfg, num_classes):
        raise KeyError("a bug inside the model")

    monkeypatch.setattr(task, "build_model", broken)
    with pytest.raises(KeyError, match="a bug inside the model"):
        main(["train", "--model", "lsnet_t", "--epochs", "1", "--output", str(tmp_path / "p")])
    assert issubclass(TrainingError, UserError)


def test_logging_levels_from_the_command_line(tmp_path, capsys):
    import logging

    main(["-q", "info", "--models", "lsnet_t"])
    assert logging.getLogger("lsnet").level == logging.WARNING
    main(["-v", "info", "--models", "lsnet_t"])
    assert logging.getLogger("lsnet").level == logging.DEBUG
    main(["info", "--models", "lsnet_t"])
    assert logging.getLogger("lsnet").level == logging.INFO


def test_progress_without_a_terminal_is_logged_periodically(caplog, monkeypatch):
    import logging

    import lsnet.engine.report as report

    monkeypatch.setattr(logging.getLogger("lsnet"), "propagate", True)  # the CLI's handler may have stopped it

    clock = iter(range(0, 1000, 20))  # 20 s between calls
    monkeypatch.setattr(report.time, "monotonic", lambda: next(clock))
    bar = report.progress_bar(10, "epoch 1/3", interval=30)  # pytest's stderr is no terminal
    with caplog.at_level("INFO", logger="lsnet.progress"):
        for _ in range(10):
            bar.update(1, loss="0.5000")
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(m.startswith("epoch 1/3: ") and "loss 0.5000" in m for m in lines)
    assert len(lines) == 4 and "10/10" not in lines[-1]  # every 40 s of 200 s, not the finished epoch



def test_default_workers_scale_with_the_device_and_the_cores():
    from lsnet.engine.distributed import DistInfo
    from lsnet.engine.loop import default_workers

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert default_workers(cuda, DistInfo(), cores=16) == 15  # one core left for the training loop
    assert default_workers(cuda, DistInfo(), cores=64) == 16
    assert default_workers(cuda, DistInfo(0, 8, 0, 8), cores=16) == 1  # 8 processes share the host
    assert default_workers(cpu, DistInfo(), cores=2) == 0  # small hosts load in the main process
    assert default_workers(cpu, DistInfo(), cores=32) == 8


def test_a_run_without_workers_records_the_resolved_number(tmp_path):
    cfg = _cfg(tmp_path, epochs=1)
    cfg.workers = None
    fit(PointsTask(cfg))
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["workers"]
    from lsnet.engine.distributed import DistInfo
    from lsnet.engine.loop import default_workers
    assert recorded == default_workers(torch.device("cpu"), DistInfo())


class SlowPoints(Points):
    """A dataset whose items take long to load: the loader, not the model, sets the pace."""

    def __getitem__(self, i):
        import time

        time.sleep(0.004)
        return super().__getitem__(i)


def test_an_input_bound_run_is_told_so_once(tmp_path):
    class SlowTask(PointsTask):
        def setup(self, run):
            super().setup(run)
            self.train_dataset = SlowPoints(160)

    with _Messages("lsnet.engine.loop") as log:
        fit(SlowTask(_cfg(tmp_path, epochs=2, batch_size=8)))
    warnings = [m for m in log.messages if "input pipeline is the bottleneck" in m]
    assert len(warnings) == 1, log.messages
    assert "raise --workers (now 0" in warnings[0]
    # a model-bound run (data in memory) is not warned
    with _Messages("lsnet.engine.loop") as log:
        fit(PointsTask(_cfg(tmp_path / "fast", epochs=2, batch_size=8)))
    assert not any("input pipeline" in m for m in log.messages)


def test_input_monitor_rates():
    from lsnet.engine.loop import InputMonitor

    monitor = InputMonitor(workers=2, cores=8, skip=1, min_steps=2)
    for _ in range(5):
        monitor.record(wait=0.3, busy=0.1, images=10)  # the first is skipped
    assert monitor.wait_fraction == pytest.approx(0.75)
    message = monitor.end_epoch()
    assert "75% of the epoch" in message and "could take 100 img/s" in message and "delivered 25 img/s" in message
    assert "now 2; this process has 8 CPU cores" in message
    assert monitor.end_epoch() is None  # once per run
