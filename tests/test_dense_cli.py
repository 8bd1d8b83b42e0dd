"""The dense commands end to end on a tiny generated shapes set: make-shapes, train, eval, predict."""

from __future__ import annotations

import json

import pytest

from lsnet.cli.main import main

pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    assert main(["dense", "make-shapes", str(root), "--num-train", "8", "--num-val", "3"]) == 0
    return root


def test_segment_train_eval_predict(shapes, tmp_path, capsys):
    out = tmp_path / "seg"
    assert main(["segment", "train", "--shapes-dir", str(shapes), "--iters", "6", "--batch-size", "4",
                 "--crop-size", "96", "--output", str(out)]) == 0
    assert "best mIoU" in capsys.readouterr().out
    for f in ("last.pth", "best.pth", "metrics.jsonl", "curves.png", "config.json"):
        assert (out / f).is_file(), f
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and 0 <= records[-1]["val_mIoU"] <= 1
    assert main(["segment", "eval", "--checkpoint", str(out / "best.pth"), "--json", str(tmp_path / "m.json")]) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert set(res) >= {"mIoU", "pixel_acc", "per_class_iou"} and len(res["per_class_iou"]) == 6
    images = sorted((shapes / "ade" / "images" / "validation").iterdir())[:2]
    assert main(["segment", "predict", "--checkpoint", str(out / "best.pth"), "--output", str(tmp_path / "p"),
                 *map(str, images)]) == 0
    pngs = sorted((tmp_path / "p").glob("*_pred.png"))
    assert len(pngs) == 2 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(next((tmp_path / "p").glob("*_pred.json")).read_text())["classes"]


@pytest.mark.parametrize("arch", ["retinanet", "maskrcnn"])
def test_detect_train_eval_predict(shapes, tmp_path, capsys, arch):
    out = tmp_path / arch
    assert main(["detect", "train", "--arch", arch, "--shapes-dir", str(shapes), "--epochs", "1", "--batch-size", "4",
                 "--train-scales", "96,112", "--min-size", "112", "--max-size", "160", "--output", str(out)]) == 0
    key = "bbox_AP50" if arch == "retinanet" else "segm_AP50"
    assert f"best {key}" in capsys.readouterr().out
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record[f"val_{key}"] <= 1 or record[f"val_{key}"] == -1
    assert main(["detect", "eval", "--checkpoint", str(out / "last.pth")]) == 0
    assert "bbox_AP50" in capsys.readouterr().out
    image = sorted((shapes / "coco" / "val" / "images").iterdir())[0]
    assert main(["detect", "predict", "--checkpoint", str(out / "last.pth"), "--score-threshold", "0.0",
                 "--output", str(tmp_path / "p"), str(image)]) == 0
    data = json.loads(next((tmp_path / "p").glob("*_pred.json")).read_text())
    assert "detections" in data


def test_bad_annotations_stop_before_training(tmp_path, capsys):
    root = tmp_path / "shapes"
    assert main(["dense", "make-shapes", str(root), "--num-train", "2", "--num-val", "1"]) == 0
    ann = root / "coco" / "annotations" / "instances_train.json"
    ann.write_text("{not json")
    assert main(["detect", "train", "--shapes-dir", str(root), "--epochs", "1", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "instances_train.json" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "last.pth").exists()
