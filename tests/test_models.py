"""LSNet models: exactness against the release, the timm API, input sizes and fusion."""

from __future__ import annotations

import io

import pytest
import timm
import torch

import lsnet
from conftest import load_fixture, rel_err, shared_file
from fx_tracing import timm_fx_graph
from lsnet.models.lsnet import LSNet, _release_bias_index, attention_bias_index

PARAMS = {"lsnet_t": 11_409_832, "lsnet_s": 16_146_304, "lsnet_b": 23_313_608}


def tiny(name: str, mode: str = "eval") -> tuple:
    """A tiny release configuration with its weights, and the fixture itself."""
    fx = load_fixture(f"lsnet_tiny_{name}")
    model = LSNet(**fx["config"])
    model.load_state_dict(fx["state_dict"], strict=True)
    return model.train(mode == "train"), fx


@pytest.mark.parametrize("name", ["lsnet_t", "lsnet_s", "lsnet_b"])
def test_state_dict_matches_release(name):
    rows = [line.rstrip("\n").split("\t") for line in open(shared_file("reference", f"{name}_state_dict.tsv"))
            if not line.startswith("#")]
    model = timm.create_model(name)
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    want = [(k, eval(shape), dtype) for k, shape, dtype in rows]
    assert got == want
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_registered_names_and_num_classes():
    assert set(lsnet.MODEL_NAMES) <= set(timm.list_models("lsnet*"))
    model = timm.create_model("lsnet_t", num_classes=10).eval()
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 10)
    dist = timm.create_model("lsnet_s_distill", num_classes=5)
    assert dist.distillation and dist.train()(torch.randn(2, 3, 64, 64))[1].shape == (2, 5)


def test_bias_index_equals_release_numbering():
    for r in range(1, 9):
        assert torch.equal(attention_bias_index(r, r), _release_bias_index(r))


@pytest.mark.parametrize("name", ["a", "b"])
def test_tiny_fixture_eval(name):
    model, fx = tiny(name)
    with torch.no_grad():
        assert rel_err(model(fx["input"]), fx["logits_eval"]) < 1e-5


@pytest.mark.parametrize("name", ["a", "b"])
def test_tiny_fixture_train(name):
    model, fx = tiny(name, "train")
    out = model(fx["input"])
    want = fx["output_train"]
    if isinstance(want, (tuple, list)):
        assert isinstance(out, tuple) and len(out) == len(want)
        for o, w in zip(out, want):
            assert rel_err(o, w) < 1e-5
    else:
        assert rel_err(out, want) < 1e-5
    loss = sum(o.square().sum() for o in out) if isinstance(out, tuple) else out.square().sum()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad


@pytest.mark.parametrize("size", [(160, 160), (256, 256), (288, 384), (512, 640), (64, 64), (97, 131)])
def test_any_input_size(size):
    model = timm.create_model("lsnet_t", num_classes=3).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
    side = list(size)
    for _ in range(2):  # the first two stride-2 convs of the stem
        side = [(v - 1) // 2 + 1 for v in side]
    for f in feats:  # each stage halves again (stem's last conv, then the downsamples)
        side = [(v - 1) // 2 + 1 for v in side]
        assert tuple(f.shape[-2:]) == tuple(side)
    assert feats[-1].shape[1] == 384


def test_bias_table_resized_bicubically_at_other_grids():
    attn = timm.create_model("lsnet_t").blocks4[3].mixer.m
    with torch.no_grad():
        attn.attention_biases.copy_(torch.randn_like(attn.attention_biases))
    r = attn.resolution
    table = attn.attention_biases.view(1, attn.num_heads, r, r)
    # at the trained grid: exactly the release's gather
    assert torch.equal(attn.attention_bias(r, r), attn.attention_biases[:, attn.attention_bias_idxs])
    # at a 5 x 7 grid: the table resized to 5 x 7 offsets, indexed by |dy| * 7 + |dx|
    resized = torch.nn.functional.interpolate(table, size=(5, 7), mode="bicubic", align_corners=False)[0]
    bias = attn.attention_bias(5, 7)
    assert bias.shape == (attn.num_heads, 35, 35)
    assert torch.allclose(bias[:, 0, 8], resized[:, 1, 1])  # points (0,0) and (1,1)
    assert torch.allclose(bias[:, 34, 0], resized[:, 4, 6])  # points (4,6) and (0,0)


def test_release_input_size_uses_trained_biases_unchanged():
    # at 224 the stage-4 grid is 4 x 4 = the trained one: output must not depend on resizing
    model = timm.create_model("lsnet_t").eval()
    attn = model.blocks4[3].mixer.m
    calls = []
    orig = torch.nn.functional.interpolate
    torch.nn.functional.interpolate = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 224, 224))
    finally:
        torch.nn.functional.interpolate = orig
    assert attn.resolution == 4 and not calls


