"""Nothing lost, nothing silently wrong (issue 17): outputs that overwrote each other, link
loops, unreadable validation images, foreign classes, wide image modes, tracebacks instead of
one line, accepted nonsense options, stray temporary files, evaluation without a train split."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import tiny_models  # noqa: F401 - registers lsnet_test
from lsnet.cli.main import main
from lsnet.data import (DataError, ReadableBatches, build_datasets, build_transforms, collate_readable, list_images,
                        load_image, output_names, scan_image_folder)
from lsnet.models.checkpoint import CheckpointError, atomic_write, open_checkpoint, save_checkpoint


class _Records(logging.Handler):
    """Collects the records of one logger (the CLI may stop lsnet's loggers propagating to pytest's)."""

    def __init__(self, name: str):
        super().__init__(logging.DEBUG)
        self.logger, self.records = logging.getLogger(name), []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        self.level = self.logger.level
        self.logger.addHandler(self)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


def _image(path: Path, seed: int = 0, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _folder(root: Path, classes=("cat", "dog"), per_class=2, splits=("train", "val")) -> Path:
    for s, split in enumerate(splits):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _image(root / split / name / f"img{i}.png", seed=100 * s + 10 * c + i)
    return root


def _classifier_checkpoint(path: Path, names, **replace) -> Path:
    """A checkpoint of lsnet_test as training writes them; ``replace`` swaps top-level entries."""
    import timm

    model = timm.create_model("lsnet_test", num_classes=len(names), img_size=64)
    extra = {"arch": "lsnet_test", "class_names": list(names),
             "config": {"img_size": 64, "crop_pct": 1.0, "interpolation": "bicubic", "seed": 0}}
    save_checkpoint(model, path, extra={**extra, **replace})
    return path


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


# ---------------------------------------------------------------------------------------------
# outputs of inputs with the same name


def test_output_names_keep_same_named_inputs_apart():
    assert output_names(["a/x.jpg", "b/x.jpg", "c/y.png"]) == ["a_x", "b_x", "y"]
    assert output_names(["a/x.jpg", "b/a/x.jpg", "a/X.png"]) == ["a_x", "a_x_2", "a_X_3"]  # case-insensitive
    assert len(set(n.lower() for n in output_names(["x.jpg", "x.jpg"]))) == 2


def _dense_checkpoint(path: Path, task: str, class_names, **overrides) -> Path:
    from lsnet.dense.config import resolve_dense_config
    from lsnet.dense.task import build_dense_model

    arch = "retinanet" if task == "detect" else "semantic_fpn"
    cfg = resolve_dense_config(task, {"arch": arch, "fpn_channels": 16, "min_size": 64, "max_size": 96,
                                      "train_scales": (64,), "base_size": 64, **overrides})
    model = build_dense_model(cfg, len(class_names))
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "class_names": list(class_names)}, path)
    return path


@pytest.mark.parametrize("task", ["segment", "detect"])
def test_dense_predict_writes_one_output_per_input(tmp_path, capsys, task):
    ck = _dense_checkpoint(tmp_path / "ck.pth", task, ["a", "b"])
    images = [_image(tmp_path / "a" / "x.jpg", 1, 48), _image(tmp_path / "b" / "x.jpg", 2, 48)]
    out = tmp_path / "pred"
    assert main([task, "predict", "--checkpoint", str(ck), "--output", str(out), *map(str, images)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*_pred.png")) == ["a_x_pred.png", "b_x_pred.png"]
    assert sorted(p.name for p in out.glob("*_pred.json")) == ["a_x_pred.json", "b_x_pred.json"]
    for image, name in zip(images, ("a_x", "b_x")):  # the mapping is printed
        assert f"{image}: " in printed and f"{name}_pred.png" in printed
        assert json.loads((out / f"{name}_pred.json").read_text())["image"] == str(image)


def test_dense_predict_refuses_a_file_as_output_folder(tmp_path, capsys):
    ck = _dense_checkpoint(tmp_path / "ck.pth", "segment", ["a", "b"])
    (tmp_path / "file").write_text("x")
    assert main(["segment", "predict", "--checkpoint", str(ck), "--output", str(tmp_path / "file"),
                 str(_image(tmp_path / "x.png"))]) == 2
    _one_line_error(capsys, "--output", "is a file")


# ---------------------------------------------------------------------------------------------
# link loops


def test_link_loops_neither_multiply_nor_mislabel_images(tmp_path):
    root = _folder(tmp_path / "ds")
    os.symlink(".", root / "train" / "cat" / "self")  # a loop
    os.symlink("..", root / "train" / "cat" / "up")  # back to the split: would label dog images as cat
    os.symlink("../dog", root / "train" / "cat" / "dogs")  # another class
    os.symlink("img0.png", root / "train" / "dog" / "again.png")  # the same file twice
    with _Records("lsnet.data.folder") as log:
        names, samples = scan_image_folder(root, ("train", "val"))
    train = samples["train"]
    assert names == ["cat", "dog"] and len(train) == 4
    assert [(Path(p).relative_to(root / "train").as_posix(), y) for p, y in train] == [
        ("cat/img0.png", 0), ("cat/img1.png", 0), ("dog/again.png", 1), ("dog/img1.png", 1)]  # again.png is img0.png
    assert "3 link(s) to folders already scanned" in log.text() and "1 more path(s)" in log.text()


def test_list_images_follows_links_once(tmp_path):
    folder = tmp_path / "pics"
    _image(folder / "a.png")
    _image(folder / "sub" / "b.png")
    os.symlink("..", folder / "sub" / "loop")
    os.symlink(folder / "sub", tmp_path / "linked")
    assert [p.name for p in list_images([folder])] == ["a.png", "b.png"]
    assert [p.name for p in list_images([tmp_path / "linked"])] == ["b.png", "a.png"]  # a link is followed once


# ---------------------------------------------------------------------------------------------
# unreadable validation images


@pytest.fixture()
def broken_val(tmp_path):
    root = _folder(tmp_path / "ds", per_class=3)
    bad = root / "val" / "cat" / "img1.png"
    bad.write_bytes(b"not a png")
    return root, bad


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_validation_images_are_left_out_not_replaced(broken_val, workers):
    root, bad = broken_val
    s = build_datasets(str(root), img_size=16, train_transform=build_transforms(True, 16),
                       eval_transform=build_transforms(False, 16))
    assert s.val[1] is None  # no neighbour in its place
    s.val.reset_skipped()
    loader = DataLoader(s.val, batch_size=2, num_workers=workers, collate_fn=collate_readable)
    labels = [y for _, y in (batch for batch in ReadableBatches(loader)) for y in y.tolist()]
    assert labels == [0, 0, 1, 1, 1]  # 6 listed, 5 readable, none counted twice
    assert s.val.skipped_files() == [str(bad)]
    assert collate_readable([None, None]) is None
    picked = s.val.sample_images(6)  # e.g. the samples training saves: unreadable ones passed over
    assert [i for i, _ in picked] == [0, 2, 3, 4, 5]


def test_eval_counts_and_reports_unreadable_images(broken_val, tmp_path, capsys):
    root, bad = broken_val
    ck = _classifier_checkpoint(tmp_path / "ck.pth", ["cat", "dog"])
    shutil.rmtree(root / "train")  # evaluation needs the validation split only
    with _Records("lsnet.cli.evaluate") as log:
        assert main(["eval", "--checkpoint", str(ck), "--data", str(root), "-b", "1",
                     "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "5 images (1 unreadable, skipped)" in out
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["count"] == 5 and res["skipped_images"] == 1
    assert "1 unreadable image(s)" in log.text() and str(bad) in log.text()


# ---------------------------------------------------------------------------------------------
# dense data: foreign classes, dropped boxes, sizes, no train split


def _coco(root: Path, split: str, boxes, width=32, height=32, categories=("a", "b")) -> Path:
    img = _image(root / split / "images" / "0.png", size=32)
    data = {"images": [{"id": 1, "file_name": img.name, "width": width, "height": height}],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(boxes)]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_dense_split_opens_without_a_train_split(tmp_path):
    from lsnet.dense.datasets import CocoDetection, open_dense_split

    root = _coco(tmp_path / "coco", "val", [[1, 1, 10, 10]])
    ds = open_dense_split("detect", root, "val")
    assert isinstance(ds, CocoDetection) and len(ds) == 1 and ds.class_names == ["a", "b"]
    with pytest.raises(DataError, match="instances_train.json"):
        open_dense_split("detect", root, "train")


def test_dropped_boxes_are_counted_and_logged(tmp_path):
    from lsnet.dense.datasets import CocoDetection

    root = _coco(tmp_path / "coco", "val", [[1, 1, 10, 10], [5, 5, -3, 4], [2, 2, 4, 0]])
    with _Records("lsnet.dense.datasets") as log:
        ds = CocoDetection(root / "val" / "images", root / "annotations" / "instances_val.json")
    assert ds.skipped_annotations == 2 and len(ds[0][1]["boxes"]) == 1
    assert "2 annotation(s) with a box of zero or negative width or height" in log.text()


@pytest.mark.parametrize("workers", [0, 1])
def test_annotation_size_that_disagrees_with_the_image_is_one_line(tmp_path, workers):
    from lsnet.dense.datasets import CocoDetection, collate_detection

    root = _coco(tmp_path / "coco", "val", [[1, 1, 10, 10]], width=40)
    ds = CocoDetection(root / "val" / "images", root / "annotations" / "instances_val.json")
    with pytest.raises(DataError) as info:  # through a worker process, too
        next(iter(DataLoader(ds, batch_size=1, num_workers=workers, collate_fn=collate_detection)))
    msg = str(info.value)
    assert "is 32x32 pixels but" in msg and "40x32" in msg and "\n" not in msg and "Traceback" not in msg


def test_dense_eval_refuses_a_dataset_with_other_classes(tmp_path, capsys):
    shapes = tmp_path / "shapes"
    assert main(["dense", "make-shapes", str(shapes), "--num-train", "2", "--num-val", "2", "-j", "1"]) == 0
    ck = _dense_checkpoint(tmp_path / "ck.pth", "segment", ["bg", "x", "y"], shapes_dir=str(shapes))
    capsys.readouterr()
    assert main(["segment", "eval", "--checkpoint", str(ck)]) == 2
    _one_line_error(capsys, "trained on classes [bg, x, y] (3)", "[background, circle,", "(6)")


# ---------------------------------------------------------------------------------------------
# wide image modes


def test_16_bit_and_float_images_keep_their_range(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float64).reshape(8, 8)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I")
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "f.tif")
    Image.fromarray((ramp * 4 - 1).astype(np.float32), mode="F").save(tmp_path / "wide.tif")  # -1..3
    want = np.rint(ramp * 255)
    for name in ("g16.png", "f.tif", "wide.tif"):
        img = load_image(tmp_path / name)
        arr = np.asarray(img).astype(np.float64)
        assert img.mode == "RGB" and arr.shape == (8, 8, 3)
        assert np.abs(arr[..., 0] - want).max() <= 1, name  # a ramp from black to white, not all white
        assert (arr[..., 0] == arr[..., 2]).all()


def test_dense_datasets_read_images_with_the_same_loader(tmp_path):
    from lsnet.dense.datasets import CocoDetection

    root = _coco(tmp_path / "coco", "val", [[1, 1, 10, 10]])
    ramp = (np.linspace(0, 1, 32 * 32).reshape(32, 32) * 65535).astype(np.uint16)
    Image.fromarray(ramp).save(root / "val" / "images" / "0.png")
    image = CocoDetection(root / "val" / "images", root / "annotations" / "instances_val.json")[0][0]
    assert 0.45 < float(image.mean()) < 0.55  # not clipped to white
    (root / "val" / "images" / "0.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"0\.png is not an image that PIL can read \(listed in"):
        CocoDetection(root / "val" / "images", root / "annotations" / "instances_val.json")[0]


# ---------------------------------------------------------------------------------------------
# one line instead of a traceback


def test_eval_json_that_is_a_folder_stops_before_evaluating(tmp_path, capsys):
    ck = _classifier_checkpoint(tmp_path / "ck.pth", [str(i) for i in range(10)])
    assert main(["eval", "--checkpoint", str(ck), "--json", str(tmp_path)]) == 2
    _one_line_error(capsys, "--json", "is a folder")
    assert main(["eval", "--checkpoint", str(ck), "--json", str(tmp_path / "no" / "m.json")]) == 2
    _one_line_error(capsys, "--json", "does not exist")


def test_export_output_that_is_a_folder(tmp_path, capsys):
    assert main(["export", "--model", "lsnet_test", "--output", str(tmp_path), "--format", "torchscript"]) == 2
    _one_line_error(capsys, "--output", "is a folder")


@pytest.mark.parametrize("content,needle", [
    (b"", "the file is empty"),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "neither a zip archive"),
    (b"\x80\x02" + bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "checkpoint"),
], ids=["empty", "random", "pickle-header-then-random"])
def test_damaged_checkpoints_name_the_file(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle) as info:
        open_checkpoint(path)
    assert str(path) in str(info.value)
    for argv in (["predict", "--checkpoint", str(path), str(_image(tmp_path / "x.png"))],
                 ["eval", "--checkpoint", str(path)],
                 ["export", "--checkpoint", str(path), "--output", str(tmp_path / "m.onnx")],
                 ["segment", "eval", "--checkpoint", str(path)],
                 ["convert", str(path), str(tmp_path / "w.safetensors")]):
        assert main(argv) == 2, argv
        err = _one_line_error(capsys, str(path))
        assert "EOFError" not in err and "IndexError" not in err


@pytest.mark.parametrize("change,needle", [
    ({"class_names": ["a", "b"]}, "names 2 classes but its classifier has 10 outputs"),
    ({"config": {"img_size": "big"}}, "'img_size' is 'big', not a positive whole number"),
    ({"config": {"crop_pct": 0}}, "'crop_pct' is 0"),
    ({"preprocessing": {"mean": [0.5]}}, "'mean' is [0.5], not 3 numbers"),
    ({"class_names": [1, 2]}, "'class_names'"),
    ({"arch": 7}, "'arch' is 7"),
])
def test_crafted_checkpoint_metadata_is_one_line(tmp_path, capsys, change, needle):
    ck = _classifier_checkpoint(tmp_path / "ck.pth", [str(i) for i in range(10)], **change)
    assert main(["predict", "--checkpoint", str(ck), str(_image(tmp_path / "x.png"))]) == 2
    _one_line_error(capsys, str(ck), needle)


def test_crafted_dense_checkpoint_is_one_line(tmp_path, capsys):
    ck = _dense_checkpoint(tmp_path / "ck.pth", "segment", ["a", "b", "c"])
    saved = torch.load(ck, weights_only=True)
    saved["class_names"] = ["a"]  # too short for its classifier
    torch.save(saved, ck)
    image = str(_image(tmp_path / "x.png"))
    assert main(["segment", "predict", "--checkpoint", str(ck), "--output", str(tmp_path / "p"), image]) == 2
    _one_line_error(capsys, str(ck), "do not fit")
    saved["class_names"] = "abc"
    torch.save(saved, ck)
    assert main(["segment", "predict", "--checkpoint", str(ck), "--output", str(tmp_path / "p"), image]) == 2
    _one_line_error(capsys, str(ck), "'class_names'")
    saved["class_names"] = ["a", "b", "c"]
    torch.save(saved, ck)
    assert main(["detect", "predict", "--checkpoint", str(ck), "--output", str(tmp_path / "p"), image]) == 2
    _one_line_error(capsys, "written by lsnet segment train, not by lsnet detect train")


# ---------------------------------------------------------------------------------------------
# options that cannot work


@pytest.mark.parametrize("argv,needle", [
    (["predict", "--topk", "0"], "--topk must be at least 1"),
    (["predict", "--crop-pct", "0"], "--crop-pct must be in (0, 1]"),
    (["eval", "--crop-pct", "0"], "--crop-pct must be in (0, 1]"),
    (["eval", "--crop-pct", "1.5"], "--crop-pct must be in (0, 1]"),
    (["eval", "--img-size", "0"], "--img-size must be at least 1"),
    (["eval", "--interpolation", "cubic"], "--interpolation must be one of"),
])
def test_options_that_cannot_work_are_refused(tmp_path, capsys, argv, needle):
    ck = _classifier_checkpoint(tmp_path / "ck.pth", [str(i) for i in range(10)])
    extra = [str(_image(tmp_path / "x.png"))] if argv[0] == "predict" else []
    assert main([*argv, "--checkpoint", str(ck), *extra]) == 2
    _one_line_error(capsys, needle)


# ---------------------------------------------------------------------------------------------
# temporary files of killed saves


def test_stale_temporary_files_are_removed_on_the_next_save(tmp_path):
    target = tmp_path / "last.pth"
    dead = tmp_path / ".last.pth.999999999.abcd1234.tmp"  # a process that no longer runs
    old_style = tmp_path / ".last.pth.k2j_x9q0.tmp"  # written before temporary names held the pid
    alive = tmp_path / f".last.pth.{os.getpid()}.zzzz0000.tmp"  # a save still running
    others = [tmp_path / ".last.pth.notmine.tmp", tmp_path / ".best.pth.999999999.abcd1234.tmp",
              tmp_path / ".last.pth.999999999.abcd1234.tmp.keep"]
    for f in (dead, old_style, alive, *others):
        f.write_bytes(b"partial")
    with _Records("lsnet.models.checkpoint") as log:
        save_checkpoint({"w": torch.zeros(2)}, target)
    assert not dead.exists() and not old_style.exists()
    assert alive.exists() and all(f.exists() for f in others)
    assert "removed 2 temporary file(s) left by an interrupted save" in log.text()
    assert sorted(p.name for p in tmp_path.glob(".last.pth.*.tmp")) == sorted([alive.name, others[0].name])
    assert torch.equal(open_checkpoint(target).state_dict()["w"], torch.zeros(2))


def test_atomic_write_into_an_unwritable_place_is_one_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="cannot write"):
        atomic_write(tmp_path / "file" / "last.pth", lambda tmp: None)
