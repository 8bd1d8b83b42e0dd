"""Data and evaluation layer for dense prediction: synthetic shapes, COCO / ADE20K datasets, metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_util  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from lsnet.data import DataError  # noqa: E402
from lsnet.dense.datasets import (ADE20KSegmentation, CocoDetection, DenseDataError, DetectionTransform,  # noqa: E402
                                  SegmentationTransform, collate_detection, shapes_ade, shapes_coco)
from lsnet.dense.metrics import SegmentationMetric, coco_evaluate  # noqa: E402
from lsnet.dense.shapes import (ADE_CLASSES, IGNORE_LABEL, SHAPE_CLASSES, _background,  # noqa: E402
                                make_shape_crops, make_shapes, render_scene, render_shape_crop)

# pycocotools 2.0.x's mask decoding trips a numpy 2 DeprecationWarning inside its own Cython code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SIZE = ((72, 100), (90, 130))
NUM_TRAIN, NUM_VAL = 6, 3


def _make(root, seed=0, workers=1):
    return make_shapes(root, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=seed, size_range=SIZE, max_objects=4,
                       workers=workers)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    summary = _make(root)
    return root, summary


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tight_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1 - int(xs.min()), int(ys.max()) + 1 - int(ys.min())]


# --------------------------------------------------------------------------- generator


def test_make_shapes_is_reproducible(shapes, tmp_path):
    root, _ = shapes
    _make(tmp_path / "again", seed=0, workers=2)  # rendered by a process pool: same bytes
    a, b = _files(root), _files(tmp_path / "again")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), "same seed must give byte-identical files"
    _make(tmp_path / "other", seed=1)
    c = _files(tmp_path / "other")
    ann = "coco/annotations/instances_train.json"
    assert c[ann] != a[ann]
    pngs = [k for k in a if k.startswith("coco/train/images/")]
    assert all(c[k] != a[k] for k in pngs), "a different seed must give different images"


def test_shape_crops_are_an_image_folder_and_reproducible(tmp_path):
    from lsnet.data.folder import scan_image_folder

    summary = make_shape_crops(tmp_path / "a", num_train=40, num_val=30, size=32, workers=1, progress=False)
    assert sum(summary["splits"]["train"].values()) == 40 and sum(summary["splits"]["val"].values()) == 30
    class_names, samples = scan_image_folder(tmp_path / "a")  # the layout lsnet train reads
    assert sorted(class_names) == sorted(SHAPE_CLASSES) and len(samples["train"]) == 40
    for split, sub in (("train", 2), ("val", 3)):  # each file sits under the kind its stream draws
        for path in sorted((tmp_path / "a" / split).rglob("*.png"))[:8]:
            img, k = render_shape_crop(np.random.default_rng([0, sub, int(path.stem)]), 32)
            assert path.parent.name == SHAPE_CLASSES[k]
            assert np.array_equal(np.asarray(Image.open(path)), img)
    make_shape_crops(tmp_path / "b", num_train=40, num_val=30, size=32, workers=2, progress=False)
    assert _files(tmp_path / "a") == _files(tmp_path / "b"), "a process pool must write the same bytes"
    with pytest.raises(ValueError, match="size"):
        make_shape_crops(tmp_path / "c", size=8)
    with pytest.raises(ValueError, match="num_train and num_val"):
        make_shape_crops(tmp_path / "c", num_val=0)


def test_shape_crop_draws_one_centred_shape_over_the_background():
    for i in range(20):
        img, k = render_shape_crop(np.random.default_rng([5, i]), 64)
        background = _background(np.random.default_rng([5, i]), 64, 64)  # the first draws of the same stream
        changed = np.abs(img.astype(float) - np.clip(np.rint(background), 0, 255)).max(-1) > 0.5
        ys, xs = np.nonzero(changed)
        # the shape sits near the middle and covers a plausible share (radius 20-45 % of the side)
        assert 0.3 * 64 < ys.mean() < 0.7 * 64 and 0.3 * 64 < xs.mean() < 0.7 * 64
        frac = changed.mean()
        assert 0.03 < frac < 0.65, (SHAPE_CLASSES[k], frac)
        if SHAPE_CLASSES[k] == "star":  # a star fills much less of its box than a circle or square
            assert changed.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)) < 0.6
        if SHAPE_CLASSES[k] == "circle":
            assert changed.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)) > 0.6


def test_generated_set_is_recognised_by_its_parameters(shapes, tmp_path):
    from lsnet.dense.shapes import is_generated

    root, _ = shapes
    params = dict(num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0, size_range=SIZE, max_objects=4)
    assert is_generated(root, **params)
    assert not is_generated(root, **{**params, "num_train": NUM_TRAIN + 1})
    assert not is_generated(tmp_path)  # nothing there


def test_make_shapes_layout_and_summary(shapes):
    root, summary = shapes
    assert summary["class_names"] == list(SHAPE_CLASSES) and len(SHAPE_CLASSES) >= 4
    assert summary["seg_class_names"] == list(ADE_CLASSES) == ["background", *SHAPE_CLASSES]
    assert json.loads((root / "ade" / "classes.json").read_text()) == list(ADE_CLASSES)
    for split, ade_split, n in (("train", "training", NUM_TRAIN), ("val", "validation", NUM_VAL)):
        info = summary["splits"][split]
        assert info["num_images"] == n
        data = json.loads((root / "coco" / "annotations" / f"instances_{split}.json").read_text())
        assert len(data["images"]) == n and len(data["annotations"]) == info["num_annotations"] > 0
        assert len(list((root / "coco" / split / "images").glob("*.png"))) == n
        assert len(list((root / "ade" / "images" / ade_split).glob("*.jpg"))) == n
        assert len(list((root / "ade" / "annotations" / ade_split).glob("*.png"))) == n
        sizes = set()
        for img in data["images"]:
            h, w = img["height"], img["width"]
            sizes.add((h, w))
            assert h != w and h % 64 and w % 64
            with Image.open(root / "coco" / split / "images" / img["file_name"]) as im:
                assert im.size == (w, h) and im.mode == "RGB"
        assert len(sizes) > 1, "image sizes should vary"


def test_coco_json_is_valid_and_boxes_are_tight(shapes):
    root, _ = shapes
    for split in ("train", "val"):
        coco = COCO(str(root / "coco" / "annotations" / f"instances_{split}.json"))
        assert sorted(coco.getCatIds()) == list(range(1, len(SHAPE_CLASSES) + 1))
        for ann in coco.dataset["annotations"]:
            img = coco.imgs[ann["image_id"]]
            mask = coco.annToMask(ann)
            assert mask.shape == (img["height"], img["width"])
            assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
            assert ann["area"] == int(mask.sum()) > 0
            assert ann["bbox"] == _tight_box(mask)
        # Visible masks of one image never overlap: occlusion is resolved before annotating.
        for image_id in coco.getImgIds():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            if anns:
                total = sum(coco.annToMask(a).astype(int) for a in anns)
                assert total.max() <= 1


def test_ade_labels_match_coco_masks(shapes):
    root, _ = shapes
    coco = COCO(str(root / "coco" / "annotations" / "instances_train.json"))
    for img in coco.dataset["images"]:
        stem = f"shapes_train_{img['id']:08d}"
        label = np.asarray(Image.open(root / "ade" / "annotations" / "training" / f"{stem}.png"))
        assert Image.open(root / "ade" / "annotations" / "training" / f"{stem}.png").mode == "L"
        assert label.shape == (img["height"], img["width"])
        assert label.max() <= len(ADE_CLASSES)
        covered = np.zeros(label.shape, dtype=bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m = coco.annToMask(ann).astype(bool)
            assert (label[m] == ann["category_id"] + 1).all()
            covered |= m
        # Every shape-class pixel belongs to an annotated instance; everything else is background/ignore.
        assert ((label >= 2) == covered).all()
        # The ADE copy shows the same picture (up to JPEG loss).
        jpg = np.asarray(Image.open(root / "ade" / "images" / "training" / f"{stem}.jpg"), dtype=float)
        png = np.asarray(Image.open(root / "coco" / "train" / "images" / img["file_name"]), dtype=float)
        assert np.abs(jpg - png).mean() < 8


def test_heavily_occluded_shapes_are_dropped_and_ignored():
    seen_ignore = False
    for s in range(60):
        rng = np.random.default_rng([123, s])
        img, label, objects = render_scene(rng, 90, 110, max_objects=8)
        assert img.shape == (90, 110, 3) and img.dtype == np.uint8
        union = np.zeros(label.shape, dtype=bool)
        for cat, mask in objects:
            assert not (union & mask).any()
            union |= mask
            assert (label[mask] == cat + 1).all()
        ignore = label == IGNORE_LABEL
        assert not (ignore & union).any()
        seen_ignore |= bool(ignore.any())
    assert seen_ignore, "with 8 objects per scene some should be too occluded to annotate"


# --------------------------------------------------------------------------- CocoDetection


def test_coco_detection_items(shapes):
    root, _ = shapes
    ds = shapes_coco(root, "train", with_masks=True)
    assert len(ds) == NUM_TRAIN and ds.num_classes == len(SHAPE_CLASSES)
    assert ds.class_names == list(SHAPE_CLASSES)
    assert ds.label_to_cat_id == {i + 1: i + 1 for i in range(len(SHAPE_CLASSES))}
    assert isinstance(ds.coco, COCO)
    for i in range(len(ds)):
        image, t = ds[i]
        h, w = image.shape[-2:]
        assert image.dtype == torch.float32 and image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1
        n = len(t["labels"])
        assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= 5)).all()
        assert t["masks"].shape == (n, h, w) and t["masks"].dtype == torch.uint8
        assert t["area"].shape == (n,) and t["iscrowd"].shape == (n,) and isinstance(t["image_id"], int)
        for box, m in zip(t["boxes"], t["masks"]):
            x, y, bw, bh = _tight_box(m.numpy())
            assert box.tolist() == [x, y, x + bw, y + bh]
    assert "masks" not in shapes_coco(root, "val")[0][1]
    images, targets = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_detection)))
    assert len(images) == len(targets) == 3 and targets[0]["image_id"] == ds.ids[0]


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        out.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def test_detection_transform_flip_and_resize(shapes):
    root, _ = shapes
    plain = shapes_coco(root, "train", with_masks=True)
    flip = shapes_coco(root, "train", with_masks=True, transforms=DetectionTransform(True, scales=None, hflip=1.0))
    for i in range(len(plain)):
        (im0, t0), (im1, t1) = plain[i], flip[i]
        assert torch.equal(im1, im0.flip(-1)) and torch.equal(t1["masks"], t0["masks"].flip(-1))
        assert torch.equal(t1["boxes"], _mask_boxes(t1["masks"]))  # masks and boxes flipped consistently
    torch.manual_seed(0)
    tf = DetectionTransform(True, scales=(60, 90, 130), max_size=150, hflip=0.5)
    ms = shapes_coco(root, "train", with_masks=True, transforms=tf)
    for _ in range(3):
        for i in range(len(ms)):
            im, t = ms[i]
            h, w = im.shape[-2:]
            assert min(h, w) in (60, 90, 130) or max(h, w) == 150
            assert max(h, w) <= 150 and t["masks"].shape[-2:] == (h, w)
            b = t["boxes"]
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            # Nearest resizing moves mask edges by at most about one (scaled) pixel.
            assert (t["boxes"] - _mask_boxes(t["masks"])).abs().max() <= 2.0
    ev = DetectionTransform(False, scales=(60, 90), max_size=1000)
    im, _ = ev(*plain[0])
    assert min(im.shape[-2:]) == 90


def _write_coco(tmp_path: Path, data, images=((1, "a.png", 30, 40),), write_images=True) -> tuple[Path, Path]:
    img_dir = tmp_path / "imgs"
    img_dir.mkdir(exist_ok=True)
    if write_images:
        for _, name, h, w in images:
            Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(img_dir / name)
    ann = tmp_path / "ann.json"
    ann.write_text(data if isinstance(data, str) else json.dumps(data))
    return img_dir, ann


def _coco_dict(images=((1, "a.png", 30, 40),), annotations=(), categories=((3, "cat"), (7, "dog"))):
    return {
        "images": [{"id": i, "file_name": f, "height": h, "width": w} for i, f, h, w in images],
        "annotations": list(annotations),
        "categories": [{"id": i, "name": n} for i, n in categories],
    }


def test_coco_detection_empty_image_and_category_mapping(tmp_path):
    images = ((1, "a.png", 30, 40), (2, "b.png", 20, 25))
    anns = [{"id": 5, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
            {"id": 6, "image_id": 1, "category_id": 3, "bbox": [1, 1, 0, 4], "area": 0, "iscrowd": 0,
             "segmentation": [[1, 1, 1, 5, 1, 5]]}]
    img_dir, ann = _write_coco(tmp_path, _coco_dict(images, anns), images)
    ds = CocoDetection(img_dir, ann, with_masks=True,
                       transforms=DetectionTransform(True, scales=(40,), max_size=100, hflip=0.0))
    assert ds.label_to_cat_id == {1: 3, 2: 7} and ds.class_names == ["cat", "dog"]
    assert ds.skipped_annotations == 1  # the zero-width box
    _, t = ds[0]
    assert t["labels"].tolist() == [2]
    image, t = ds[1]
    assert image.shape == (3, 40, 50)
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 40, 50)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64


def test_coco_detection_errors(tmp_path):
    img_dir, ann = _write_coco(tmp_path, _coco_dict())
    missing = tmp_path / "nope.json"
    with pytest.raises(DenseDataError, match="nope.json"):
        CocoDetection(img_dir, missing)
    _write_coco(tmp_path, "{not json")
    with pytest.raises(DenseDataError, match=r"ann\.json.*not valid JSON"):
        CocoDetection(img_dir, ann)
    d = _coco_dict()
    del d["categories"]
    _write_coco(tmp_path, d)
    with pytest.raises(DenseDataError, match=r"ann\.json.*categories"):
        CocoDetection(img_dir, ann)
    _write_coco(tmp_path, _coco_dict(images=((1, "a.png", 30, 40), (2, "gone.png", 30, 40))),
                images=((1, "a.png", 30, 40),))
    with pytest.raises(DenseDataError, match=r"gone\.png.*ann\.json") as e:
        CocoDetection(img_dir, ann)
    assert str(img_dir / "gone.png") in str(e.value)
    _write_coco(tmp_path, _coco_dict(images=()))
    with pytest.raises(DenseDataError, match=r"ann\.json lists no images"):
        CocoDetection(img_dir, ann)
    bad = {"id": 42, "image_id": 1, "category_id": 99, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}
    _write_coco(tmp_path, _coco_dict(annotations=[bad]))
    with pytest.raises(DenseDataError, match=r"ann\.json.*annotation 42.*category_id 99") as e:
        CocoDetection(img_dir, ann)
    assert isinstance(e.value, DataError) and isinstance(e.value, ValueError)


# --------------------------------------------------------------------------- ADE20K


def test_ade_items_and_labels(shapes):
    root, _ = shapes
    ds = shapes_ade(root, "val")
    assert len(ds) == NUM_VAL and ds.num_classes == len(ADE_CLASSES) and ds.class_names == list(ADE_CLASSES)
    for i in range(len(ds)):
        image, mask = ds[i]
        raw = np.asarray(Image.open(ds.samples[i][1])).astype(np.int64)
        assert image.dtype == torch.float32 and image.shape[0] == 3 and image.shape[-2:] == mask.shape
        assert mask.dtype == torch.int64
        expect = np.where(raw == 0, 255, raw - 1)  # reduce_zero_label
        assert np.array_equal(mask.numpy(), expect)
    stats = ds.validate_labels()
    assert stats["files"] == NUM_VAL and stats["pixels_per_class"][0] > 0  # background is present
    raw_ds = shapes_ade(root, "train", reduce_zero_label=False, num_classes=7)
    _, m = raw_ds[0]
    assert np.array_equal(m.numpy(), np.asarray(Image.open(raw_ds.samples[0][1])))
    assert raw_ds.class_names == ["other", *ADE_CLASSES]


def test_segmentation_transform(shapes):
    root, _ = shapes
    base = shapes_ade(root, "train")
    torch.manual_seed(0)
    tf = SegmentationTransform(True, crop_size=(64, 96), scale_range=(0.5, 1.5))
    ds = shapes_ade(root, "train", transforms=tf)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, 64, 96) and mask.shape == (64, 96) and mask.dtype == torch.int64
        vals = set(mask.unique().tolist())
        assert vals <= set(range(len(ADE_CLASSES))) | {255}
    # Crop larger than the image: padding is ignore (255) in the mask and 0 in the image.
    image0, mask0 = base[0]
    h, w = mask0.shape
    big = SegmentationTransform(True, crop_size=(h + 10, w + 20), scale_range=(1.0, 1.0), hflip=0.0)
    image, mask = big(image0, mask0)
    assert image.shape == (3, h + 10, w + 20)
    assert (mask == 255).sum() >= (h + 10) * (w + 20) - h * w
    assert mask.unique().numel() > 1
    # Same-size crop with certain flip: image and mask flip together.
    same = SegmentationTransform(True, crop_size=(h, w), scale_range=(1.0, 1.0), hflip=1.0)
    image, mask = same(image0, mask0)
    assert torch.equal(image, image0.flip(-1)) and torch.equal(mask, mask0.flip(-1))
    ev = SegmentationTransform(False)
    image, mask = ev(image0, mask0)
    assert image is image0 and mask is mask0
    image, mask = SegmentationTransform(False, eval_size=50)(image0, mask0)
    assert min(image.shape[-2:]) == 50 and mask.shape == mask0.shape


def _ade_tree(root: Path, stems_img=("a", "b"), stems_lbl=("a", "b"), value=3):
    for split in ("training",):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for s in stems_img:
            Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "images" / split / f"{s}.jpg")
        for s in stems_lbl:
            Image.fromarray(np.full((8, 10), value, np.uint8)).save(root / "annotations" / split / f"{s}.png")
    return root


def test_ade_errors(tmp_path):
    with pytest.raises(DenseDataError, match="nowhere"):
        ADE20KSegmentation(tmp_path / "nowhere")
    root = _ade_tree(tmp_path / "ok")
    with pytest.raises(DenseDataError, match=r"images[/\\]validation"):
        ADE20KSegmentation(root, "validation")
    assert len(ADE20KSegmentation(root, "training", num_classes=5)) == 2
    root = _ade_tree(tmp_path / "img_only", stems_img=("a", "b", "c"))
    with pytest.raises(DenseDataError, match=r"without a label PNG.*c\.jpg"):
        ADE20KSegmentation(root, "training")
    root = _ade_tree(tmp_path / "lbl_only", stems_lbl=("a", "b", "z"))
    with pytest.raises(DenseDataError, match=r"without an image.*z\.png"):
        ADE20KSegmentation(root, "training")
    root = _ade_tree(tmp_path / "empty", stems_img=(), stems_lbl=())
    with pytest.raises(DenseDataError, match="empty") as e:
        ADE20KSegmentation(root, "training")
    assert str(root / "images" / "training") in str(e.value)
    root = _ade_tree(tmp_path / "bad", value=9)
    ds = ADE20KSegmentation(root, "training", num_classes=5)  # construction stays cheap: values are checked later
    with pytest.raises(DenseDataError, match=r"a\.png contains value 9, outside 0\.\.5"):
        ds[0]
    with pytest.raises(DenseDataError, match=r"a\.png contains value 9"):
        ds.validate_labels()
    assert len(ADE20KSegmentation(root, "training", num_classes=9).validate_labels()["pixels_per_class"]) == 9


# --------------------------------------------------------------------------- COCO evaluation


def _gt_predictions(ds: CocoDetection) -> dict:
    preds = {}
    for i in range(len(ds)):
        _, t = ds[i]
        n = len(t["labels"])
        preds[t["image_id"]] = {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(n),
                                "masks": t["masks"][:, None].float()}
    return preds


def test_coco_evaluate_perfect_predictions(shapes):
    root, _ = shapes
    ds = shapes_coco(root, "train", with_masks=True)
    res = coco_evaluate(ds.coco, _gt_predictions(ds), iou_types=("bbox", "segm"), label_to_cat_id=ds.label_to_cat_id)
    for iou_type in ("bbox", "segm"):
        assert res[iou_type]["AP"] == pytest.approx(1.0)
        assert res[iou_type]["AP50"] == pytest.approx(1.0) and res[iou_type]["AP75"] == pytest.approx(1.0)
        assert all(v == -1 or 0 <= v <= 1 for v in res[iou_type].values())


def test_coco_evaluate_per_class(shapes):
    root, _ = shapes
    ds = shapes_coco(root, "train", with_masks=True)
    preds = _gt_predictions(ds)
    present = sorted({int(lb) for p in preds.values() for lb in p["labels"]})
    assert len(present) >= 2, "the fixture set should hold at least two kinds of shape"
    missed = present[0]  # drop every detection of one class: its AP is 0, the others stay perfect
    for p in preds.values():
        keep = p["labels"] != missed
        for k in ("boxes", "labels", "scores", "masks"):
            p[k] = p[k][keep]
    res = coco_evaluate(ds.coco, preds, iou_types=("bbox",), label_to_cat_id=ds.label_to_cat_id, per_class=True)
    per_class = res["bbox"]["per_class"]
    assert list(per_class) == list(SHAPE_CLASSES)
    for label, name in enumerate(SHAPE_CLASSES, start=1):
        expected = 0.0 if label == missed else (1.0 if label in present else -1.0)
        assert per_class[name]["AP"] == pytest.approx(expected) and per_class[name]["AP50"] == pytest.approx(expected)
    # the overall AP is the mean over the classes with ground truth
    assert res["bbox"]["AP"] == pytest.approx((len(present) - 1) / len(present))
    assert "per_class" not in coco_evaluate(ds.coco, preds, iou_types=("bbox",),
                                            label_to_cat_id=ds.label_to_cat_id)["bbox"]


def test_coco_evaluate_empty_predictions(shapes):
    root, _ = shapes
    ds = shapes_coco(root, "val", with_masks=True)
    res = coco_evaluate(ds.coco, {}, iou_types=("bbox", "segm"))
    assert res["bbox"]["AP"] == 0.0 and res["segm"]["AP"] == 0.0
    empty = {i: {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
                 "masks": torch.zeros(0, 1, 5, 5)} for i in ds.ids}
    res = coco_evaluate(ds.coco, empty, iou_types=("bbox", "segm"))
    assert res["bbox"]["AP"] == 0.0 and res["segm"]["AP"] == 0.0


def test_coco_evaluate_shifted_box_matches_cocoeval(tmp_path):
    # One 40x40 object; a prediction shifted 8 px right has IoU 32/48 = 0.667:
    # it matches at IoU thresholds 0.50..0.65 (4 of 10), so AP = 0.4, AP50 = 1, AP75 = 0.
    h, w = 100, 120
    gt_mask = np.zeros((h, w), np.uint8)
    gt_mask[10:50, 10:50] = 1
    rle = mask_util.encode(np.asfortranarray(gt_mask))
    ann = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0,
           "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}}
    img_dir, ann_file = _write_coco(tmp_path, _coco_dict(((1, "a.png", h, w),), [ann]), ((1, "a.png", h, w),))
    ds = CocoDetection(img_dir, ann_file, with_masks=True)
    pred_mask = np.roll(gt_mask, 8, axis=1)
    preds = {1: {"boxes": torch.tensor([[18.0, 10.0, 58.0, 50.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1]), "masks": torch.from_numpy(pred_mask.astype(bool))[None]}}
    res = coco_evaluate(ds.coco, preds, iou_types=("bbox", "segm"), label_to_cat_id=ds.label_to_cat_id)
    for iou_type in ("bbox", "segm"):
        r = res[iou_type]
        assert r["AP"] == pytest.approx(0.4) and r["AP50"] == pytest.approx(1.0) and r["AP75"] == 0.0
        assert r["APm"] == pytest.approx(0.4) and r["APs"] == -1.0 and r["APl"] == -1.0
    # Independently: COCOeval driven by hand on the same ground-truth file.
    coco_gt = COCO(str(ann_file))
    dt = coco_gt.loadRes([{"image_id": 1, "category_id": 3, "bbox": [18.0, 10.0, 40.0, 40.0], "score": 0.9}])
    ev = COCOeval(coco_gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert res["bbox"]["AP"] == pytest.approx(float(ev.stats[0]))
    assert res["bbox"]["AP50"] == pytest.approx(float(ev.stats[1]))


def test_coco_evaluate_rejects_unknown_images_and_labels(shapes):
    root, _ = shapes
    ds = shapes_coco(root, "val")
    one = {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([9])}
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_evaluate(ds.coco, {999: one})
    with pytest.raises(ValueError, match="label_to_cat_id"):
        coco_evaluate(ds.coco, {ds.ids[0]: one}, label_to_cat_id=ds.label_to_cat_id)


# --------------------------------------------------------------------------- SegmentationMetric


def test_segmentation_metric_hand_example():
    # 4 classes; class 3 appears in neither prediction nor target; one pixel is ignored.
    target = torch.tensor([[0, 0, 1], [1, 255, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 0]])
    # confusion [target, pred]: (0,0)=1 (0,1)=1 (1,1)=2 (2,0)=1
    # IoU0 = 1/(2+2-1) = 1/3, IoU1 = 2/(2+3-2) = 2/3, IoU2 = 0/1 = 0, IoU3 = nan
    m = SegmentationMetric(4)
    m.update(pred[0], target[0])  # two updates accumulate like one
    m.update(pred[1:], target[1:])
    r = m.compute()
    assert r["per_class_iou"][:3] == pytest.approx([1 / 3, 2 / 3, 0.0]) and math.isnan(r["per_class_iou"][3])
    assert r["mIoU"] == pytest.approx(1 / 3)
    assert r["pixel_acc"] == pytest.approx(3 / 5)
    assert r["mAcc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    expected = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(m.confusion, expected)
    # logits are reduced by argmax; the result is the same
    logits = torch.nn.functional.one_hot(pred.clamp(max=3), 4).permute(2, 0, 1).float()[None]
    m2 = SegmentationMetric(4)
    m2.update(logits, target[None])
    assert torch.equal(m2.confusion, expected)
    with pytest.raises(ValueError):
        m2.update(torch.tensor([[4]]), torch.tensor([[0]]))
    m.reset()
    assert m.confusion.sum() == 0 and math.isnan(m.compute()["mIoU"])


def test_segmentation_crop_respects_cat_max_ratio():
    # A 30x30 square of class 3 in a 100x100 background: most 40x40 crops are (nearly) all background.
    image = torch.rand(3, 100, 100)
    mask = torch.zeros(100, 100, dtype=torch.int64)
    mask[60:90, 10:40] = 3

    def fraction_ok(ratio, draws=200):
        torch.manual_seed(0)
        tf = SegmentationTransform(True, crop_size=40, scale_range=(1.0, 1.0), hflip=0.0, cat_max_ratio=ratio)
        ok = 0
        for _ in range(draws):
            _, m = tf(image, mask)
            counts = torch.bincount(m.flatten(), minlength=4)
            counts = counts[counts > 0]
            ok += int(len(counts) > 1 and counts.max() < 0.75 * counts.sum())
        return ok / draws

    # One crop position in six qualifies (counted over all 61x61 positions); ten tries: 1 - (5/6)^10 = 0.84.
    plain, redrawn = fraction_ok(1.0), fraction_ok(0.75)
    assert plain < 0.3 and redrawn > 0.7
    with pytest.raises(ValueError, match="cat_max_ratio"):
        SegmentationTransform(True, cat_max_ratio=0.0)
