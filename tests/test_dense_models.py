"""Dense prediction models: LSNet-FPN for RetinaNet / Mask R-CNN and Semantic FPN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import lsnet
from lsnet.dense.config import resolve_dense_config
from lsnet.dense.models import (LSNetBackbone, LSNetFPN, maskrcnn_lsnet_t, retinanet_lsnet_t,
                                semantic_fpn_lsnet_t)


def _targets(sizes, with_masks=False):
    out = []
    for i, (h, w) in enumerate(sizes):
        boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [w * 0.5, h * 0.4, w * 0.9, h * 0.95]])
        t = {"boxes": boxes, "labels": torch.tensor([1 + i % 3, 2])}
        if with_masks:
            masks = torch.zeros(2, h, w, dtype=torch.uint8)
            for k, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
                masks[k, y1:y2, x1:x2] = 1
            t["masks"] = masks
        out.append(t)
    return out


@pytest.mark.parametrize("size", [(64, 64), (97, 131), (256, 320)])
def test_fpn_levels_at_any_size(size):
    fpn = LSNetFPN(LSNetBackbone("lsnet_t"), extra_top=1, extra_trans=1).eval()
    assert fpn.strides == [4, 8, 16, 32, 64, 128]
    with torch.no_grad():
        feats = fpn(torch.randn(1, 3, *size))
    assert list(feats) == ["0", "1", "2", "3", "4", "5"]
    assert all(f.shape[1] == 256 for f in feats.values())
    # strides 8..64 follow the backbone's (s - 1) // 2 + 1 arithmetic; 4 is twice 8; 128 halves 64
    side = list(size)
    for _ in range(3):
        side = [(v - 1) // 2 + 1 for v in side]
    assert tuple(feats["1"].shape[-2:]) == tuple(side)
    assert tuple(feats["0"].shape[-2:]) == tuple(2 * v for v in side)


@pytest.mark.parametrize("sizes", [[(131, 170), (150, 119)], [(128, 128)]])
def test_retinanet_losses_and_outputs(sizes):
    model = retinanet_lsnet_t(num_classes=4, min_size=128, max_size=192)
    images = [torch.rand(3, *s) for s in sizes]
    losses = model.train()(images, _targets(sizes))
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.neck.inner_blocks[0][0].weight.grad is not None
    with torch.no_grad():
        out = model.eval()(images)
    assert len(out) == len(images) and all(set(o) == {"boxes", "scores", "labels"} for o in out)


def test_retinanet_v2_style_head_groupnorm_and_giou():
    release = retinanet_lsnet_t(num_classes=3, fpn_channels=64)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in release.head.modules())
    assert release.head.regression_head._loss_type == "l1"
    model = retinanet_lsnet_t(num_classes=3, fpn_channels=64, head_norm="gn", box_loss="giou",
                              min_size=128, max_size=192)
    norms = [m for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 8 and all((m.num_groups, m.num_channels) == (8, 64) for m in norms)  # 4 per subnet
    sizes = [(131, 170), (150, 119)]
    losses = model.train()([torch.rand(3, *s) for s in sizes], _targets(sizes))
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert losses["bbox_regression"] <= 2  # a GIoU loss lies in [0, 2]; an L1 on deltas has no such bound
    sum(losses.values()).backward()
    assert norms[0].weight.grad is not None
    with pytest.raises(ValueError, match="box loss 'iou'"):
        retinanet_lsnet_t(num_classes=3, box_loss="iou")
    with pytest.raises(ValueError, match="head norm 'bn'"):
        retinanet_lsnet_t(num_classes=3, head_norm="bn")


def test_retinanet_anchors_are_the_release_s():
    model = retinanet_lsnet_t(num_classes=3)
    gen = model.anchor_generator
    assert len(gen.sizes) == 5 and gen.aspect_ratios[0] == (0.5, 1.0, 2.0)
    for stride, sizes in zip((8, 16, 32, 64, 128), gen.sizes):
        assert sizes == pytest.approx((4 * stride, 4 * stride * 2 ** (1 / 3), 4 * stride * 2 ** (2 / 3)))


def test_detection_image_800x1333_like():
    model = retinanet_lsnet_t(num_classes=2).eval()  # min_size 800, max_size 1333
    with torch.no_grad():
        out = model([torch.rand(3, 600, 1000), torch.rand(3, 427, 640)])
    assert len(out) == 2
    sizes = model.transform(
        [torch.rand(3, 600, 1000), torch.rand(3, 427, 640)])[0].tensors.shape[-2:]
    assert sizes[0] % 64 == 0 and sizes[1] % 64 == 0 and max(sizes) <= 1344


@pytest.mark.parametrize("fpn_channels", [256, 64])
def test_maskrcnn_losses_and_masks(fpn_channels):
    sizes = [(131, 170), (150, 119)]
    model = maskrcnn_lsnet_t(num_classes=3, min_size=128, max_size=192, fpn_channels=fpn_channels)
    assert model.backbone.out_channels == fpn_channels
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4  # background + 3
    images = [torch.rand(3, *s) for s in sizes]
    losses = model.train()(images, _targets(sizes, with_masks=True))
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with torch.no_grad():
        out = model.eval()(images)
    assert out[0]["masks"].shape[-2:] == sizes[0] and out[1]["masks"].shape[-2:] == sizes[1]


@pytest.mark.parametrize("size", [(128, 128), (97, 131), (250, 181)])
def test_semantic_fpn_output_and_loss(size):
    model = semantic_fpn_lsnet_t(num_classes=5)
    x = torch.rand(2, 3, *size)
    logits = model(x)
    assert logits.shape == (2, 5, *size)
    target = torch.randint(0, 5, (2, *size))
    target[:, :4] = 255  # ignored pixels
    loss = F.cross_entropy(logits, target, ignore_index=255)
    loss.backward()
    assert torch.isfinite(loss) and model.classifier.weight.grad is not None


def test_semantic_fpn_normalises_input_and_resizes_to_test_size():
    model = semantic_fpn_lsnet_t(num_classes=4, fpn_channels=64, channels=32, test_size=64)
    seen = []
    inner = model.fpn.forward
    model.fpn.forward = lambda x: seen.append(x) or inner(x)
    x = torch.rand(1, 3, 128, 170)
    model.train()(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[-1], (x - mean) / std)  # training: no resize, ImageNet normalisation
    with torch.no_grad():
        logits = model.eval()(x)
    assert seen[-1].shape[-2:] == (64, 85)  # inference: shorter side 64, ratio kept
    assert logits.shape == (1, 4, 128, 170)  # logits back at the input size


def test_backbone_loads_classification_checkpoint_and_freezes(tmp_path):
    cls = timm.create_model("lsnet_t")
    with torch.no_grad():
        cls.patch_embed[0].c.weight.normal_()
    lsnet.save_checkpoint(cls, tmp_path / "cls.pth")
    bb = LSNetBackbone("lsnet_t", checkpoint=str(tmp_path / "cls.pth"), norm_eval=True, frozen_stages=1)
    assert torch.equal(bb.body.model.patch_embed[0].c.weight, cls.patch_embed[0].c.weight)
    bb.train()
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # statistics frozen
    assert not any(p.requires_grad for p in bb.body.model.patch_embed.parameters())
    assert all(p.requires_grad for p in bb.body.model.blocks2.parameters())
    free = LSNetBackbone("lsnet_t", norm_eval=False).train()
    assert all(m.training for m in free.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("frozen_norm", ["eval", "batch"])
def test_frozen_backbone_keeps_weights_and_adapts_statistics_only_when_asked(frozen_norm):
    """frozen_norm="batch": a wholly frozen backbone gets no gradients and its weights stay
    fixed through a training step, yet its BatchNorm layers normalise with the batch's
    statistics and update their running ones; "eval" (the release) keeps them."""
    torch.manual_seed(0)
    model = retinanet_lsnet_t(3, fpn_channels=32, norm_eval=False, frozen_stages=4, frozen_norm=frozen_norm,
                              min_size=128, max_size=160).train()
    body = model.backbone.backbone.body
    weights = {k: v.clone() for k, v in body.state_dict().items() if "running" not in k and "num_batches" not in k}
    stats = {k: v.clone() for k, v in body.state_dict().items() if k.endswith("running_mean")}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    images = [torch.rand(3, 128, 150) * 3 + 1]  # far from the initial running statistics
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([1])}]
    sum(model(images, targets).values()).backward()
    opt.step()
    assert not any(p.requires_grad or p.grad is not None for p in body.parameters())
    after = body.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    moved = [k for k, v in stats.items() if not torch.equal(after[k], v)]
    if frozen_norm == "batch":
        assert len(moved) == len(stats)  # every BatchNorm saw the batch
        assert all(m.training for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    else:
        assert moved == []
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.neck.parameters())


def test_frozen_norm_and_stages_are_checked():
    with pytest.raises(ValueError, match="frozen_norm 'train'; choose eval or batch"):
        LSNetBackbone("lsnet_t", frozen_stages=1, frozen_norm="train")
    with pytest.raises(ValueError, match="--frozen-stages must be between -1 and 4, got 5"):
        resolve_dense_config("detect", {"frozen_stages": 5})


SHAPES_BACKBONE = Path(__file__).resolve().parents[1] / "weights" / "lsnet_t_shapes.safetensors"


def test_shipped_shapes_backbone_recognises_fresh_shapes():
    """The repository's pre-trained backbone (README: dense prediction) classifies single-shape
    images it never saw (another seed than its training set's) and loads into the dense models."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from lsnet.dense.shapes import SHAPE_CLASSES, render_shape_crop
    from lsnet.models.checkpoint import checkpoint_info

    info = checkpoint_info(SHAPES_BACKBONE)
    assert info["arch"] == "lsnet_t" and info["img_size"] == 64 and info["class_names"] == sorted(SHAPE_CLASSES)
    crops = [render_shape_crop(np.random.default_rng([7, 3, i]), 64) for i in range(160)]
    x = torch.from_numpy(np.stack([c for c, _ in crops])).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    want = torch.tensor([info["class_names"].index(SHAPE_CLASSES[k]) for _, k in crops])
    model = timm.create_model("lsnet_t", num_classes=5, img_size=64)
    lsnet.load_checkpoint(model, SHAPES_BACKBONE)
    with torch.no_grad():
        accuracy = (model.eval()(x).argmax(1) == want).float().mean().item()
    assert accuracy >= 0.95
    bb = LSNetBackbone("lsnet_t", checkpoint=str(SHAPES_BACKBONE))
    assert torch.equal(bb.body.model.patch_embed[0].c.weight, model.patch_embed[0].c.weight)


def test_short_training_lowers_the_losses():
    torch.manual_seed(0)
    # segmentation: fit two small images with a simple region layout
    seg = semantic_fpn_lsnet_t(num_classes=3)
    x = torch.rand(2, 3, 64, 64)
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 16:40, 10:40] = 1
    y[:, 44:, 40:] = 2
    x[:, 0][y == 1] += 1.0
    x[:, 1][y == 2] += 1.0
    opt = torch.optim.AdamW([p for p in seg.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(seg(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    # detection: RetinaNet on one small image
    det = retinanet_lsnet_t(num_classes=2, min_size=96, max_size=96)
    img = [torch.rand(3, 96, 96)]
    tgt = [{"boxes": torch.tensor([[16.0, 16.0, 70.0, 80.0]]), "labels": torch.tensor([1])}]
    opt = torch.optim.AdamW([p for p in det.parameters() if p.requires_grad], lr=1e-4)
    det.train()
    losses = []
    for _ in range(5):
        loss = sum(det(img, tgt).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_segmentation_loss_dice_term_matches_hand_computation():
    from lsnet.dense.task import segmentation_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0, :] = 255  # ignored row
    ce = F.cross_entropy(logits, labels, ignore_index=255)
    assert torch.equal(segmentation_loss(logits, labels, "ce"), ce)
    # soft Dice by explicit loops over classes and valid pixels
    probs = logits.detach().softmax(1)
    valid = labels != 255
    dices = []
    for c in range(3):
        p = probs[:, c][valid]
        g = (labels[valid] == c).double()
        dices.append((2 * (p.double() * g).sum() + 1) / (p.double().sum() + g.sum() + 1))
    expect = ce.item() + float(sum(1 - d for d in dices) / 3)
    got = segmentation_loss(logits, labels, "ce+dice")
    assert got.item() == pytest.approx(expect, rel=1e-5)
    got.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # a confident, correct prediction has (almost) no Dice loss left
    perfect = F.one_hot(labels.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert segmentation_loss(perfect, labels, "ce+dice").item() < 0.05
    with pytest.raises(ValueError, match="lovasz"):
        segmentation_loss(logits, labels, "lovasz")


def test_semantic_fpn_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    model = semantic_fpn_lsnet_t(4, fpn_channels=32, norm_eval=False).eval()
    x = torch.rand(2, 3, 96, 130)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_neck_is_torchvisions_fpn_and_reads_checkpoints_of_the_earlier_neck():
    """The neck is torchvision's FeaturePyramidNetwork; a state dict with the earlier neck's
    names (lateral / output / extra_top / extra_trans) loads strictly and gives the same maps."""
    from torchvision.ops import FeaturePyramidNetwork

    fpn = LSNetFPN(LSNetBackbone("lsnet_t"), 32, extra_top=1, extra_trans=1).eval()
    assert isinstance(fpn.neck, FeaturePyramidNetwork)
    old = {}
    for key, value in fpn.state_dict().items():
        for new, was, wrapped in (("neck.inner_blocks.", "lateral.", True), ("neck.layer_blocks.", "output.", True),
                                  ("neck.extra_blocks.top.", "extra_top.", False),
                                  ("neck.extra_blocks.below.", "extra_trans.", False)):
            if key.startswith(new):
                index, rest = key[len(new):].split(".", 1)
                key = was + index + "." + (rest[2:] if wrapped else rest)
                break
        old[key] = value.clone()
    assert "lateral.0.weight" in old and "extra_trans.0.0.weight" in old
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        want = [v.clone() for v in fpn(x).values()]
        for p in fpn.neck.parameters():
            p.zero_()
        fpn.load_state_dict(old)
        got = list(fpn(x).values())
    assert [g.shape[-1] for g in got] == [128 // s for s in fpn.strides]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_frozen_stages_come_from_the_backbones_stages():
    bb = LSNetBackbone("lsnet_t", frozen_stages=2)
    stages = bb.body.model.stages
    assert all(not p.requires_grad for s in stages[:2] for p in s.parameters())
    assert all(p.requires_grad for s in stages[2:] for p in s.parameters())
