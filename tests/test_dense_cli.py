"""The dense commands end to end on a tiny generated shapes set: make-shapes, train, eval, predict."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

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
                 "--crop-size", "96", "--output", str(out), "--seg-loss", "ce+dice", "--cat-max-ratio", "0.75",
                 "--no-channels-last"]) == 0
    assert "best mIoU" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert (saved["seg_loss"], saved["cat_max_ratio"], saved["channels_last"]) == ("ce+dice", 0.75, False)
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
    assert main(["detect", "eval", "--checkpoint", str(out / "last.pth"), "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "bbox_AP50" in printed and "| bbox AP / AP50 circle |" in printed
    per_class = json.loads((tmp_path / "m.json").read_text())["bbox_per_class"]
    assert list(per_class) == ["circle", "square", "triangle", "ellipse", "star"]
    if arch == "maskrcnn":
        assert "| segm AP / AP50 star |" in printed
    image = sorted((shapes / "coco" / "val" / "images").iterdir())[0]
    assert main(["detect", "predict", "--checkpoint", str(out / "last.pth"), "--score-threshold", "0.0",
                 "--output", str(tmp_path / "p"), str(image)]) == 0
    data = json.loads(next((tmp_path / "p").glob("*_pred.json")).read_text())
    assert "detections" in data


def _seg_args(shapes, out, *extra):
    return ["segment", "train", "--shapes-dir", str(shapes), "--iters", "6", "--batch-size", "4", "--crop-size", "64",
            "--base-size", "64", "--fpn-channels", "32", "--output", str(out), *extra]


def test_segment_resume_continues_exactly(shapes, tmp_path):
    """Two epochs, stop, resume to the end == the same run uninterrupted (8 images, batch 4: 2 its/epoch)."""
    assert main(_seg_args(shapes, tmp_path / "straight")) == 0
    assert main(_seg_args(shapes, tmp_path / "split", "--stop-after", "2")) == 0
    first = torch.load(tmp_path / "split" / "last.pth", weights_only=True)
    assert first["iteration"] == 4
    assert main(_seg_args(shapes, tmp_path / "split", "--resume", str(tmp_path / "split" / "last.pth"))) == 0
    a = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 6
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    log = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [4, 6]  # evaluated where it stopped and at the end


def test_resume_from_a_file_that_is_not_a_checkpoint(shapes, tmp_path, capsys):
    bogus = tmp_path / "bogus.pth"
    torch.save({"weights": torch.zeros(1)}, bogus)
    assert main(_seg_args(shapes, tmp_path / "r", "--resume", str(bogus))) == 2
    assert "bogus.pth" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    for task in ("detect", "segment"):
        assert main([task, "eval", "--checkpoint", str(text)]) == 2
        err = capsys.readouterr().err
        assert "notes.txt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_segment_under_torchrun(shapes, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lsnet",
           *_seg_args(shapes, out, "--batch-size", "2")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "batch 2x2" in res.stderr
    assert main(["segment", "eval", "--checkpoint", str(out / "last.pth")]) == 0


def test_bad_annotations_stop_before_training(tmp_path, capsys):
    root = tmp_path / "shapes"
    assert main(["dense", "make-shapes", str(root), "--num-train", "2", "--num-val", "1"]) == 0
    ann = root / "coco" / "annotations" / "instances_train.json"
    ann.write_text("{not json")
    assert main(["detect", "train", "--shapes-dir", str(root), "--epochs", "1", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "instances_train.json" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "last.pth").exists()


def test_presets_per_model_and_fractional_lr_steps():
    from lsnet.dense.config import resolve_dense_config
    from lsnet.dense.task import lr_factor as _lr_factor

    mask = resolve_dense_config("detect", {"arch": "maskrcnn"})
    retina = resolve_dense_config("detect", {"arch": "retinanet"})
    assert (mask.epochs, mask.roi_batch_size, mask.roi_sampling_ratio, mask.lr_steps) == (3, 64, 1, (2.75,))
    assert (retina.epochs, retina.lr, retina.lr_steps, retina.roi_batch_size) == (4, 1e-3, (3.5,), 128)
    assert (retina.head_norm, retina.box_loss) == ("gn", "giou")
    assert (mask.head_norm, mask.box_loss) == ("none", "l1")  # RetinaNet-only options keep their defaults
    paper_retina = resolve_dense_config("detect", {"arch": "retinanet", "preset": "1x"})
    assert (paper_retina.head_norm, paper_retina.box_loss) == ("none", "l1")  # the release's head
    assert resolve_dense_config("detect", {"arch": "maskrcnn", "lr": 5e-4}).lr == 5e-4  # flags still win
    assert resolve_dense_config("detect", {"arch": "maskrcnn", "preset": "1x"}).roi_batch_size == 512
    # a step at 2.75 epochs falls inside the third epoch (250 iterations each, warm-up over)
    factors = [_lr_factor(mask, it, 750, 250) for it in (686, 687, 688, 749)]
    assert factors == pytest.approx([1.0, 1.0, 0.1, 0.1])
    # whole-epoch steps behave as before: the 1x schedule drops at the start of epochs 9 and 12
    paper = resolve_dense_config("detect", {"preset": "1x"})
    assert [_lr_factor(paper, it, 1200, 100) for it in (799, 800, 1099, 1100)] == pytest.approx([1, 0.1, 0.1, 0.01])


def test_small_presets_fine_tune_a_pretrained_backbone():
    from lsnet.dense.config import resolve_dense_config

    assert resolve_dense_config("segment", {}).lr == 4e-3  # from scratch
    assert (resolve_dense_config("segment", {"backbone_checkpoint": "b.pth"}).lr,
            resolve_dense_config("segment", {"backbone_checkpoint": "b.pth"}).iters) == (1e-3, 1200)
    assert resolve_dense_config("segment", {"backbone_checkpoint": "b.pth", "lr": 2e-3}).lr == 2e-3  # flag wins
    assert resolve_dense_config("segment", {"backbone_checkpoint": "b.pth", "preset": "40k"}).lr == 2e-4  # paper's
    retina = resolve_dense_config("detect", {"backbone_checkpoint": "b.pth"})
    assert (retina.lr, retina.epochs, retina.lr_steps) == (1e-3, 3, (2.5,))  # a shorter schedule
    assert (retina.frozen_stages, retina.frozen_norm) == (4, "batch")  # backbone weights fixed
    assert resolve_dense_config("detect", {"arch": "retinanet"}).epochs == 4  # from scratch
    mask = resolve_dense_config("detect", {"arch": "maskrcnn", "backbone_checkpoint": "b.pth"})
    assert (mask.epochs, mask.lr_steps, mask.roi_batch_size) == (2, (1.75,), 64)  # shorter, RoIs as from scratch
    assert resolve_dense_config("detect", {"arch": "maskrcnn"}).epochs == 3  # from scratch


@pytest.mark.parametrize("flag,value,message", [("--lr-steps", "3,-1", "--lr-steps must be epochs >= 0"),
                                                ("--eval-every", "0", "--eval-every must be at least 1"),
                                                ("--roi-batch-size", "0", "--roi-batch-size must be at least 1"),
                                                ("--frozen-stages", "5", "--frozen-stages must be between -1 and 4")])
def test_bad_detection_schedule_flags_stop_with_one_line(tmp_path, capsys, flag, value, message):
    assert main(["detect", "train", "--arch", "maskrcnn", "--data", str(tmp_path / "none"), flag, value,
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_detection_schedule_flags_reach_the_config():
    from lsnet.cli.main import build_parser
    from lsnet.cli.dense import _overrides
    from lsnet.dense.config import resolve_dense_config
    from lsnet.dense.task import build_dense_model

    args = build_parser().parse_args(["detect", "train", "--arch", "maskrcnn", "--lr-steps", "2.5,2.9",
                                      "--eval-every", "3", "--roi-batch-size", "32", "--head-norm", "gn",
                                      "--box-loss", "giou", "--frozen-stages", "2", "--frozen-norm", "batch"])
    cfg = resolve_dense_config("detect", _overrides(args))
    assert (cfg.lr_steps, cfg.eval_every, cfg.roi_batch_size) == ((2.5, 2.9), 3, 32)
    assert (cfg.head_norm, cfg.box_loss, cfg.frozen_stages, cfg.frozen_norm) == ("gn", "giou", 2, "batch")
    model = build_dense_model(dataclasses.replace(cfg, arch="retinanet"), 3)
    assert model.head.regression_head._loss_type == "giou"
    assert (model.backbone.backbone.frozen_stages, model.backbone.backbone.frozen_norm) == (2, "batch")
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.head.modules())


def test_pretrain_on_shape_crops_then_segment_from_that_backbone(shapes, tmp_path, capsys):
    """The README's pre-training route: make-shape-crops -> lsnet train -> --backbone-checkpoint."""
    crops = tmp_path / "crops"
    assert main(["dense", "make-shape-crops", str(crops), "--num-train", "40", "--num-val", "30", "--size", "64"]) == 0
    assert "train: 40 images" in capsys.readouterr().out
    cls = tmp_path / "cls"
    assert main(["train", "--data", str(crops), "--preset", "small", "--epochs", "1", "-b", "8", "--img-size", "64",
                 "--output", str(cls)]) == 0
    classifier = torch.load(cls / "last.pth", weights_only=False)["model"]
    out = tmp_path / "seg"
    assert main(_seg_args(shapes, out, "--backbone-checkpoint", str(cls / "last.pth"), "--iters", "1")) == 0
    seg = torch.load(out / "last.pth", weights_only=True)
    assert json.loads((out / "config.json").read_text())["backbone_checkpoint"] == str(cls / "last.pth")
    stem = "fpn.backbone.body.model.patch_embed.0.c.weight"
    assert stem in seg["model"] and "patch_embed.0.c.weight" in classifier
    # one AdamW step moves each weight by at most about lr: still close to the pre-trained value
    drift = (seg["model"][stem] - classifier["patch_embed.0.c.weight"]).abs().max().item()
    assert drift < 0.05, drift
    assert main(["dense", "make-shape-crops", str(tmp_path / "bad"), "--size", "4"]) == 2
    assert "size" in capsys.readouterr().err
    # a missing backbone file stops before the shapes set would be generated
    assert main(["segment", "train", "--shapes-dir", str(tmp_path / "never"), "--backbone-checkpoint",
                 str(tmp_path / "missing.pth"), "--output", str(tmp_path / "o")]) == 2
    assert "missing.pth" in capsys.readouterr().err and not (tmp_path / "never").exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for command in ("make-shape-crops", "make-shapes"):
        assert main(["dense", command, str(a_file)]) == 2
        err = capsys.readouterr().err
        assert "a_file is a file" in err and "Traceback" not in err


