"""DOTA-format data for oriented detection: labels, dataset, augmentation, splitting, evaluation,
the synthetic aerial set and drawing (lsnet.rotated)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lsnet.data.folder import DataError
from lsnet.ops.rotated_boxes import obb_to_poly, poly_to_obb
from lsnet.rotated import aerial, dota, evaluation, split, visualize

CLASSES = ("plane", "ship", "storage-tank")


def _write_split(root: Path, items: dict, classes=CLASSES, size=(120, 160)) -> Path:
    """A DOTA folder: ``items`` maps stem -> list of (poly(8), class name, difficult)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, objects in items.items():
        img = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        lines = ["imagesource:GoogleEarth", "gsd:0.5"]
        for poly, name, diff in objects:
            lines.append(" ".join(str(v) for v in poly) + f" {name} {diff}")
        (root / "labelTxt" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return root


def _rect(cx, cy, w, h, angle=0.0):
    return obb_to_poly(torch.tensor([cx, cy, w, h, angle], dtype=torch.float64)).tolist()


# =========================================================================== labels


def test_read_dota_labels(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("imagesource:GoogleEarth\ngsd:0.146\n\n10 10 30 10 30 20 10 20 ship 1\n"
                 "1 2 3 2 3 4 1 4 plane\n5 5 9 5 9 9 5 9 storage-tank 2\n")
    ann = dota.read_dota_labels(p, CLASSES)
    assert ann["polys"].dtype == np.float32 and ann["polys"].shape == (3, 8)
    assert ann["labels"].tolist() == [1, 0, 2] and ann["labels"].dtype == np.int64
    assert ann["difficult"].tolist() == [True, False, True]
    assert ann["difficulty"].tolist() == [1, 0, 2]
    empty = tmp_path / "empty.txt"
    empty.write_text("gsd:null\n")
    assert dota.read_dota_labels(empty, CLASSES)["polys"].shape == (0, 8)
    assert len(dota.DOTA_V1_CLASSES) == 15 and dota.DOTA_V1_CLASSES[9] == "storage-tank"
    assert dota.DOTA_V1_CLASSES[11] == "roundabout"


@pytest.mark.parametrize("line, words", [
    ("10 10 30 10 30 20 10 ship 0", "7 coordinates instead of 8"),
    ("10 10 30 10 30 20 10 20 5 ship 0", "9 coordinates instead of 8"),
    ("10 10 30 10 30 20 10 20", "no class name"),
    ("10 10 30 10 30 20 10 20 boat 0", "unknown class 'boat'"),
    ("10 10 30 x 30 20 10 20 ship 0", "coordinate 4 is not a number"),
    ("10 10 30 10 30 20 10 nan ship 0", "not finite"),
    ("10 10 30 10 30 20 10 20 ship yes", "difficult flag"),
])
def test_read_dota_labels_errors_name_file_and_line(tmp_path, line, words):
    p = tmp_path / "bad.txt"
    p.write_text("gsd:0.5\n1 2 3 2 3 4 1 4 plane 0\n" + line + "\n")
    with pytest.raises(DataError) as err:
        dota.read_dota_labels(p, CLASSES)
    assert f"{p}, line 3" in str(err.value) and words in str(err.value)


# =========================================================================== dataset


def test_dataset_items_and_classes(tmp_path):
    root = _write_split(tmp_path / "train", {
        "P0001": [(_rect(50, 40, 30, 10, 0.3), "ship", 0), (_rect(100, 60, 20, 20), "storage-tank", 1)],
        "P0002": [],
    })
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    ds = dota.DotaDataset(root)
    assert ds.classes == CLASSES and ds.classes_source.endswith("classes.txt") and len(ds) == 2
    image, target = ds[0]
    assert image.shape == (3, 120, 160) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert target["name"] == "P0001" and target["image_size"] == (120, 160)
    assert target["boxes"].shape == (2, 5) and target["boxes"].dtype == torch.float32
    assert torch.allclose(target["boxes"][0], torch.tensor([50, 40, 30, 10, 0.3]), atol=1e-4)
    assert target["labels"].tolist() == [1, 2] and target["difficult"].tolist() == [False, True]
    assert target["polys"].shape == (2, 8)
    b = target["boxes"]
    assert (b[:, 2] >= b[:, 3]).all() and (b[:, 4] >= -math.pi / 2).all() and (b[:, 4] < math.pi / 2).all()
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 5) and empty["labels"].shape == (0,)
    images, targets = dota.collate([ds[0], ds[1]])
    assert len(images) == 2 and [t["name"] for t in targets] == ["P0001", "P0002"]
    # root/classes.txt wins over the parent's; the argument over both; DOTA v1.0 without any
    (root / "classes.txt").write_text("ship\nplane\nstorage-tank\n")
    assert dota.DotaDataset(root)[0][1]["labels"].tolist() == [0, 2]
    assert dota.DotaDataset(root, classes=["storage-tank", "ship", "plane"])[0][1]["labels"].tolist() == [1, 0]
    (root / "classes.txt").unlink()
    (tmp_path / "classes.txt").unlink()
    ds = dota.DotaDataset(root)
    assert ds.classes == dota.DOTA_V1_CLASSES and ds[0][1]["labels"].tolist() == [6, 9]


def test_dataset_errors_at_construction(tmp_path):
    root = _write_split(tmp_path / "s", {"P1": [(_rect(50, 40, 30, 10), "ship", 0)]})
    Image.new("RGB", (20, 20)).save(root / "images" / "P2.png")
    with pytest.raises(DataError, match=r"P2\.png: image without a label file"):
        dota.DotaDataset(root, classes=CLASSES)
    (root / "images" / "P2.png").unlink()
    (root / "labelTxt" / "P3.txt").write_text("")
    with pytest.raises(DataError, match=r"P3\.txt: label file without an image"):
        dota.DotaDataset(root, classes=CLASSES)
    (root / "labelTxt" / "P3.txt").unlink()
    (root / "labelTxt" / "P1.txt").write_text("1 2 3 4 5 6 7 8 ship 0\n1 2 3 4 5 6 7 car 0\n")
    with pytest.raises(DataError, match=r"P1\.txt, line 2"):
        dota.DotaDataset(root, classes=CLASSES)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labelTxt").mkdir()
    with pytest.raises(DataError, match="no images"):
        dota.DotaDataset(empty)
    with pytest.raises(DataError, match="does not exist"):
        dota.DotaDataset(tmp_path / "missing")


# =========================================================================== augmentation


def _scene(h=64, w=96):
    """An image with two bright rectangles and their targets (labels 0 and 2)."""
    boxes = torch.tensor([[30.0, 20.0, 20.0, 8.0, 0.4], [70.0, 44.0, 12.0, 12.0, 0.0]])
    polys = obb_to_poly(boxes)
    image = torch.zeros(3, h, w)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for k, (cx, cy, bw, bh, a) in enumerate(boxes.tolist()):
        u = (xs - cx) * math.cos(a) + (ys - cy) * math.sin(a)
        v = -(xs - cx) * math.sin(a) + (ys - cy) * math.cos(a)
        image[k, (u.abs() <= bw / 2) & (v.abs() <= bh / 2)] = 1.0
    target = {"boxes": boxes, "labels": torch.tensor([0, 2]), "difficult": torch.tensor([False, True]),
              "polys": polys, "name": "x"}
    return image, target


def _box_pixels_lit(image, boxes):
    """Mean of each box's channel (box k drawn in channel k) over a small core around its centre."""
    out = []
    for k, (cx, cy, *_rest) in enumerate(boxes.tolist()):
        x, y = int(cx), int(cy)
        out.append(float(image[k, y - 1:y + 2, x - 1:x + 2].mean()))
    return out


def _same_rects(a, b, atol=1e-3):
    pa, pb = obb_to_poly(a).reshape(-1, 4, 2), obb_to_poly(b).reshape(-1, 4, 2)
    for qa, qb in zip(pa, pb):
        d = torch.cdist(qa.double(), qb.double())
        if d.min(dim=1).values.max() > atol:
            return False
    return True


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_flip_moves_boxes_with_the_image(direction):
    image, target = _scene()
    fimg, ft = dota.RandomRotatedFlip.flip(image, target, direction)
    assert min(_box_pixels_lit(fimg, ft["boxes"])) == 1.0
    assert _same_rects(ft["boxes"], poly_to_obb(ft["polys"]))
    b = ft["boxes"]
    assert (b[:, 4] >= -math.pi / 2).all() and (b[:, 4] < math.pi / 2).all()
    back_img, back = dota.RandomRotatedFlip.flip(fimg, ft, direction)
    assert torch.equal(back_img, image) and _same_rects(back["boxes"], target["boxes"])
    assert torch.allclose(back["polys"], target["polys"], atol=1e-5)


def test_flip_probabilities_and_seeding():
    image, target = _scene()
    t = dota.RandomRotatedFlip()
    torch.manual_seed(3)
    first = [t(image, target)[0] for _ in range(40)]
    torch.manual_seed(3)
    second = [t(image, target)[0] for _ in range(40)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    kinds = {tuple(torch.equal(x, image.flip(d)) for d in ([-1], [-2], [-1, -2])) for x in first}
    assert len(kinds) == 4  # each flip and no flip happen


def test_rotate_matches_rot90_and_keeps_boxes_on_objects():
    image, target = _scene(h=80, w=80)
    rimg, rt = dota.RandomPolyRotate.rotate(image, target, 90.0)
    # a positive angle turns the picture counter-clockwise on screen (OpenCV's convention)
    assert torch.allclose(rimg, torch.rot90(image, 1, dims=(-2, -1)), atol=1e-5)
    assert min(_box_pixels_lit(rimg, rt["boxes"])) > 0.99
    assert _same_rects(rt["boxes"], poly_to_obb(rt["polys"]))
    rimg, rt = dota.RandomPolyRotate.rotate(image, target, 33.0)
    assert min(_box_pixels_lit(rimg, rt["boxes"])) > 0.9
    assert torch.allclose(rt["boxes"][:, 2:4], target["boxes"][:, 2:4], atol=1e-4)
    b = rt["boxes"]
    assert (b[:, 4] >= -math.pi / 2).all() and (b[:, 4] < math.pi / 2).all()


def test_random_rotate_rect_classes_filtering_and_seed():
    image, target = _scene(h=80, w=80)
    t = dota.RandomPolyRotate(rotate_ratio=1.0, rect_classes=[2])
    torch.manual_seed(0)
    for _ in range(10):
        _, rt = t(image, target)
        # the axis-aligned square of the rect class stays axis-aligned
        a = float(rt["boxes"][rt["labels"] == 2][0, 4]) if (rt["labels"] == 2).any() else 0.0
        assert min(abs(a), abs(a + math.pi / 2)) < 1e-4
    # boxes whose centre leaves the image, or with a side <= min_size, are dropped
    image, target = _scene(h=80, w=80)
    target["boxes"] = torch.tensor([[2.0, 2.0, 10.0, 8.0, 0.0], [40.0, 40.0, 20.0, 4.0, 0.0],
                                    [40.0, 60.0, 20.0, 10.0, 0.0]])
    target["polys"] = obb_to_poly(target["boxes"])
    target["labels"] = torch.tensor([0, 1, 0])
    target["difficult"] = torch.tensor([False, False, True])
    kept = dota.RandomPolyRotate(rotate_ratio=0.0)(image, target)[1]  # filtered even when not rotating
    assert kept["labels"].tolist() == [0, 0] and kept["difficult"].tolist() == [False, True]
    _, rt = dota.RandomPolyRotate.rotate(image, target, 45.0)  # the corner box's centre leaves the image
    rt = dota.RandomPolyRotate()._filter(rt, 80, 80)
    assert rt["labels"].tolist() == [0] and rt["difficult"].tolist() == [True] and len(rt["polys"]) == 1
    t = dota.dota_train_transform(CLASSES)
    assert t.transforms[1].rect_classes == (2,)
    torch.manual_seed(5)
    a = t(*_scene())
    torch.manual_seed(5)
    b = t(*_scene())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


# =========================================================================== split and merge


def test_sliding_windows_follow_mmrotate():
    win = split.sliding_windows(2000, 1500, [1024], [200])
    xs, ys = sorted({int(w[0]) for w in win}), sorted({int(w[1]) for w in win})
    assert xs == [0, 824, 976] and ys == [0, 476]  # last window moved back to the border
    assert ((win[:, 2] - win[:, 0]) == 1024).all()
    small = split.sliding_windows(500, 700, [1024], [200])
    assert small.tolist() == [[0, 0, 1024, 1024]]  # one (padded) window, kept though it is mostly empty
    # windows mostly outside the image are dropped (img_rate_thr 0.6)
    assert split.sliding_windows(1100, 900, [1024], [200]).tolist() == [[0, 0, 1024, 1024], [76, 0, 1100, 1024]]


def test_clip_polygon_and_iof():
    sq = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=float)
    assert split.polygon_area(split.clip_polygon(sq, 5, -1, 20, 20)) == pytest.approx(50.0)
    diamond = np.array([[5, 0], [10, 5], [5, 10], [0, 5]], dtype=float)
    assert split.polygon_area(split.clip_polygon(diamond, 0, 0, 5, 10)) == pytest.approx(25.0)
    iof = split.window_iof(np.concatenate([sq.reshape(-1), diamond.reshape(-1)])[None].reshape(2, 8),
                           np.array([[0, 0, 100, 100], [5, 0, 105, 100], [50, 50, 60, 60]]))
    assert np.allclose(iof, [[1.0, 0.5, 0.0], [1.0, 0.5, 0.0]])


def test_split_dota_patches_labels_and_merge(tmp_path):
    objects = [
        (_rect(30, 30, 20, 10, 0.2), "plane", 0),      # inside the first window only
        (_rect(100, 60, 16, 8, -0.5), "ship", 1),      # in the overlap: in two windows, difficult kept
        (_rect(124, 100, 20, 10, 0.0), "ship", 0),     # cut at x=128: iof 0.7 in window 0 (flag 2)
        (_rect(96, 150, 40, 8, 0.0), "plane", 0),      # only in the lower left window
    ]
    src = _write_split(tmp_path / "src", {"P7": objects}, size=(170, 220))
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    out = split.split_dota(src, tmp_path / "dst", patch_size=128, gap=32, workers=1, progress=False)
    names = sorted(p.stem for p in (tmp_path / "dst" / "images").iterdir())
    # x starts 0, 92 (=220-128); y starts 0, 42 (=170-128)
    assert names == ["P7__128__0___0", "P7__128__0___42", "P7__128__92___0", "P7__128__92___42"]
    lines = sum(len(p.read_text().splitlines()) for p in (tmp_path / "dst" / "labelTxt").iterdir())
    assert out["num_patches"] == 4 and out["num_images"] == 1 and out["num_objects"] == lines >= 6 and (tmp_path / "dst" / "classes.txt").is_file()
    for n in names:
        assert Image.open(tmp_path / "dst" / "images" / f"{n}.png").size == (128, 128)
    ds = dota.DotaDataset(tmp_path / "dst")
    by_name = {ds.names[i]: ds.annotation(i) for i in range(len(ds))}
    first = by_name["P7__128__0___0"]
    assert first["labels"].tolist() == [0, 1, 1]
    assert torch.allclose(first["polys"][0], torch.tensor(objects[0][0], dtype=torch.float32), atol=1e-3)
    raw = dota.read_dota_labels(tmp_path / "dst" / "labelTxt" / "P7__128__0___0.txt", CLASSES)
    assert raw["difficulty"].tolist() == [0, 1, 2]
    assert raw["polys"][2].max() > 128  # the cut polygon is not clipped
    # merging the ground truth of every patch gives back the image's objects
    results = {n: (t["boxes"], torch.linspace(0.9, 0.5, len(t["boxes"])), t["labels"]) for n, t in by_name.items()}
    merged = split.merge_patch_detections(results)
    assert list(merged) == ["P7"]
    boxes, scores, labels = merged["P7"]
    truth = poly_to_obb(torch.tensor([o[0] for o in objects], dtype=torch.float64))
    assert len(boxes) == 4 and scores.is_floating_point() and labels.dtype == torch.int64
    assert (scores[:-1] >= scores[1:]).all()
    assert _same_rects(boxes.double(), truth) and _same_rects(truth, boxes.double())
    with pytest.raises(DataError, match="not a patch name"):
        split.merge_patch_detections({"P7": results["P7__128__0___0"]})
    assert split.parse_patch_name("P0001__1024__0___824") == ("P0001", 1024, 0, 824)


# =========================================================================== evaluation


def _annotations():
    return {
        "A": {"boxes": torch.tensor([[50.0, 50, 30, 10, 0.3], [200.0, 200, 20, 20, 0], [300.0, 80, 40, 12, -1.0]]),
              "labels": torch.tensor([0, 0, 1]), "difficult": torch.tensor([False, True, False])},
        "B": {"boxes": torch.tensor([[400.0, 300, 24, 10, 0.1], [100.0, 100, 20, 10, 0.0]]),
              "labels": torch.tensor([0, 1]), "difficult": torch.tensor([False, False])},
        "C": {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.long)},
    }


