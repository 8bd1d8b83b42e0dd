"""``lsnet rotated`` end to end on a tiny DOTA-format set: split, train, resume, eval (with the
task-1 files), predict (drawn PNG), and the data errors that stop a run before it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lsnet.cli.main import main
from lsnet.ops.rotated_boxes import obb_to_poly

CLASSES = ("plane", "ship")
# a small detector: the tiny set has a handful of objects
SMALL = ["--fpn-channels", "16", "--fc-channels", "32", "--roi-batch", "32", "--rpn-post-nms", "50",
         "--patch-size", "96", "--gap", "32", "--batch-size", "2", "--drop-path-rate", "0"]


def _write_split(root: Path, seed: int, count: int = 2, size=(150, 130)) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir(parents=True)
    for i in range(count):
        image = rng.integers(60, 90, size=(*size, 3), dtype=np.uint8)
        lines = ["imagesource:synthetic", "gsd:1.0"]
        for k in range(3):
            cx, cy = rng.uniform(20, size[1] - 20), rng.uniform(20, size[0] - 20)
            box = torch.tensor([cx, cy, 24.0, 10.0, float(rng.uniform(-1.5, 1.5))], dtype=torch.float64)
            poly = obb_to_poly(box).numpy()
            lines.append(" ".join(f"{v:.1f}" for v in poly) + f" {CLASSES[k % 2]} {int(k == 2)}")
        Image.fromarray(image).save(root / "images" / f"P{i:04d}.png")
        (root / "labelTxt" / f"P{i:04d}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture()
def dota_root(tmp_path):
    root = tmp_path / "dota"
    _write_split(root / "train", seed=0)
    _write_split(root / "val", seed=1, count=1)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def test_train_resume_eval_predict(dota_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["rotated", "train", "--data", str(dota_root), "--backbone", "lsknet_t", "--epochs", "2",
            "--output", str(out), *SMALL]
    assert main([*args, "--stop-after", "1"]) == 0
    assert main(["rotated", "train", "--resume", str(out / "last.pth")]) == 0
    assert "best mAP50" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] or [r["epoch"] for r in records] == [0, 1]
    assert all(0.0 <= r["val_mAP50"] <= 1.0 for r in records)
    assert (out / "curves.png").is_file()
    split = tmp_path / "dota-split96-32"
    assert (split / "train" / ".done").is_file() and len(list((split / "val" / "images").iterdir())) == 4

    assert main(["rotated", "eval", "--checkpoint", str(out / "best.pth"), "--json", str(tmp_path / "m.json"),
                 "--submission", str(tmp_path / "sub")]) == 0
    table = capsys.readouterr().out
    assert "| plane |" in table and "**mAP50**" in table
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["per_class_AP50"]) == set(CLASSES)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["Task1_plane.txt", "Task1_ship.txt"]

    image = dota_root / "val" / "images" / "P0000.png"
    assert main(["rotated", "predict", "--checkpoint", str(out / "best.pth"), "--output", str(tmp_path / "pred"),
                 "--score-threshold", "0.0", str(image)]) == 0
    drawn = tmp_path / "pred" / "P0000_pred.png"
    assert drawn.read_bytes()[:4] == b"\x89PNG" and Image.open(drawn).size == Image.open(image).size
    assert (tmp_path / "pred" / "Task1_ship.txt").is_file()

    # the per-object breakdown of benchmarks/rotated_misses.py on the same checkpoint
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "rotated_misses.py"
    res = subprocess.run([sys.executable, str(script), "--checkpoint", str(out / "best.pth"), "--data", str(dota_root),
                          "--sheet", str(tmp_path / "misses.png"), "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in res.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| class")}
    assert set(rows) == set(CLASSES)
    # every object is counted once: missed + poor + found = objects (one difficult ship left out)
    counts = {c: [int(v) for v in rows[c][:4]] for c in CLASSES}
    assert all(n == a + b + c for n, a, b, c in counts.values())
    assert sum(n for n, *_ in counts.values()) == 2
    assert (tmp_path / "misses.png").read_bytes()[:4] == b"\x89PNG"


def test_train_under_bfloat16_autocast(dota_root, tmp_path, monkeypatch):
    """``--amp --amp-dtype bfloat16``: the rotated detector (rotated RoIAlign, box coders, exact
    IoU) trains and evaluates under autocast."""
    import math

    import lsnet.engine.loop as loop

    seen = []
    real = loop.autocast_context
    monkeypatch.setattr(loop, "autocast_context", lambda device, amp: seen.append(amp) or real(device, amp))
    out = tmp_path / "amp"
    assert main(["rotated", "train", "--data", str(dota_root), "--backbone", "lsknet_t", "--epochs", "1",
                 "--output", str(out), "--amp", "--amp-dtype", "bfloat16", *SMALL]) == 0
    assert json.loads((out / "config.json").read_text())["amp"] == "bfloat16"
    assert seen and set(seen) == {"bfloat16"}
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["train_loss"]) and 0.0 <= record["val_mAP50"] <= 1.0


@pytest.mark.parametrize("line, words", [
    ("10 10 30 10 30 20 10 ship 0", ["P0001.txt", "line 3"]),       # 7 coordinates
    ("10 10 30 10 30 20 10 20 boat 0", ["P0001.txt", "line 3", "boat"]),  # unknown class
    ("10 10 30 x 30 20 10 20 ship 0", ["P0001.txt", "line 3"]),       # non-numeric
])
def test_malformed_label_stops_before_training(dota_root, tmp_path, capsys, line, words):
    label = dota_root / "train" / "labelTxt" / "P0001.txt"
    label.write_text("imagesource:x\ngsd:1\n" + line + "\n")
    out = tmp_path / "run"
    assert main(["rotated", "train", "--data", str(dota_root), "--output", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    assert not (out / "last.pth").exists() and not (out / "config.json").exists()


def test_missing_label_file_and_empty_split_name_the_path(dota_root, tmp_path, capsys):
    (dota_root / "val" / "labelTxt" / "P0000.txt").unlink()
    assert main(["rotated", "train", "--data", str(dota_root), "--output", str(tmp_path / "a"), *SMALL]) == 2
    assert "P0000" in capsys.readouterr().err
    for f in (dota_root / "val" / "images").iterdir():
        f.unlink()
    assert main(["rotated", "train", "--data", str(dota_root), "--output", str(tmp_path / "b"), *SMALL]) == 2
    assert "no images" in capsys.readouterr().err


def test_torchrun_two_processes(dota_root, tmp_path):
    """Two processes (gloo): each trains on half the patches and evaluates half of them; the
    detections are gathered, so rank 0 scores every validation image."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lsnet",
           "rotated", "train", "--data", str(dota_root), "--epochs", "1", "--output", str(out), *SMALL]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "batch 2x2" in res.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and 0.0 <= records[0]["val_mAP50"] <= 1.0
    assert (out / "best.pth").is_file()


