"""Tests for lsnet.dense.visualize: drawing detections / segmentation, JSON export, palette, PNG output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lsnet.dense import visualize as vis
from lsnet.dense.visualize import (
    detections_to_json,
    draw_detections,
    draw_segmentation,
    palette,
    save_json,
    save_png,
    segmentation_to_json,
)

NAMES = ["cat", "dog", "bird"]


def _black(h: int = 64, w: int = 80) -> Image.Image:
    return Image.new("RGB", (w, h), (0, 0, 0))


def _pred(boxes, scores, labels, masks=None) -> dict:
    p = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
         "scores": torch.tensor(scores, dtype=torch.float32),
         "labels": torch.tensor(labels, dtype=torch.int64)}
    if masks is not None:
        p["masks"] = masks
    return p


# ----------------------------------------------------------------------------- palette


def test_palette_deterministic_distinct_and_prefix_stable():
    a, b = palette(20), palette(20)
    assert a == b
    assert len(set(a)) == 20
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in a)
    # Class i keeps its colour however many classes there are.
    assert palette(5) == a[:5]
    assert palette(3, seed=1) != palette(3, seed=0)
    assert palette(0) == []
    big = palette(300)
    assert len(set(big)) == 300
    # Well separated: for a typical class count, every pair differs clearly.
    small = np.array(palette(10), dtype=np.float64)
    d = np.sqrt(((small[:, None] - small[None]) ** 2).sum(-1))
    assert d[~np.eye(10, dtype=bool)].min() > 40


# ----------------------------------------------------------------------------- detections


def test_box_outline_in_class_colour_and_far_pixel_untouched():
    img = _black()
    out = draw_detections(img, _pred([[20, 30, 60, 55]], [0.9], [2]), NAMES)
    assert out.size == img.size
    arr = np.array(out)
    colour = palette(len(NAMES))[1]  # label 2 -> class_names[1]
    # Left edge (x=20), right edge (x=59), bottom edge (y=54), away from the label tag above the box.
    assert tuple(arr[45, 20]) == colour
    assert tuple(arr[45, 59]) == colour
    assert tuple(arr[54, 40]) == colour
    # Box interior and a far corner are left alone.
    assert tuple(arr[45, 40]) == (0, 0, 0)
    assert tuple(arr[63, 0]) == (0, 0, 0)
    # The input image is not modified.
    assert np.array(img).max() == 0


def test_label_tag_drawn_with_class_colour_background():
    out = np.array(draw_detections(_black(), _pred([[20, 30, 60, 55]], [0.9], [1]), NAMES))
    colour = np.array(palette(3)[0])
    # The tag sits just above the box: a band above y=30 holds many class-coloured pixels.
    band = out[:30, 20:60]
    assert (band == colour).all(-1).sum() > 50


def test_detection_below_threshold_draws_nothing():
    img = _black()
    pred = _pred([[20, 30, 60, 55], [5, 5, 15, 15]], [0.49, 0.2], [1, 3])
    out = draw_detections(img, pred, NAMES, score_threshold=0.5)
    assert np.array_equal(np.array(out), np.array(img))
    # Label 0 (background) is never drawn, whatever its score.
    out0 = draw_detections(img, _pred([[20, 30, 60, 55]], [0.99], [0]), NAMES)
    assert np.array_equal(np.array(out0), np.array(img))


def test_mask_blended_inside_mask_region_only():
    h, w = 64, 80
    masks = torch.zeros(1, 1, h, w)
    masks[0, 0, 35:50, 25:50] = 0.9   # inside the box, away from its outline
    masks[0, 0, 40:45, 52:56] = 0.3   # below mask_threshold: not blended
    pred = _pred([[20, 30, 60, 55]], [0.9], [3], masks=masks)
    alpha = 0.45
    out = np.array(draw_detections(torch.zeros(3, h, w), pred, NAMES, alpha=alpha)).astype(int)
    colour = np.array(palette(3)[2])
    expected = np.round(alpha * colour)
    assert np.abs(out[35:50, 25:50] - expected).max() <= 1
    # Pixels inside the box but outside the mask stay black.
    assert (out[51:53, 40:45] == 0).all()
    assert (out[40:45, 52:56] == 0).all()
    assert (out[h - 1, 0] == 0).all()


def test_mask_on_nonblack_float_image():
    h, w = 48, 48
    image = torch.full((3, h, w), 0.5)
    masks = torch.zeros(1, 1, h, w)
    masks[0, 0, 26:34, 26:34] = 1.0
    pred = _pred([[20, 20, 40, 40]], [0.8], [1], masks=masks)
    out = np.array(draw_detections(image, pred, NAMES, alpha=0.5)).astype(int)
    expected = np.round(0.5 * 128 + 0.5 * np.array(palette(3)[0]))
    assert np.abs(out[30, 30] - expected).max() <= 1
    assert (out[23, 23] == 128).all()  # inside the box, outside the mask


@pytest.mark.parametrize("box", [[70, 0, 80, 8], [75, 56, 80, 64], [0, 0, 4, 4]])
def test_label_tag_stays_inside_image_at_edges(box):
    h, w = 64, 80
    name = "dog"
    out = np.array(draw_detections(_black(h, w), _pred([box], [0.93], [1]), [name]))
    colour = palette(1)[0]
    # Where the tag must be: same font and size rule as the module uses.
    font = vis._font((w, h))
    tw, th = vis._text_size(ImageDraw.Draw(Image.new("RGB", (1, 1))), f"{name} 0.93", font)
    x0, y0, x1, y1 = vis._label_rect((box[0], box[1]), (tw, th), (w, h))
    assert 0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1
    assert x1 - x0 + 1 == tw + 4 and y1 - y0 + 1 == th + 4  # fully visible, not clipped
    # The tag background really is drawn there (text pixels aside).
    region = out[y0:y1 + 1, x0:x1 + 1]
    assert (region == np.array(colour)).all(-1).mean() > 0.5


def test_label_rect_placement():
    # Room above the box: tag sits directly above it.
    assert vis._label_rect((10, 30), (20, 8), (100, 100)) == (10, 18, 33, 29)
    # No room above: tag goes inside the box's top edge.
    assert vis._label_rect((10, 3), (20, 8), (100, 100)) == (10, 3, 33, 14)
    # Bottom edge with no room above (tiny image): pulled up to fit.
    assert vis._label_rect((0, 10), (20, 8), (30, 14)) == (0, 2, 23, 13)
    # Right edge: shifted left to fit.
    assert vis._label_rect((95, 30), (20, 8), (100, 100)) == (76, 18, 99, 29)


def test_empty_prediction_returns_copy():
    img = _black(8, 8)
    pred = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    out = draw_detections(img, pred, NAMES)
    assert out is not img and np.array_equal(np.array(out), np.array(img))


# ----------------------------------------------------------------------------- segmentation


def test_draw_segmentation_colours_classes_and_keeps_ignore():
    h, w = 20, 30
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(base)
    lm = torch.full((h, w), 255, dtype=torch.int64)
    lm[:10, :10] = 0
    lm[10:, 15:] = 2
    out = np.array(draw_segmentation(img, lm, NAMES, alpha=0.5, legend=False)).astype(int)
    assert out.shape == (h, w, 3)
    cols = palette(3)
    exp0 = np.round(0.5 * base[:10, :10] + 0.5 * np.array(cols[0]))
    exp2 = np.round(0.5 * base[10:, 15:] + 0.5 * np.array(cols[2]))
    assert np.abs(out[:10, :10] - exp0).max() <= 1
    assert np.abs(out[10:, 15:] - exp2).max() <= 1
    ignore = (lm == 255).numpy()
    assert np.array_equal(out[ignore], base[ignore].astype(int))


def test_draw_segmentation_legend_and_logits():
    h, w = 24, 32
    img = torch.zeros(3, h, w)
    logits = torch.zeros(3, h, w)
    logits[1, :, : w // 2] = 5.0
    logits[2, :, w // 2:] = 5.0
    plain = draw_segmentation(img, logits, NAMES, legend=False)
    with_legend = draw_segmentation(img, logits, NAMES, legend=True)
    assert plain.size == (w, h)
    assert with_legend.size[0] > w and with_legend.size[1] >= h
    arr = np.array(with_legend)
    # The image part is unchanged by adding the legend, and both present colours appear in the strip.
    assert np.array_equal(arr[:h, :w], np.array(plain))
    strip = arr[:, w:]
    cols = palette(3)
    for c in (cols[1], cols[2]):
        assert (strip == np.array(c)).all(-1).any()
    assert not (strip == np.array(cols[0])).all(-1).any()  # class 0 absent, not listed


def test_legend_with_many_classes_and_small_image():
    names = [f"class number {i}" for i in range(40)]
    lm = torch.arange(40).repeat_interleave(2).reshape(8, 10)
    out = draw_segmentation(_black(8, 10), lm, names)
    assert out.size[0] > 10 and out.size[1] >= 8


# ----------------------------------------------------------------------------- JSON


def test_detections_to_json_sorted_named_rounded_with_mask_area():
    h, w = 10, 12
    masks = torch.zeros(3, 1, h, w)
    masks[0, 0, :2, :3] = 0.7     # 6 pixels above 0.5
    masks[1, 0, :, :] = 0.5       # exactly 0.5 is not "above"
    masks[2, 0, 5:9, 0:5] = 0.51  # 20 pixels
    pred = _pred([[1.234, 2.345, 5.678, 7.891], [0, 0, 12, 10], [0.004, 1.005, 3.999, 9.5]],
                 [0.3, 0.9, 0.6], [1, 3, 2], masks=masks)
    out = detections_to_json(pred, NAMES, image_path="imgs/a.jpg")
    assert out["image"] == "imgs/a.jpg"
    dets = out["detections"]
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    assert [d["label"] for d in dets] == [3, 2, 1]
    assert [d["class"] for d in dets] == ["bird", "dog", "cat"]
    assert dets[2]["box_xyxy"] == [1.23, 2.35, 5.68, 7.89]
    assert all(isinstance(v, float) for d in dets for v in d["box_xyxy"])
    assert [d["mask_area"] for d in dets] == [0, 20, 6]
    assert dets[0]["score"] == pytest.approx(0.9)
    json.dumps(out)  # plain Python types only


def test_detections_to_json_threshold_no_masks_and_unknown_label():
    pred = _pred([[0, 0, 1, 1], [0, 0, 2, 2]], [0.2, 0.8], [1, 7])
    out = detections_to_json(pred, NAMES, score_threshold=0.5)
    assert out["image"] is None
    assert len(out["detections"]) == 1
    det = out["detections"][0]
    assert det["label"] == 7 and det["class"] == "class_6"
    assert "mask_area" not in det


def test_segmentation_to_json_counts_and_fractions():
    lm = torch.tensor([[0, 0, 2, 255], [2, 2, 2, 255]])
    out = segmentation_to_json(lm, NAMES, image_path="x.png")
    assert out["image"] == "x.png"
    assert (out["height"], out["width"], out["ignored_pixels"]) == (2, 4, 2)
    assert out["classes"] == [
        {"label": 2, "class": "bird", "pixels": 4, "fraction": pytest.approx(4 / 6)},
        {"label": 0, "class": "cat", "pixels": 2, "fraction": pytest.approx(2 / 6)},
    ]
    json.dumps(out)


# ----------------------------------------------------------------------------- output


def test_save_png_round_trip(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    path = tmp_path / "deep" / "er" / "out.png"
    returned = save_png(Image.fromarray(arr), path)
    assert returned == path and path.exists()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert np.array_equal(np.array(im.convert("RGB")), arr)
    # Only the final file remains: no temporary left in the folder.
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]
    # Overwriting works, and tensors are accepted.
    save_png(torch.zeros(3, 4, 5), path)
    with Image.open(path) as im:
        assert im.size == (5, 4)


def test_save_json_round_trip(tmp_path):
    obj = {"image": None, "detections": [{"label": 1, "class": "cat", "score": 0.5}]}
    path = save_json(obj, tmp_path / "sub" / "pred.json")
    assert json.loads(path.read_text(encoding="utf-8")) == obj
    assert sorted(p.name for p in path.parent.iterdir()) == ["pred.json"]