def test_evaluate_dota_perfect():
    ann = _annotations()
    dets = {k: (v["boxes"], torch.ones(len(v["boxes"])), v["labels"]) for k, v in ann.items()}
    for use_07 in (True, False):
        r = evaluation.evaluate_dota(dets, ann, num_classes=3, use_07_metric=use_07)
        assert r["mAP"] == pytest.approx(1.0) and r["ap"][:2] == pytest.approx([1.0, 1.0])
        assert r["num_gts"] == [2, 2, 0] and r["recall"][:2] == [1.0, 1.0]


def test_evaluate_dota_hand_worked():
    # Class 0: gts g1 (A, 50,50), g2 (A, difficult), g3 (B, 400,300) -> 2 counted gts.
    #   d1 0.9 = g1 -> TP;  d2 0.8 = g1 again -> FP (duplicate);  d3 0.7 = g2 -> ignored (difficult);
    #   d4 0.6 far from everything (B) -> FP;  g3 is missed.
    #   cumulative tp 1,1,1,1  fp 0,1,1,2  -> recall .5,.5,.5,.5  precision 1, .5, .5, 1/3
    #   VOC07: levels 0, .1, .., .5 have max precision 1, levels .6 .. 1 none -> AP = 6/11
    #   area: envelope 1 up to recall .5, then 0 -> AP = .5 * 1 = 0.5
    # Class 1: gts g4 (A), g5 (B, 100,100,20x10).
    #   d5 0.95 on B shifted by 10 px: IoU 100/300 = 1/3 < .5 -> FP;  d6 0.5 = g4 -> TP;  d7 0.4 = g5 -> TP
    #   tp 0,1,2  fp 1,1,1 -> recall 0,.5,1  precision 0,.5,2/3
    #   VOC07: every level has max precision 2/3 at recall 1 -> AP = 2/3; area: 2/3 as well
    # Class 2: one detection (FP) but no ground truth -> AP 0, left out of the mAP.
    ann = _annotations()
    a, b = ann["A"]["boxes"], ann["B"]["boxes"]
    dets = {
        "A": (torch.stack([a[0], a[0], a[1], a[2], torch.tensor([10.0, 10, 5, 5, 0])]),
              torch.tensor([0.9, 0.8, 0.7, 0.5, 0.3]), torch.tensor([0, 0, 0, 1, 2])),
        "B": (torch.stack([torch.tensor([600.0, 600, 10, 10, 0]), torch.tensor([110.0, 100, 20, 10, 0]), b[1]]),
              torch.tensor([0.6, 0.95, 0.4]), torch.tensor([0, 1, 1])),
    }
    r07 = evaluation.evaluate_dota(dets, ann, num_classes=3)
    assert r07["ap"] == pytest.approx([6 / 11, 2 / 3, 0.0])
    assert r07["mAP"] == pytest.approx((6 / 11 + 2 / 3) / 2)
    assert r07["num_gts"] == [2, 2, 0] and r07["num_dets"] == [4, 3, 1]
    assert r07["recall"] == pytest.approx([0.5, 1.0, 0.0])
    area = evaluation.evaluate_dota(dets, ann, num_classes=3, use_07_metric=False)
    assert area["ap"] == pytest.approx([0.5, 2 / 3, 0.0])
    assert area["mAP"] == pytest.approx((0.5 + 2 / 3) / 2)
    table = evaluation.format_dota_table(r07, ["plane", "ship", "tank"])
    assert "| plane | 2 | 4 | 50.00 | 54.55 |" in table and "**60.61**" in table
    with pytest.raises(DataError, match="merge_patch_detections"):
        evaluation.evaluate_dota({"A__1024__0___0": dets["A"]}, ann, num_classes=3)


