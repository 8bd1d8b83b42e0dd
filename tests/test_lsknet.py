"""LSKNet backbones: exactness against the release, the timm API, fusion and release files."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch

import lsnet
from conftest import load_fixture, rel_err, shared_file
from fx_tracing import assert_script_and_fx_match_eager
from lsnet import CheckpointError, load_checkpoint
from lsnet.models.lsknet import LSKNet

BACKBONE_PARAMS = {"lsknet_t": 3_990_190, "lsknet_s": 13_840_892}
CLASSIFIER_PARAMS = {"lsknet_t": 4_247_190, "lsknet_s": 14_353_892}  # with a 1000-class head


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _undo_one_update(model: LSKNet, x: torch.Tensor) -> None:
    """Put back the BatchNorm statistics the model had before one train-mode forward of ``x``.

    The fixture's state_dict was saved after the train-mode forward that gave ``outputs_train``,
    so its running statistics include that batch (momentum 0.1); ``outputs_eval`` was computed
    before it, with the statistics this restores.
    """
    batch = {}
    hooks = [bn.register_forward_hook(
        lambda m, inp, out: batch.__setitem__(m, (inp[0].mean((0, 2, 3)), inp[0].var((0, 2, 3), unbiased=True))))
        for bn in _batchnorms(model)]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.train()(x)  # the train forward sees the same maps up to each BN whatever its running stats
        for h in hooks:
            h.remove()
        model.load_state_dict(saved)
        for bn in _batchnorms(model):
            mean, var = batch[bn]
            bn.running_mean.sub_(bn.momentum * mean).div_(1 - bn.momentum)
            bn.running_var.sub_(bn.momentum * var).div_(1 - bn.momentum)
    model.eval()


def tiny(mode: str = "eval"):
    """The fixture's small release configuration with its weights, and the fixture."""
    fx = load_fixture("lsknet_tiny")
    model = LSKNet(**fx["config"], num_classes=0)
    model.load_state_dict(fx["state_dict"], strict=True)
    if mode == "eval":
        _undo_one_update(model, fx["input"])
    return model.train(mode == "train"), fx


@pytest.mark.parametrize("name", ["lsknet_t", "lsknet_s"])
def test_state_dict_and_parameters_match_release(name):
    with open(shared_file("reference", f"{name}_state_dict.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
    model = timm.create_model(name, num_classes=0)
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert got == [(k, eval(shape), dtype) for k, shape, dtype in rows]
    assert sum(p.numel() for p in model.parameters()) == BACKBONE_PARAMS[name]
    assert sum(p.numel() for p in timm.create_model(name).parameters()) == CLASSIFIER_PARAMS[name]


def test_registered_on_import():
    assert set(lsnet.models.LSKNET_NAMES) == set(timm.list_models("lsknet*"))


def test_tiny_fixture_train_mode_and_gradients():
    model, fx = tiny("train")
    outs = model.forward_intermediates(fx["input"], intermediates_only=True)
    assert len(outs) == len(fx["outputs_train"]) == 4
    for got, want in zip(outs, fx["outputs_train"], strict=True):
        assert rel_err(got, want) < 1e-5
    sum(o.square().mean() for o in outs).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_tiny_fixture_eval_mode():
    model, fx = tiny("eval")
    with torch.no_grad():
        outs = model.forward_intermediates(fx["input"], intermediates_only=True)
    for got, want in zip(outs, fx["outputs_eval"], strict=True):
        assert rel_err(got, want) < 1e-5
    # the restored statistics are the fixture's before its train forward: one forward updates them to the file's
    model.train()
    with torch.no_grad():
        model(fx["input"])
    for k, v in fx["state_dict"].items():
        if "running" in k:
            torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(32, 32), (65, 97), (224, 224)])
