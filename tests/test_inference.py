"""Inference plumbing (lsnet.engine.inference): one read of the checkpoint, preprocessing
resolved once (timm's pretrained_cfg <- the checkpoint's record <- options)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import lsnet
import tiny_models  # noqa: F401 - registers lsnet_test
from lsnet.cli.main import main
from lsnet.engine.inference import (Preprocessing, check_output_file, load_for_inference, preprocessing_record,
                                    resolve_preprocessing)
from lsnet.errors import ConfigError
from lsnet.models import checkpoint as C

NAMES = ["circle", "square", "star"]
RECORD = preprocessing_record(img_size=64, crop_pct=1.0, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                              std=(0.25, 0.25, 0.25))


def _checkpoint(path: Path, **replace) -> Path:
    model = timm.create_model("lsnet_test", num_classes=len(NAMES), img_size=64)
    extra = {"arch": "lsnet_test", "class_names": NAMES, "preprocessing": RECORD,
             "config": {"img_size": 64, "crop_pct": 0.9, "interpolation": "bicubic", "seed": 4}}
    C.save_checkpoint(model, path, extra={**extra, **replace})
    return path


@pytest.fixture()
def reads(monkeypatch):
    """Counts the files read in full (torch.load / safetensors' load_file)."""
    calls = []
    original = C._read_file

    def counting(path, map_location):
        calls.append(Path(path).name)
        return original(path, map_location)

    monkeypatch.setattr(C, "_read_file", counting)
    return calls


def test_the_checkpoint_is_read_once(tmp_path, reads):
    ck = _checkpoint(tmp_path / "ck.pth")
    im = load_for_inference(ck)
    assert reads == ["ck.pth"]
    assert (im.arch, im.num_classes, im.class_names, im.seed) == ("lsnet_test", 3, NAMES, 4)
    reads.clear()
    C.convert_checkpoint(ck, tmp_path / "w.safetensors")
    assert reads == ["ck.pth"]


def test_preprocessing_model_then_checkpoint_then_options(tmp_path):
    model = timm.create_model("lsnet_t", num_classes=3)
    base = resolve_preprocessing(model)  # the model's pretrained_cfg, through timm
    assert base == Preprocessing(224, 0.875, "bicubic", tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
    recorded = resolve_preprocessing(model, RECORD)
    assert recorded == Preprocessing(64, 1.0, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    given = resolve_preprocessing(model, RECORD, img_size=96, crop_pct=0.5, interpolation="nearest")
    assert (given.img_size, given.crop_pct, given.interpolation, given.mean) == (96, 0.5, "nearest", (0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="--crop-pct"):
        resolve_preprocessing(model, crop_pct=0.0)
    assert resolve_preprocessing(model, {"interpolation": "random"}).interpolation == "bicubic"  # a training choice


def test_the_checkpoints_record_wins_over_its_config_and_reaches_the_transform(tmp_path):
    im = load_for_inference(_checkpoint(tmp_path / "ck.pth"))
    assert im.preprocessing == Preprocessing(64, 1.0, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    normalize = [t for t in im.transform().transforms[-1].transforms if type(t).__name__ == "Normalize"][0]
    assert list(normalize.mean) == [0.5, 0.5, 0.5] and list(normalize.std) == [0.25, 0.25, 0.25]
    older = load_for_inference(_checkpoint(tmp_path / "old.pth", preprocessing=None))  # config only
    assert (older.preprocessing.crop_pct, older.preprocessing.interpolation) == (0.9, "bicubic")
    assert older.preprocessing.mean == tuple(IMAGENET_DEFAULT_MEAN)


def test_converted_files_keep_the_preprocessing(tmp_path):
    C.convert_checkpoint(_checkpoint(tmp_path / "ck.pth"), tmp_path / "w.safetensors")
    info = C.checkpoint_info(tmp_path / "w.safetensors")
    assert info["interpolation"] == "bilinear" and info["mean"] == [0.5, 0.5, 0.5] and info["class_names"] == NAMES
    im = load_for_inference(tmp_path / "w.safetensors")
    assert im.preprocessing == load_for_inference(tmp_path / "ck.pth").preprocessing


def test_bare_weights_take_the_models_preprocessing(tmp_path):
    model = timm.create_model("lsnet_t", num_classes=5)
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    im = load_for_inference(tmp_path / "bare.pth")
    assert (im.arch, im.num_classes, im.class_names) == ("lsnet_t", 5, ["0", "1", "2", "3", "4"])
    assert im.preprocessing.img_size == 224 and im.preprocessing.interpolation == "bicubic"
    with pytest.raises(ConfigError, match="--model lsnet_s but"):
        load_for_inference(_checkpoint(tmp_path / "ck.pth"), "lsnet_s")
    with pytest.raises(ConfigError, match="--num-classes 4 but"):
        load_for_inference(tmp_path / "bare.pth", num_classes=4)


def test_eval_json_records_the_preprocessing_used(tmp_path, capsys):
    ck = tmp_path / "ck.pth"
    model = timm.create_model("lsnet_test", num_classes=10, img_size=64)
    C.save_checkpoint(model, ck, extra={"arch": "lsnet_test", "class_names": [str(i) for i in range(10)],
                                        "preprocessing": RECORD})
    assert main(["eval", "--checkpoint", str(ck), "--json", str(tmp_path / "m.json"), "--crop-pct", "0.8"]) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["preprocessing"] == {**RECORD, "crop_pct": 0.8} and res["count"] == 360
    assert "64px" in capsys.readouterr().out


def test_export_takes_the_image_size_from_the_checkpoint(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "ck.pth")
    assert main(["export", "--checkpoint", str(ck), "--format", "torchscript", "--output",
                 str(tmp_path / "m.pt")]) == 0
    assert "64px" in capsys.readouterr().out


def test_check_output_file(tmp_path):
    check_output_file(tmp_path / "m.json", "--json")
    check_output_file(tmp_path / "new" / "deeper" / "m.onnx", "--output", create_parent=True)
    with pytest.raises(ConfigError, match="--json .* is a folder"):
        check_output_file(tmp_path, "--json")
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_file(tmp_path / "new" / "m.json", "--json")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        check_output_file(tmp_path / "f" / "m.onnx", "--output", create_parent=True)
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="permission denied"):
            check_output_file(tmp_path / "ro" / "m.json", "--json")


def test_load_checkpoint_accepts_a_file_already_read(tmp_path, reads):
    ck = _checkpoint(tmp_path / "ck.pth")
    opened = C.open_checkpoint(ck)
    model = timm.create_model("lsnet_test", num_classes=3, img_size=64)
    lsnet.load_checkpoint(model, opened)
    assert reads == ["ck.pth"] and opened.info()["arch"] == "lsnet_test"