def test_write_dota_task1(tmp_path):
    dets = {"P1": (torch.tensor([[50.0, 50, 20, 10, 0]]), torch.tensor([0.5]), torch.tensor([1])),
            "P0": (torch.tensor([[10.0, 20, 4, 2, 0], [30, 30, 4, 2, 0]]), torch.tensor([0.3, 0.9]),
                   torch.tensor([1, 0]))}
    paths = evaluation.write_dota_task1(dets, ["plane", "ship"], tmp_path / "sub")
    assert [p.name for p in paths] == ["Task1_plane.txt", "Task1_ship.txt"]
    ship = paths[1].read_text().splitlines()
    assert ship[0] == "P0 0.300000 8.00 19.00 12.00 19.00 12.00 21.00 8.00 21.00"
    assert ship[1].startswith("P1 0.500000 40.00 45.00")
    assert paths[0].read_text().splitlines() == ["P0 0.900000 28.00 29.00 32.00 29.00 32.00 31.00 28.00 31.00"]


# =========================================================================== synthetic aerial set


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_make_aerial_deterministic_and_readable(tmp_path):
    kw = {"num_train": 2, "num_val": 1, "size_range": ((260, 300), (330, 380)), "progress": False}
    summary = aerial.make_aerial(tmp_path / "a", seed=1, workers=1, **kw)
    assert summary["splits"]["val"]["num_images"] == 1 and summary["splits"]["train"]["num_objects"] > 0
    aerial.make_aerial(tmp_path / "b", seed=1, workers=2, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    aerial.make_aerial(tmp_path / "c", seed=2, workers=1, **kw)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    root = tmp_path / "a"
    assert (root / "classes.txt").read_text().split() == list(aerial.AERIAL_CLASSES)
    assert aerial.is_generated(root) and aerial.is_generated(root, num_train=2, num_val=1, seed=1,
                                                             size_range=((260, 300), (330, 380)))
    assert not aerial.is_generated(root, seed=0)
    total = 0
    for split_name, n in (("train", 2), ("val", 1)):
        ds = dota.DotaDataset(root / split_name)
        assert ds.classes == aerial.AERIAL_CLASSES and len(ds) == n
        for i in range(n):
            image, target = ds[i]
            h, w = image.shape[1:]
            assert h != w and 260 <= h <= 300
            p = target["polys"]
            assert (p[:, 0::2] >= 0).all() and (p[:, 0::2] <= w).all()
            assert (p[:, 1::2] >= 0).all() and (p[:, 1::2] <= h).all()
            total += len(p)
    assert total >= 10


def test_make_aerial_crops(tmp_path):
    from lsnet.data.folder import scan_image_folder

    aerial.make_aerial_crops(tmp_path / "crops", seed=0, per_class_train=2, per_class_val=1, workers=1,
                             progress=False)
    classes, samples = scan_image_folder(str(tmp_path / "crops"), ("train", "val"))
    assert sorted(classes) == sorted(aerial.AERIAL_CROP_CLASSES)
    assert len(samples["train"]) == 14 and len(samples["val"]) == 7
    img = Image.open(tmp_path / "crops" / "train" / "ship" / "0000000.png")
    assert img.size == (64, 64)


# =========================================================================== drawing


def test_draw_rotated_detections():
    image = torch.zeros(3, 60, 80)
    boxes = torch.tensor([[40.0, 30, 30, 12, 0.5], [10.0, 10, 6, 6, 0]])
    out = visualize.draw_rotated_detections(image, boxes, torch.tensor([0, 1]), torch.tensor([0.9, 0.1]),
                                            classes=["plane", "ship"])
    arr = np.asarray(out)
    assert out.size == (80, 60) and arr.any()
    assert not arr[5:15, 5:15].any()  # below the score threshold: not drawn
    corner = obb_to_poly(boxes[:1])[0, :2].round().long().tolist()
    assert arr[max(corner[1] - 2, 0):corner[1] + 3, max(corner[0] - 2, 0):corner[0] + 3].any()
    gt = visualize.draw_rotated_detections(Image.new("RGB", (80, 60)), boxes, [0, 1], classes=["plane", "ship"])
    assert np.asarray(gt)[5:15, 5:15].any()