def test_small_preset_starts_from_the_shipped_backbone(monkeypatch):
    """On the synthetic set the small preset fine-tunes the repository's pre-trained LSKNet-T
    with a frozen backbone; ``--backbone-checkpoint none`` trains everything from scratch."""
    from lsnet.rotated.config import resolve_rotated_config, shipped_backbone

    weights = Path(__file__).resolve().parents[1] / "weights" / "lsknet_t_aerial.safetensors"
    if not weights.is_file():
        pytest.skip("weights/lsknet_t_aerial.safetensors is not in this checkout")
    monkeypatch.chdir(weights.parents[1])
    assert Path(shipped_backbone("lsknet_t")).resolve() == weights
    cfg = resolve_rotated_config({"backbone": "lsknet_t"})
    assert Path(cfg.backbone_checkpoint).resolve() == weights
    assert (cfg.preset, cfg.frozen_stages, cfg.frozen_norm, cfg.patch_size) == ("small", 4, "batch", 512)
    scratch = resolve_rotated_config({"backbone": "lsknet_t", "backbone_checkpoint": "none"})
    assert scratch.backbone_checkpoint is None and scratch.frozen_stages == -1
    assert resolve_rotated_config({"backbone": "lsnet_t"}).backbone_checkpoint is None  # none shipped
    assert resolve_rotated_config({"data": "/data/dota"}).preset == "1x"


def test_eval_and_predict_refuse_other_checkpoints(tmp_path, capsys):
    other = tmp_path / "classify.pth"
    torch.save({"task": "classify", "config": {"task": "classify"}, "model": {}, "class_names": ["a", "b"]}, other)
    assert main(["rotated", "eval", "--checkpoint", str(other)]) == 2
    assert "not by lsnet rotated train" in capsys.readouterr().err
    weights_only = tmp_path / "weights.pth"
    torch.save({"model": {}}, weights_only)
    assert main(["rotated", "predict", "--checkpoint", str(weights_only), str(weights_only)]) == 2
    assert "is not a checkpoint written by lsnet rotated train" in capsys.readouterr().err