def test_predict_names_the_shapes_with_the_shipped_backbone(tmp_path, capsys):
    """`lsnet predict` reads class names, image size and crop from the .safetensors metadata."""
    import numpy as np
    from PIL import Image

    from lsnet.dense.shapes import SHAPE_CLASSES, render_shape_crop
    from test_dense_models import SHAPES_BACKBONE

    want = {}
    for i in range(4):
        img, k = render_shape_crop(np.random.default_rng([11, 3, i]), 64)
        Image.fromarray(img).save(tmp_path / f"crop{i}.png")
        want[str(tmp_path / f"crop{i}.png")] = SHAPE_CLASSES[k]
    assert main(["predict", "--checkpoint", str(SHAPES_BACKBONE), *want]) == 0
    lines = capsys.readouterr().out.splitlines()
    top = {line[:-1]: lines[i + 1].split()[1] for i, line in enumerate(lines) if line[:-1] in want}
    assert top == want


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_predict_help_shows_only_the_options_of_its_task(task, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([task, "predict", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--checkpoint" in text and "--device" in text
    assert ("--score-threshold" in text) == (task == "detect")  # segmentation has no scores to threshold
    if task == "segment":
        with pytest.raises(SystemExit):
            main(["segment", "predict", "--checkpoint", "x.pth", "--score-threshold", "0.3", "img.png"])
        assert "unrecognized arguments: --score-threshold" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_train_under_bfloat16_autocast(shapes, tmp_path, monkeypatch, task):
    """``--amp --amp-dtype bfloat16`` (timm's flags, shared with ``lsnet train``) reaches the
    engine: Mask R-CNN (RoIAlign, masks) and Semantic FPN train and evaluate under autocast."""
    import math

    import lsnet.engine.loop as loop

    seen = []
    real = loop.autocast_context
    monkeypatch.setattr(loop, "autocast_context", lambda device, amp: seen.append(amp) or real(device, amp))
    out = tmp_path / task
    common = ["--shapes-dir", str(shapes), "--batch-size", "4", "--output", str(out), "--amp", "--amp-dtype", "bfloat16"]
    if task == "detect":
        args = ["detect", "train", "--arch", "maskrcnn", "--epochs", "1", "--train-scales", "96", "--min-size", "96",
                "--max-size", "128", *common]
    else:
        args = ["segment", "train", "--iters", "4", "--crop-size", "64", "--base-size", "64", "--fpn-channels", "32",
                *common]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["amp"] == "bfloat16"
    assert seen and set(seen) == {"bfloat16"}
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["train_loss"])


def test_no_amp_and_amp_dtype_contradict(tmp_path, capsys):
    assert main(["detect", "train", "--no-amp", "--amp-dtype", "bfloat16", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--no-amp and --amp-dtype contradict" in err and "Traceback" not in err
