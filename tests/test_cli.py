"""The ``lsnet`` command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lsnet.cli.main import main


def test_info_table_and_json(capsys, tmp_path):
    assert main(["info", "--models", "lsnet_t,lsnet_b_distill", "--json", str(tmp_path / "info.json")]) == 0
    out = capsys.readouterr().out
    row_t = next(line for line in out.splitlines() if line.startswith("| lsnet_t |"))
    assert "11,409,832" in row_t and "| 0.316 |" in row_t
    data = json.loads((tmp_path / "info.json").read_text())
    assert [d["name"] for d in data] == ["lsnet_t", "lsnet_b_distill"]
    assert data[1]["params"] == 23_827_632 and data[1]["fused_params"] == 23_249_320
    assert round(data[1]["gmacs"], 3) == 1.245


@pytest.mark.parametrize("argv,message", [
    (["info", "--models", "lsnet_x"], "unknown model(s) lsnet_x"),
    (["info", "--models", "lsnet_t", "--img-size", "32"], "at least 64"),
])
def test_info_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_python_dash_m_and_console_script():
    out = subprocess.run([sys.executable, "-m", "lsnet", "info", "--models", "lsnet_s"],
                         capture_output=True, text=True, check=True).stdout
    assert "| lsnet_s | 224x224 | 16,146,304 |" in out and "| 0.538 |" in out
    exe = shutil.which("lsnet")
    if exe is None:
        pytest.skip("the console script is not installed (run pip install -e .)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == __import__("lsnet").__version__


def test_export_names_the_extra_it_needs_and_warns_about_random_weights(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    assert main(["export", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "lsnet[deploy]" in err and "onnx" in err and len(err.strip().splitlines()) == 1
    monkeypatch.delitem(sys.modules, "onnx")
    assert main(["export", "--format", "torchscript", "--model", "lsnet_t", "--img-size", "64",
                 "--output", str(tmp_path / "m.pt")]) == 0
    assert "randomly initialised weights" in capsys.readouterr().err


def _predict_setup(tmp_path, n=5):
    """A checkpoint of the tiny test model with 10 classes, ``n`` images and a file that is not one."""
    import timm

    import tiny_models  # noqa: F401 - registers lsnet_test
    from lsnet.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = timm.create_model("lsnet_test", num_classes=10, img_size=64)
    ck = save_checkpoint(model, tmp_path / "ck.pth", extra={
        "arch": "lsnet_test", "class_names": [f"class{i}" for i in range(10)],
        "config": {"img_size": 64, "crop_pct": 1.0, "interpolation": "bicubic", "seed": 0}})
    images = []
    for i in range(n):
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    (tmp_path / "notes.txt").write_text("not an image")
    return str(ck), images


def _predictions(text):
    """{path: [(probability %, class name), ...]} from predict's output."""
    out, path = {}, None
    for line in text.splitlines():
        if not line.startswith(" "):
            path = line.rstrip(":")
            out[path] = []
        else:
            p, name = line.split()
            out[path].append((float(p.rstrip("%")), name))
    return out


def test_predict_batches_images_and_keeps_their_order(tmp_path, capsys):
    ck, images = _predict_setup(tmp_path)
    assert main(["predict", "--checkpoint", ck, "--batch-size", "1", "--device", "cpu", *images]) == 0
    one = _predictions(capsys.readouterr().out)
    # 2 + 2 + 1 images per forward pass, an unreadable file in the middle left out (exit status 1)
    argv = [*images[:3], str(tmp_path / "notes.txt"), *images[3:]]
    assert main(["predict", "--checkpoint", ck, "-b", "2", "--device", "cpu", "--topk", "3", *argv]) == 1
    captured = capsys.readouterr()
    batched = _predictions(captured.out)
    assert list(batched) == images == list(one)
    for path in images:  # the same probabilities, up to float rounding (and the order of near ties)
        assert [p for p, _ in batched[path]] == pytest.approx([p for p, _ in one[path][:3]], abs=0.011)
        alone = {name: p for p, name in one[path]}
        assert all(alone.get(name) == pytest.approx(p, abs=0.011) for p, name in batched[path])
    assert "notes.txt" in captured.err and "1 of 6 image(s) could not be read" in captured.err


def test_predict_help_names_batch_size_and_device(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "--batch-size" in text and "--device" in text and "cuda:N" in text


@pytest.mark.parametrize("argv,message", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:1"], "--device cuda:1 was asked for but CUDA is not available"),
])
def test_predict_refuses_a_batch_size_or_device_that_cannot_work(tmp_path, capsys, monkeypatch, argv, message):
    ck, images = _predict_setup(tmp_path, n=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine
    assert main(["predict", "--checkpoint", ck, *argv, *images]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