def test_features_only_any_size(size):
    model = timm.create_model("lsknet_t", features_only=True).eval()
    assert model.feature_info.channels() == [32, 64, 160, 256]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *size))
    side = [-(-v // 4) for v in size]  # 7x7 stride 4 padding 3, then 3x3 stride 2 padding 1: ceil each time
    for f, chans in zip(feats, [32, 64, 160, 256], strict=True):
        assert tuple(f.shape) == (1, chans, *side)
        side = [-(-v // 2) for v in side]


def test_features_match_full_model_and_subsets():
    full = timm.create_model("lsknet_t").eval()
    feats = timm.create_model("lsknet_t", features_only=True).eval()
    feats.model.load_state_dict(full.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = feats(x)
        assert torch.equal(maps[-1], full.forward_features(x))
        last, inter = full.forward_intermediates(x, indices=2)
        assert torch.equal(last, maps[-1])
        assert [torch.equal(a, b) for a, b in zip(inter, maps[2:], strict=True)] == [True, True]
    sub = timm.create_model("lsknet_s", features_only=True, out_indices=(1, 2))
    assert sub.feature_info.channels() == [128, 320]
    assert not [k for k in sub.state_dict() if "block4" in k or "norm4" in k]  # the pruned tail is gone
    assert [f.shape[1] for f in sub(torch.randn(1, 3, 64, 64))] == [128, 320]


def test_forward_head_and_reset_classifier():
    model = timm.create_model("lsknet_t", num_classes=5).double().eval()
    x = torch.randn(2, 3, 96, 64, dtype=torch.float64)
    with torch.no_grad():
        f = model.forward_features(x)
        assert f.shape == (2, 256, 3, 2)
        assert torch.equal(model.forward_head(f, pre_logits=True), f.mean((2, 3)))
        assert torch.equal(model.forward_head(f), model(x))
    model.reset_classifier(7)
    assert not model.head.training and model.head.weight.dtype == torch.float64
    assert model(x).shape == (2, 7) and model.get_classifier() is model.head
    model.reset_classifier(0)
    assert model(x).shape == (2, 256)


def test_grad_checkpointing_gives_same_outputs_and_gradients():
    a = timm.create_model("lsknet_t", num_classes=4)
    b = timm.create_model("lsknet_t", num_classes=4)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 64, 64)
    out_a, out_b = a(x), b(x)
    torch.testing.assert_close(out_a, out_b)
    out_a.sum().backward()
    out_b.sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_dropout_and_drop_path_only_in_training_and_device_dtype_meta():
    model = timm.create_model("lsknet_t", num_classes=3, drop_rate=0.1, drop_path_rate=0.1)
    ref = timm.create_model("lsknet_t", num_classes=3)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref.eval()(x))
    rates = [getattr(blk.drop_path, "drop_prob", 0.0) for s in range(4) for blk in getattr(model, f"block{s + 1}")]
    assert rates == pytest.approx([0.1 * i / 12 for i in range(13)])  # linear over all 13 blocks, the first none
    m = timm.create_model("lsknet_t", num_classes=2, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    with torch.device("meta"):
        assert next(timm.create_model("lsknet_s", drop_path_rate=0.1).parameters()).is_meta


def test_fuse_reproduces_fixture():
    model, fx = tiny("eval")
    fused = lsnet.fuse(model)
    with torch.no_grad():
        outs = fused.forward_intermediates(fx["input"], intermediates_only=True)
        for got, want in zip(outs, fx["outputs_eval"], strict=True):
            assert rel_err(got, want) < 1e-5
    # left: the blocks' norm1, whose output is also the attention's shortcut
    assert all(n.endswith(".norm1") for n, m in fused.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert len(_batchnorms(model)) == 14 and len(_batchnorms(fused)) == 5  # the original is untouched


def test_fuse_float64_exact_and_features_only():
    model = timm.create_model("lsknet_t", num_classes=10).double()
    with torch.no_grad():  # random statistics and affine parameters so that folding is exercised
        for bn in _batchnorms(model):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    model.eval()
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(lsnet.fuse(model)(x), model(x)) < 1e-10
    feats = timm.create_model("lsknet_t", features_only=True)
    feats.model.load_state_dict(model.float().state_dict(), strict=False)
    feats.eval()
    fused = lsnet.fuse(feats)
    with torch.no_grad():
        for a, b in zip(fused(x.float()), feats(x.float()), strict=True):
            assert rel_err(a, b) < 1e-5


def test_torch_fx_trace():
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torch.fx import GraphModule, Tracer

    leaves = tuple(get_notrace_modules())

    class TimmTracer(Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, leaves) or super().is_leaf_module(m, name)

    model = timm.create_model("lsknet_t", num_classes=5).eval()
    traced = GraphModule(model, TimmTracer(autowrap_functions=tuple(get_notrace_functions())).trace(model))
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))





def test_torchscript_and_fx_match_eager():
    """torch.jit.script of the model and of its torch.fx graph (timm's two TorchScript tests)."""
    torch.manual_seed(0)
    model = timm.create_model("lsknet_t", num_classes=5).eval()
    for bn in _batchnorms(model):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    assert_script_and_fx_match_eager(model, torch.randn(2, 3, 65, 97))


@pytest.mark.parametrize("depths", [(1, 1), (1, 1, 1, 1, 1)])
def test_torchscript_any_number_of_stages_and_pruned(depths):
    """The scripted forward walks the stages by name, however many there are, also after
    ``prune_intermediate_layers``."""
    torch.manual_seed(0)
    n = len(depths)
    model = LSKNet(embed_dims=(8, 16, 24, 32, 40)[:n], depths=depths, mlp_ratios=(2,) * n, num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x), rtol=0, atol=0)
        model.prune_intermediate_layers([n - 2])
        assert model.num_stages == n - 1
        torch.testing.assert_close(torch.jit.script(model)(x), model(x), rtol=0, atol=0)


# ----- release files ----------------------------------------------------------------------

def _backbone_state(seed: int = 0, classes: int = 0) -> dict:
    """A release-like backbone state_dict (random weights and BN statistics) of a tiny LSKNet."""
    torch.manual_seed(seed)
    model = LSKNet(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_classes=classes)
    with torch.no_grad():
        for bn in _batchnorms(model):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    return model.state_dict()


def _small(classes: int = 0) -> LSKNet:
    return LSKNet(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_classes=classes)


def _detector_file(path, backbone: dict) -> None:
    """An mmrotate detector checkpoint: ``backbone.`` keys, a neck and heads, mmcv EMA copies."""
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.randn(4, 8, 1, 1)
    state["rpn_head.rpn_conv.weight"] = torch.randn(4, 4, 3, 3)
    state["roi_head.bbox_head.fc_cls.weight"] = torch.randn(16, 4)
    for k, v in backbone.items():
        if v.is_floating_point() and "running" not in k:  # EMAHook averages parameters only
            state["ema_" + f"backbone.{k}".replace(".", "_")] = v + 1
    state["ema_neck_lateral_convs_0_conv_weight"] = torch.randn(4, 8, 1, 1)
    torch.save({"meta": {"epoch": 12, "CLASSES": ("plane", "ship"), "mmcv_version": "1.7.0"}, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0]}]}}, path)