@pytest.mark.parametrize("shape,message", [
    ((1, 3, 63, 224), "at least 64"),
    ((1, 3, 224, 32), "at least 64"),
    ((1, 1, 224, 224), "3-channel"),
    ((3, 224, 224), "4-D"),
])
def test_input_errors(shape, message):
    model = timm.create_model("lsnet_t").eval()
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_in_chans():
    model = timm.create_model("lsnet_t", in_chans=1, num_classes=2).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 2)
    with pytest.raises(ValueError, match="1-channel"):
        model(torch.randn(1, 3, 64, 64))


def test_features_only():
    model = timm.create_model("lsnet_t", features_only=True).eval()
    assert model.feature_info.reduction() == [8, 16, 32, 64]
    assert model.feature_info.channels() == [64, 128, 256, 384]
    feats = model(torch.randn(2, 3, 256, 320))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 32, 40), (2, 128, 16, 20), (2, 256, 8, 10), (2, 384, 4, 5)]
    # a subset, and the pruned tail is gone
    sub = timm.create_model("lsnet_s", features_only=True, out_indices=(1, 2))
    assert sub.feature_info.channels() == [192, 320]
    assert len(sub.model.blocks4) == 0
    assert [f.shape[1] for f in sub(torch.randn(1, 3, 128, 128))] == [192, 320]


def test_features_match_full_model():
    full = timm.create_model("lsnet_t").eval()
    feats = timm.create_model("lsnet_t", features_only=True).eval()
    feats.model.load_state_dict(full.state_dict(), strict=False)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(feats(x)[-1], full.forward_features(x))


def test_forward_head_and_reset_classifier():
    model = timm.create_model("lsnet_t").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        f = model.forward_features(x)
        assert f.shape == (2, 384, 2, 2)
        assert model.forward_head(f, pre_logits=True).shape == (2, 384)
        assert torch.equal(model.forward_head(f), model(x))
    model.reset_classifier(7)
    assert model.eval()(x).shape == (2, 7)
    model.reset_classifier(0)
    assert model(x).shape == (2, 384)
    assert model.get_classifier() is model.head


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = timm.create_model("lsnet_t", num_classes=4)
    b = timm.create_model("lsnet_t", num_classes=4)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 64, 64)
    a(x).sum().backward()
    b(x).sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize("name", ["a", "b"])
