"""LOLViT (issue 20): parameter tables, shapes at any size, features, fusion, FWA pieces, ONNX."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import lsnet
from lsnet.models.lolvit import FWA, LOLViTBlock, drelu, fawa, fold_keys
from fx_tracing import assert_script_and_fx_match_eager

# Tables 16-17: Conv, GhostNetBlock x4, LOLViTBlock, GhostNetBlock, LOLViTBlock, GhostNetBlock, LOLViTBlock
TABLES = {
    "lolvit_s": ([464, 2448, 6872, 6696, 17208, 163927, 30288, 295703, 60528, 472535], 1056669),
    "lolvit_x": ([928, 3440, 8160, 10976, 30288, 269943, 60528, 468439, 109728, 900279], 1862709),
}


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module", params=sorted(TABLES))
def variant(request):
    torch.manual_seed(0)
    return request.param, timm.create_model(request.param, num_classes=10).eval()


def test_registered():
    assert {"lolvit_s", "lolvit_x"} <= set(timm.list_models("lolvit*"))


@pytest.mark.parametrize("name", sorted(TABLES))
def test_parameter_tables(name):
    model = timm.create_model(name, num_classes=0)
    modules = [model.stem] + [block for stage in model.stages for block in stage]
    per_module, total = TABLES[name]
    assert [_count(m) for m in modules] == per_module
    assert _count(model) == total == sum(per_module)


@pytest.mark.parametrize("size", [(64, 64), (67, 101)])
def test_forward_backward(variant, size):
    name, model = variant
    model.train()
    x = torch.randn(2, 3, *size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize("name,side", [("lolvit_s", 224), ("lolvit_x", 256), ("lolvit_s", 320), ("lolvit_s", 384)])
def test_eval_sizes(name, side):
    model = timm.create_model(name, num_classes=0).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, side, side + 5))
    assert feats.shape == (1, model.num_features, math.ceil(side / 32), math.ceil((side + 5) / 32))


def test_features_only():
    model = timm.create_model("lolvit_x", features_only=True).eval()
    assert model.feature_info.channels() == [32, 64, 96, 128, 192]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 160, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 80, 48), (64, 40, 24), (96, 20, 12), (128, 10, 6),
                                                   (192, 5, 3)]
    sub = timm.create_model("lolvit_s", features_only=True, out_indices=(2, 4))
    assert sub.feature_info.channels() == [64, 128]


def test_fuse_matches(variant):
    name, model = variant
    with torch.no_grad():
        for p in model.modules():  # non-trivial BN statistics
            if isinstance(p, torch.nn.BatchNorm2d):
                p.running_mean.uniform_(-0.5, 0.5)
                p.running_var.uniform_(0.5, 2.0)
        x = torch.randn(1, 3, 96, 80)
        ref = model(x)
        fused = lsnet.fuse(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused(x), ref, rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched


def test_model_api():
    model = timm.create_model("lolvit_s", num_classes=5)
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 128)
    model.set_grad_checkpointing(True)
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    with pytest.raises(ValueError):
        timm.create_model("lolvit_s", pretrained=True)


# ----- FWA pieces against straightforward references -----------------------------------------

def test_drelu_reference():
    scores = torch.randn(2, 4, 10, 7)
    dp = torch.tensor(0.5)
    expected = torch.where(scores > 0, scores, torch.zeros_like(scores)) / ((0.5 + 1e-6) * 7)
    torch.testing.assert_close(drelu(scores, dp), expected)


def test_fawa_reference():
    torch.manual_seed(0)
    h, w, d = 5, 7, 3
    tokens = torch.randn(2, h * w, d)
    for window in (1, 2, 3):
        n = math.ceil(w / window)
        expected = torch.zeros(2, n, d)
        for i in range(n):  # Eq. 4: key i sums columns [i*P_l, (i+1)*P_l) over every row
            cols = [j for j in range(i * window, (i + 1) * window) if j < w]
            for t in range(h):
                for j in cols:
                    expected[:, i] += tokens[:, t * w + j]
            expected[:, i] /= h * len(cols)
        torch.testing.assert_close(fawa(tokens, w, window), expected)


def test_fold_reference():
    keys = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    folded = fold_keys(keys, 2)
    assert folded.shape == (2, 3, 6)
    torch.testing.assert_close(folded[:, 0], torch.cat([keys[:, 0], keys[:, 1]], -1))
    torch.testing.assert_close(folded[:, 2], torch.cat([keys[:, 4], torch.zeros(2, 3)], -1))


def _fwa_reference(attn, x, grid_w, token_src):
    """Straightforward FWA: per-head loops, Token taken from ``token_src``."""
    b, n, dim = x.shape
    h, hd = attn.num_heads, attn.head_dim
    wq = attn.qt.weight
    q = x @ wq[:dim].T
    token = token_src @ wq[dim:].T
    out = torch.zeros(b, n, dim)
    for head in range(h):
        sl = slice(head * hd, (head + 1) * hd)
        keys = fold_keys(fawa(token[..., sl], grid_w, attn.window), attn.fold)
        kv = keys @ attn.kv.weight.T + attn.kv.bias
        k, v = kv[..., :hd], kv[..., hd:]
        s = q[..., sl] @ k.transpose(1, 2) / math.sqrt(hd)
        w = F.relu(s) / ((attn.dp + 1e-6) * k.shape[1]) if attn.attn_fn == "drelu" else s.softmax(-1)
        out[..., sl] = w @ v
    return out @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize("attn_fn,fold", [("drelu", 1), ("drelu", 2), ("softmax", 4)])
def test_fwa_reference(attn_fn, fold):
    torch.manual_seed(0)
    attn = FWA(16, num_heads=4, fold=fold, attn_fn=attn_fn)
    x = torch.randn(2, 6 * 5, 16)
    out, cache = attn(x, grid_w=5)
    torch.testing.assert_close(out, _fwa_reference(attn, x, 5, x), rtol=1e-5, atol=1e-5)
    assert cache.shape == (2, 4, math.ceil(5 / fold), 4 * fold)


def test_cache_equals_recompute():
    torch.manual_seed(0)
    first = FWA(16, num_heads=4, fold=2)
    cached = FWA(16, num_heads=4, fold=2, with_token=False)  # a later layer: no Token projection
    with torch.no_grad():  # share the weights: the later layer's query and K/V conv = the first's
        cached.qt.weight.copy_(first.qt.weight[:16])
        cached.kv.load_state_dict(first.kv.state_dict())
        cached.proj.load_state_dict(first.proj.state_dict())
    x1, x2 = torch.randn(2, 20, 16), torch.randn(2, 20, 16)
    _, cache = first(x1, grid_w=4)
    out_cached, _ = cached(x2, 4, cache)
    # recomputing FAWA(Token) from the first layer's input gives the same output
    torch.testing.assert_close(out_cached, _fwa_reference(first, x2, 4, x1), rtol=1e-5, atol=1e-5)
    # and a layer given its own key sequence as cache equals one that recomputes it
    out_a, keys = first(x2, 4)
    out_b, _ = first(x2, 4, keys)
    torch.testing.assert_close(out_a, out_b)


def test_block_cache_and_options():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 9, 11)
    on = LOLViTBlock(8, 16, 32, 8, depth=3, fold=2, cache=True).eval()
    off = LOLViTBlock(8, 16, 32, 8, depth=3, fold=2, cache=False).eval()
    # with the cache, layers 2..L have no Token projection (fewer parameters)
    assert _count(off) - _count(on) == 2 * 16 * 16
    for block in (on, off, LOLViTBlock(8, 16, 32, 8, patch_size=2, attn_fn="softmax", fusion="mobilevit")):
        assert block.eval()(x).shape == x.shape


# ----- ONNX ------------------------------------------------------------------------------------

def test_onnx_matches(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = timm.create_model("lolvit_s", num_classes=10).eval()
    x = torch.randn(1, 3, 96, 96)
    path = tmp_path / "lolvit_s.onnx"
    with torch.no_grad():
        ref = lsnet.fuse(model)(x).numpy()
        torch.onnx.export(lsnet.fuse(model), (x,), str(path), input_names=["input"], output_names=["logits"],
                          opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    assert abs(out - ref).max() < 1e-4


# ----- TorchScript and torch.fx ----------------------------------------------------------------



def test_torchscript_and_fx_match_eager():
    """torch.jit.script of the model and of its torch.fx graph (timm's two TorchScript tests), at
    a size that is no multiple of 32."""
    torch.manual_seed(0)
    model = timm.create_model("lolvit_s", num_classes=5).eval()
    assert_script_and_fx_match_eager(model, torch.randn(2, 3, 97, 130))


@pytest.mark.parametrize("options", [dict(depth=3, fold=2, patch_size=2, window=4),
                                     dict(depth=2, fold=3, cache=False, attn_fn="softmax", fusion="mobilevit")])
def test_block_torchscript_matches_eager(options):
    """The padding paths (map not a multiple of the patch, keys not a multiple of the fold, a
    last window cut short) and the block options, scripted."""
    torch.manual_seed(0)
    block = LOLViTBlock(8, 16, 32, 8, **options).eval()
    scripted = torch.jit.script(block)
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), block(x), rtol=0, atol=0)