def _same(model: LSKNet, state: dict) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items())


@pytest.mark.parametrize("prefix", ["", "module."])
def test_release_backbone_files_load_strictly(tmp_path, prefix):
    plain, with_head = _backbone_state(), _backbone_state(1, classes=10)
    torch.save({"epoch": 300, "arch": "lsknet", "state_dict": {prefix + k: v for k, v in plain.items()}},
               tmp_path / "backbone.pth.tar")
    torch.save({"state_dict": with_head}, tmp_path / "with_head.pth.tar")
    model = _small()
    assert load_checkpoint(model, tmp_path / "backbone.pth.tar") == {"missing": [], "unexpected": [], "dropped": []}
    assert _same(model, plain)
    model = _small(10)  # a head of the file's size loads with the rest
    load_checkpoint(model, tmp_path / "with_head.pth.tar")
    assert _same(model, with_head)
    # a backbone-only file into a model with a head: the head is reported, drop_head keeps the model's own
    with pytest.raises(CheckpointError, match=r"missing keys \(2\): head.weight, head.bias[\s\S]*drop_head=True"):
        load_checkpoint(_small(10), tmp_path / "backbone.pth.tar")
    model = _small(10)
    head = model.head.weight.clone()
    load_checkpoint(model, tmp_path / "backbone.pth.tar", drop_head=True)
    assert _same(model, plain) and torch.equal(model.head.weight, head)
    # a file with a head into a backbone (num_classes=0) likewise
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_checkpoint(_small(), tmp_path / "with_head.pth.tar")