def test_fuse_float32_fixture(name):
    model, fx = tiny(name)
    fused = lsnet.fuse(model)
    with torch.no_grad():
        assert rel_err(fused(fx["input"]), fx["logits_eval"]) < 1e-5
        assert rel_err(model(fx["input"]), fx["logits_eval"]) < 1e-5  # the original is untouched
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())
    assert len(list(fused.modules())) < len(list(model.modules()))
    kinds = {type(m).__name__ for m in fused.modules()}
    assert not kinds & {"ConvBN", "BNLinear", "RepVGGDW", "BatchNorm1d"}
    # the only BatchNorms left follow SKA, which has no weights to fold into
    bns = [n for n, m in fused.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(n.endswith("mixer.bn") for n in bns)


@pytest.mark.parametrize("variant", ["lsnet_t", "lsnet_b_distill"])
def test_fuse_float64_exact(variant):
    model = timm.create_model(variant, num_classes=10).double()
    # random BN statistics and affine parameters so that folding is really exercised
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    model.eval()
    x = torch.randn(2, 3, 128, 160, dtype=torch.float64)
    fused = lsnet.fuse(model)
    assert next(fused.parameters()).dtype == torch.float64
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < 1e-9


def test_fuse_features_only_wrapper():
    model = timm.create_model("lsnet_t", features_only=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    model.eval()
    fused = lsnet.fuse(model)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(fused(x), model(x)):
            assert rel_err(a, b) < 1e-5


def test_drop_path_only_in_training():
    model = timm.create_model("lsnet_t", num_classes=3, drop_path_rate=0.2)
    ref = timm.create_model("lsnet_t", num_classes=3)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref.eval()(x))


def test_create_model_with_device_and_dtype_and_under_the_meta_device():
    """timm >= 1.0.20 passes device= and dtype= to the model class; its tests also build
    models under `with torch.device("meta")`."""
    import timm

    m = timm.create_model("lsnet_t", num_classes=7, device="cpu", dtype=torch.float64).eval()
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    assert m(torch.randn(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64
    with torch.device("meta"):
        meta = timm.create_model("lsnet_t", drop_path_rate=0.1)
    assert next(meta.parameters()).is_meta


def test_reset_classifier_keeps_dtype_device_and_mode():
    import timm

    m = timm.create_model("lsnet_t_distill", num_classes=5).double().eval()
    m.reset_classifier(3)
    assert not m.head.training and not m.head_dist.training
    assert {p.dtype for p in m.head.parameters()} == {torch.float64}
    assert m(torch.randn(1, 3, 64, 64, dtype=torch.float64)).shape == (1, 3)  # a batch of one in eval mode


@pytest.mark.parametrize("name,size", [("lsnet_t_distill", (224, 224)), ("lsnet_t_distill", (256, 320)),
                                       ("lolvit_s", (224, 224)), ("lolvit_s", (97, 130))])
def test_models_trace_with_torch_fx(name, size):
    """torch.fx symbolic tracing (timm's feature extraction, torchvision's tools): LSNet's shape
    checks, SKA's dispatch and the attention-bias resize, and LOLViT's blocks, are leaves;
    outputs unchanged."""
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torch.fx import GraphModule, Tracer

    leaves = tuple(get_notrace_modules())

    class TimmTracer(Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, leaves) or super().is_leaf_module(m, name)

    model = timm.create_model(name, num_classes=5).eval()
    traced = GraphModule(model, TimmTracer(autowrap_functions=tuple(get_notrace_functions())).trace(model))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


# ----- TorchScript ---------------------------------------------------------------------------

SMALL = dict(embed_dim=(16, 32, 48, 64), depth=(1, 2, 3, 2), key_dim=8, num_heads=2, num_classes=5)


def _with_random_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and scales (the zero-initialised ones would hide branches)."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.running_mean.normal_(0, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
                bn.weight.normal_(1, 0.2)
    return model.eval()




@pytest.mark.parametrize("options", [dict(distillation=True),
                                     dict(small_kernel=5, large_kernel=3, channels_per_group=16, use_lkp=False),
                                     dict(use_ska=False, use_se=False, use_extra_dw=False)])
def test_torchscript_matches_eager(options):
    """torch.jit.script of LSNet and its ablation options (the trained and a resized bias grid);
    the scripted model also saves and loads (no Python left in it)."""
    torch.manual_seed(0)
    model = _with_random_statistics(LSNet(**SMALL, **options))
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for size in [(224, 224), (96, 130)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            want = model(x)
            # SKA's operator returns a contiguous map where the eager kernel returns a strided view:
            # the next BatchNorm may round differently in the last bit
            assert rel_err(scripted(x), want) < 1e-5
            assert rel_err(loaded(x), want) < 1e-5


def test_torchscript_checks_the_input():
    scripted = torch.jit.script(LSNet(**SMALL).eval())
    for shape, message in [((1, 3, 63, 64), "at least 64x64 pixels"), ((1, 1, 64, 64), "3-channel"),
                           ((3, 64, 64), r"4-D batch \(N, C, H, W\), got a tensor of shape \(3, 64, 64\)")]:
        with pytest.raises(torch.jit.Error, match=message):
            scripted(torch.randn(*shape))


def test_shape_text_is_the_tuple():
    from lsnet.models.lsnet import _shape_text

    for shape in [(), (5,), (2, 3), (1, 3, 64, 64)]:
        assert _shape_text(torch.empty(shape)) == str(tuple(shape))


@pytest.mark.parametrize("size", [(224, 224), (96, 130)])
def test_torch_fx_graph_scripts(size):
    """timm's fx + TorchScript path: the traced graph's leaves (input check, SKA, bias resize) script."""
    torch.manual_seed(0)
    model = _with_random_statistics(LSNet(**SMALL, distillation=True))
    graph = torch.jit.script(timm_fx_graph(model))
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert rel_err(graph(x), model(x)) < 1e-5
