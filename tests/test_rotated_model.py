"""Oriented R-CNN: anchors, assignment and sampling on hand-worked cases, the losses and the
detections' structure, and a small model that learns one scene."""

import math

import pytest
import torch

from lsnet.rotated.models import (OrientedRCNN, OrientedRCNNSettings, assign_max_iou, level_anchors, oriented_rcnn,
                                  sample_assigned)


def test_level_anchors_follow_mmdetection_layout():
    anchors = level_anchors(stride=4, scales=(8.0,), ratios=(0.5, 1.0, 2.0), size=(2, 3), device=torch.device("cpu"))
    assert anchors.shape == (2 * 3 * 3, 4)
    # location (x=1, y=0) is the second location; its square anchor (ratio 1) is 32 px around (4, 0)
    square = anchors[1 * 3 + 1]
    assert torch.allclose(square, torch.tensor([4 - 16.0, -16.0, 4 + 16.0, 16.0]))
    # ratio 0.5 (h / w): w = 32 * sqrt(2), h = 32 / sqrt(2), same area as the square
    wide = anchors[0]
    w, h = wide[2] - wide[0], wide[3] - wide[1]
    assert torch.allclose(w * h, torch.tensor(32.0 * 32.0)) and torch.allclose(h / w, torch.tensor(0.5))
    # last location is (x=2, y=1): centre (8, 4)
    last = anchors[-1]
    assert torch.allclose((last[:2] + last[2:]) / 2, torch.tensor([8.0, 4.0]))


def test_assign_max_iou_thresholds_and_low_quality_matches():
    iou = torch.tensor([[0.80, 0.10, 0.40, 0.00, 0.35],
                        [0.20, 0.25, 0.50, 0.00, 0.35]])
    # without low-quality matches: box 0 positive (gt 0), box 1 and 3 negative (< 0.3), the
    # others between the thresholds are ignored
    plain = assign_max_iou(iou, pos_thr=0.7, neg_thr=0.3, min_pos_iou=0.3, low_quality=False)
    assert plain.tolist() == [0, -1, -2, -1, -2]
    # gt 1's best box (0.50) is box 2, which it takes; gt 0's best is box 0 already
    low = assign_max_iou(iou, pos_thr=0.7, neg_thr=0.3, min_pos_iou=0.3, low_quality=True)
    assert low.tolist() == [0, -1, 1, -1, -2]
    # a ground truth whose best overlap is below min_pos_iou takes nothing
    weak = torch.tensor([[0.2, 0.1]])
    assert assign_max_iou(weak, 0.7, 0.3, 0.3, True).tolist() == [-1, -1]
    # ties: every box at the maximum is taken; on a shared box the later ground truth wins
    tie = torch.tensor([[0.5, 0.5, 0.1], [0.1, 0.5, 0.1]])
    assert assign_max_iou(tie, 0.7, 0.3, 0.3, True).tolist() == [0, 1, -1]
    # no ground truth: everything is background
    assert assign_max_iou(torch.zeros((0, 3)), 0.7, 0.3, 0.3, True).tolist() == [-1, -1, -1]


def test_sample_assigned_caps_positives_and_fills_with_negatives():
    torch.manual_seed(0)
    assigned = torch.tensor([0] * 10 + [-1] * 100 + [-2] * 5)
    pos, neg = sample_assigned(assigned, num=16, pos_fraction=0.25)
    assert len(pos) == 4 and len(neg) == 12
    assert (assigned[pos] >= 0).all() and (assigned[neg] == -1).all()
    assert len(set(pos.tolist())) == 4 and len(set(neg.tolist())) == 12
    few = torch.tensor([0, -1, -1, -2])
    pos, neg = sample_assigned(few, num=16, pos_fraction=0.5)
    assert pos.tolist() == [0] and sorted(neg.tolist()) == [1, 2]


def _small_settings(**kw):
    values = dict(fpn_channels=32, fc_channels=64, rpn_pre_nms=300, rpn_post_nms=100, roi_batch=64, rpn_batch=64,
                  anchor_scales=(4.0,), max_per_image=100)
    values.update(kw)
    return OrientedRCNNSettings(**values)


def _scene(size=96):
    """One bright rotated rectangle on a dark image, and its box."""
    box = torch.tensor([[48.0, 44.0, 40.0, 16.0, math.radians(30)]])
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    c, s = math.cos(box[0, 4]), math.sin(box[0, 4])
    u = (xs - box[0, 0]) * c + (ys - box[0, 1]) * s
    v = -(xs - box[0, 0]) * s + (ys - box[0, 1]) * c
    inside = (u.abs() <= box[0, 2] / 2) & (v.abs() <= box[0, 3] / 2)
    image = torch.full((3, size, size), 0.2)
    image[:, inside] = torch.tensor([0.9, 0.8, 0.3])[:, None]
    return image, {"boxes": box, "labels": torch.tensor([1])}


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return oriented_rcnn("lsknet_t", num_classes=2, settings=_small_settings())


def test_training_losses_and_gradients(small_model):
    image, target = _scene()
    small_model.train()
    losses = small_model([image, image.flip(-1)], [target, {"boxes": torch.zeros((0, 5)),
                                                            "labels": torch.zeros(0, dtype=torch.long)}])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in small_model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    small_model.zero_grad(set_to_none=True)


def test_detections_structure_and_size_padding(small_model):
    small_model.eval()
    out = small_model([torch.rand(3, 70, 90), torch.rand(3, 64, 64)])
    assert len(out) == 2
    for det in out:
        n = len(det["scores"])
        assert det["boxes"].shape == (n, 5) and det["labels"].shape == (n,)
        assert ((det["labels"] >= 0) & (det["labels"] < 2)).all()
        assert (det["scores"] >= small_model.settings.score_threshold).all()
        assert (det["boxes"][:, 4] >= -math.pi / 2 - 1e-5).all() and (det["boxes"][:, 4] < math.pi / 2 + 1e-5).all()


def test_a_small_detector_learns_one_scene():
    """Trained on one scene for a few dozen steps, the detector finds its box (class and place)."""
    from lsnet.ops.rotated_boxes import box_iou_rotated

    torch.manual_seed(0)
    model = OrientedRCNN(oriented_rcnn("lsknet_t", 2, _small_settings()).fpn, 2, _small_settings())
    image, target = _scene()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(60):
        loss = sum(model([image], [target]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    det = model([image])[0]
    assert len(det["scores"]) > 0
    best = det["scores"].argmax()
    assert det["labels"][best] == 1
    assert box_iou_rotated(det["boxes"][best:best + 1], target["boxes"])[0, 0] > 0.5