def test_detector_file_loads_backbone_and_optionally_its_ema(tmp_path):
    backbone = _backbone_state()
    _detector_file(tmp_path / "det.pth", backbone)
    model = _small()
    assert load_checkpoint(model, tmp_path / "det.pth") == {"missing": [], "unexpected": [], "dropped": []}
    assert _same(model, backbone)
    ema = _small()
    load_checkpoint(ema, tmp_path / "det.pth", use_ema=True)
    own = ema.state_dict()
    for k, v in backbone.items():
        want = v + 1 if v.is_floating_point() and "running" not in k else v
        assert torch.equal(own[k], want), k


def test_wrong_shape_is_one_error(tmp_path):
    state = _backbone_state()
    state["block2.0.attn.proj_1.weight"] = torch.zeros(16, 16, 3, 3)
    del state["norm4.bias"]
    state["block2.0.extra.weight"] = torch.zeros(1)
    state = {f"backbone.{k}": v for k, v in state.items()}
    state["neck.fpn.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_small(), tmp_path / "bad.pth")
    text = str(info.value)
    assert "bad.pth does not fit LSKNet" in text and "missing keys (1): norm4.bias" in text
    assert "unexpected keys (1): block2.0.extra.weight" in text
    assert "block2.0.attn.proj_1.weight (file (16, 16, 3, 3), model (16, 16, 1, 1))" in text
    assert "neck" not in text  # a detector's other parts are not the backbone's business


def test_timm_pretrained_file_overlay(tmp_path):
    src = timm.create_model("lsknet_t")
    with torch.no_grad():
        for bn in _batchnorms(src):
            bn.running_mean.normal_(0, 0.1)
    state = src.state_dict()
    # as timm's training script saves: its argparse arguments pickled beside the weights
    torch.save({"epoch": 299, "arch": "lsknet_t", "state_dict": state, "args": argparse.Namespace(lr=1e-3)},
               tmp_path / "lsk_t_backbone.pth.tar")
    backbone = {k: v for k, v in state.items() if not k.startswith("head.")}
    _detector_file(tmp_path / "det.pth", backbone)
    x = torch.randn(1, 3, 64, 64)
    model = timm.create_model("lsknet_t", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "lsk_t_backbone.pth.tar"))).eval()
    with torch.no_grad():
        assert torch.equal(model(x), src.eval()(x))
    for f in ("lsk_t_backbone.pth.tar", "det.pth"):  # the features of a classifier file and of a detector
        feats = timm.create_model("lsknet_t", features_only=True, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(tmp_path / f))).eval()
        with torch.no_grad():
            assert torch.equal(feats(x)[-1], src.forward_features(x)), f
    # a detector's backbone into a classifier: timm's convention, the model's own head stays
    cls = timm.create_model("lsknet_t", pretrained=True, num_classes=1000,
                            pretrained_cfg_overlay=dict(file=str(tmp_path / "det.pth")))
    assert torch.equal(cls.patch_embed1.proj.weight, src.patch_embed1.proj.weight)


def test_retinanet_with_lsknet_backbone():
    from lsnet.dense.models import retinanet_lsnet

    model = retinanet_lsnet("lsknet_t", num_classes=2, min_size=64, max_size=64, fpn_channels=16,
                            frozen_stages=2).eval()
    assert model.backbone.strides == [4, 8, 16, 32, 64]
    frozen = {n.split(".")[2] for n, p in model.backbone.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"patch_embed1", "block1", "norm1", "patch_embed2", "block2", "norm2"}
    with torch.no_grad():
        out = model([torch.rand(3, 64, 80)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
