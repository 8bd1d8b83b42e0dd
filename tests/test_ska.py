"""The SKA operator: fixtures from the release, gradients, dtypes, layouts and errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import load_fixture, rel_err
from lsnet.ops import SKA, ska, ska_reference, ska_shift


def naive_ska(x, w):
    """Loop form of the definition, independent of both implementations under test."""
    n, c, h, wd = x.shape
    cw, kk = w.shape[1], w.shape[2]
    k = int(round(kk ** 0.5))
    p = (k - 1) // 2
    xp = torch.nn.functional.pad(x, (p, p, p, p))
    y = torch.zeros_like(x)
    for ch in range(c):
        for i in range(k):
            for j in range(k):
                y[:, ch] += xp[:, ch, i:i + h, j:j + wd] * w[:, ch % cw, i * k + j]
    return y


@pytest.mark.parametrize("fn", [ska, ska_reference, ska_shift])
def test_release_fixture_cases(fn):
    cases = load_fixture("ska_op")
    assert any(c["w"].shape[2] == 25 for c in cases), "the fixture should include K=5"
    for case in cases:
        y = fn(case["x"], case["w"])
        assert y.shape == case["y"].shape and y.dtype == case["y"].dtype
        assert rel_err(y, case["y"]) < 1e-6


def test_reference_matches_loop_definition():
    x = torch.randn(2, 12, 5, 6, dtype=torch.float64)
    for k in (3, 5):
        w = torch.randn(2, 4, k * k, 5, 6, dtype=torch.float64)
        assert rel_err(ska_reference(x, w), naive_ska(x, w)) < 1e-12


def test_channel_mapping_is_c_mod_cw():
    # one-hot kernels: kernel r is the identity tap (centre) for r == 1 only
    x = torch.randn(1, 6, 4, 4)
    w = torch.zeros(1, 3, 9, 4, 4)
    w[:, 1, 4] = 1.0
    y = ska(x, w)
    for c in range(6):
        expected = x[:, c] if c % 3 == 1 else torch.zeros_like(x[:, c])
        assert torch.equal(y[:, c], expected)


@pytest.mark.parametrize("k", [3, 5])
def test_gradcheck_float64(k):
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, k * k, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ska, (x, w))
    # each input alone (the backward only computes what is asked)
    assert torch.autograd.gradcheck(lambda a: ska(a, w.detach()), (x,))
    assert torch.autograd.gradcheck(lambda b: ska(x.detach(), b), (w,))


@pytest.mark.parametrize("small", [0, 1 << 30])
def test_random_shapes_agree_with_reference(monkeypatch, small):
    # both forms of the default path: shift-and-accumulate (large inputs) and unfold/fold (small)
    monkeypatch.setattr(sys.modules["lsnet.ops.ska"], "_SMALL", small)
    gen = torch.Generator().manual_seed(1234)
    for _ in range(40):
        k = [1, 3, 5, 7][int(torch.randint(0, 4, (1,), generator=gen))]
        n = int(torch.randint(1, 4, (1,), generator=gen))
        cw = int(torch.randint(1, 5, (1,), generator=gen))
        c = cw * int(torch.randint(1, 5, (1,), generator=gen))
        h, wd = (int(v) for v in torch.randint(1, 12, (2,), generator=gen))
        x = torch.randn(n, c, h, wd, dtype=torch.float64, generator=gen, requires_grad=True)
        w = torch.randn(n, cw, k * k, h, wd, dtype=torch.float64, generator=gen, requires_grad=True)
        gy = torch.randn(n, c, h, wd, dtype=torch.float64, generator=gen)
        y = ska(x, w)
        y_ref = ska_reference(x, w)
        assert rel_err(y, y_ref) < 1e-12, (n, c, cw, k, h, wd)
        gx, gw = torch.autograd.grad(y, (x, w), gy)
        gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), gy)
        assert rel_err(gx, gx_ref) < 1e-12 and rel_err(gw, gw_ref) < 1e-12, (n, c, cw, k, h, wd)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_dtypes_forward_backward(dtype, tol):
    x = torch.randn(2, 16, 9, 7).to(dtype).requires_grad_()
    w = torch.randn(2, 2, 9, 9, 7).to(dtype).requires_grad_()
    y = ska(x, w)
    assert y.dtype == dtype
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    y64 = ska_reference(x64, w64)
    assert rel_err(y, y64) < tol
    gy = torch.randn_like(y64)
    gx, gw = torch.autograd.grad(y, (x, w), gy.to(dtype))
    assert gx.dtype == dtype and gw.dtype == dtype
    gx64, gw64 = torch.autograd.grad(y64, (x64, w64), gy)
    assert rel_err(gx, gx64) < tol and rel_err(gw, gw64) < tol


def test_non_contiguous_inputs():
    x = torch.randn(2, 7, 8, 16).transpose(1, 3)[:, ::2]  # (2, 8, 8, 7) with odd strides
    w = torch.randn(2, 9, 7, 8, 4).permute(0, 4, 1, 3, 2)  # (2, 4, 9, 8, 7)
    assert not x.is_contiguous() and not w.is_contiguous()
    assert rel_err(ska(x, w), ska_reference(x.contiguous(), w.contiguous())) < 1e-6


@pytest.mark.parametrize("n", [1, 64])
def test_batch_sizes(n):
    x = torch.randn(n, 16, 6, 6)
    w = torch.randn(n, 2, 9, 6, 6)
    y = ska(x, w)
    assert rel_err(y, ska_reference(x, w)) < 1e-6
    for i in (0, n - 1):  # samples do not mix
        assert rel_err(y[i:i + 1], ska_reference(x[i:i + 1], w[i:i + 1])) < 1e-6


@pytest.mark.parametrize("x_shape,w_shape,message", [
    ((2, 16, 5, 5), (1, 2, 9, 5, 5), "agree on N, H and W"),
    ((2, 16, 5, 5), (2, 2, 9, 5, 4), "agree on N, H and W"),
    ((2, 16, 5, 5), (2, 3, 9, 5, 5), "multiple of"),
    ((2, 16, 5, 5), (2, 2, 8, 5, 5), "odd K"),
    ((2, 16, 5, 5), (2, 2, 16, 5, 5), "odd K"),
    ((16, 5, 5), (2, 2, 9, 5, 5), "4-D"),
])
def test_shape_errors_state_the_shapes(x_shape, w_shape, message):
    with pytest.raises(ValueError) as info:
        ska(torch.randn(*x_shape), torch.randn(*w_shape))
    text = str(info.value)
    assert message in text
    assert str(tuple(x_shape)) in text and str(tuple(w_shape)) in text


def test_import_needs_neither_triton_nor_cuda():
    # a None entry in sys.modules makes "import triton" raise ImportError, as if not installed
    code = ("import sys; sys.modules['triton'] = None; "
            "import lsnet, torch, timm; m = timm.create_model('lsnet_t').eval(); "
            "x = torch.randn(1, 3, 64, 64, requires_grad=True); m(x).sum().backward(); "
            "print(torch.cuda.is_available(), 'lsnet.ops.ska_triton' in sys.modules)")
    env = {**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("shape", [(2, 16, 5, 7), (2, 32, 24, 20)])  # unfold form / shift form
@pytest.mark.parametrize("channels_last", [False, True])
def test_dispatcher_op_registration(shape, channels_last):
    """torch.ops.lsnet.ska / ska_backward: schema, fake (meta) and autograd registrations, values."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(shape[0], shape[1] // 4, 9, *shape[2:], dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.lsnet.ska, (x, w))
    gy = torch.randn(shape, dtype=torch.float64)
    for need in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(torch.ops.lsnet.ska_backward, (gy, x.detach(), w.detach(), *need))
    y = torch.ops.lsnet.ska(x, w)
    assert y.stride() == torch.empty_like(x).stride()  # the layout contract: y laid out like x
    ref = ska_reference(x, w)
    assert rel_err(y, ref) < 1e-12
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    ref_gx, ref_gw = torch.autograd.grad(ref, (x, w), gy)
    assert rel_err(gx, ref_gx) < 1e-12 and rel_err(gw, ref_gw) < 1e-12
    gx, gw = torch.ops.lsnet.ska_backward(gy, x.detach(), w.detach(), True, False)
    assert rel_err(gx, ref_gx) < 1e-12 and gw.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scripted_ska_module_matches_reference(dtype):
    """torch.jit.script(SKA()) runs torch.ops.lsnet.ska: values and both gradients."""
    scripted = torch.jit.script(SKA())
    assert "lsnet.ska" in scripted.code
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for shape, cw, k in (((2, 16, 5, 7), 4, 3), ((1, 32, 24, 20), 8, 3), ((2, 6, 4, 4), 3, 5)):
        x = torch.randn(*shape, dtype=dtype, requires_grad=True)
        w = torch.randn(shape[0], cw, k * k, *shape[2:], dtype=dtype, requires_grad=True)
        gy = torch.randn(shape, dtype=dtype)
        y = scripted(x, w)
        ref = ska_reference(x, w)
        assert y.dtype == dtype and rel_err(y, ref) < tol
        gx, gw = torch.autograd.grad(y, (x, w), gy)
        ref_gx, ref_gw = torch.autograd.grad(ref, (x, w), gy)
        assert rel_err(gx, ref_gx) < tol and rel_err(gw, ref_gw) < tol


def test_scripted_model_block_with_ska():
    """A block that holds SKA as a child scripts too, and agrees with eager."""
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ska = SKA()
            self.proj = torch.nn.Conv2d(8, 2 * 9, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, _, h, wd = x.shape
            return self.ska(x, self.proj(x).view(n, 2, 9, h, wd)) + x

    block = Block()
    x = torch.randn(2, 8, 6, 5)
    assert rel_err(torch.jit.script(block)(x), block(x)) < 1e-6


def test_fx_tracing_keeps_ska_a_leaf():
    """timm's fx tracer (lsnet's models register SKA as a no-trace module) keeps SKA one node."""
    from timm.layers import is_notrace_module
    from torch.fx import Tracer

    import lsnet.models.lsnet  # noqa: F401  (registers SKA with timm)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ska = SKA()

        def forward(self, x, w):
            return self.ska(x, w) * 2

    assert is_notrace_module(SKA)

    class LeafTracer(Tracer):
        def is_leaf_module(self, m, qualname):
            return is_notrace_module(type(m)) or super().is_leaf_module(m, qualname)

    graph = LeafTracer().trace(Block())
    modules = [n.target for n in graph.nodes if n.op == "call_module"]
    assert modules == ["ska"]


def test_compiled_ska_calls_the_eager_kernels_and_matches_reference():
    x = torch.randn(2, 32, 24, 20, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 8, 9, 24, 20, dtype=torch.float64, requires_grad=True)
    calls = []
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: ska(a, b).square().sum(), backend=lambda gm, _: calls.append(gm) or gm)
    loss = compiled(x, w)
    graph = str(calls[0].graph)
    assert "lsnet.ska" in graph and "unfold" not in graph  # one opaque op, not the traced loop
    gx, gw = torch.autograd.grad(loss, (x, w))
    ref_loss = ska_reference(x, w).square().sum()
    ref_gx, ref_gw = torch.autograd.grad(ref_loss, (x, w))
    assert abs(loss.item() - ref_loss.item()) < 1e-9 * abs(ref_loss.item())
    assert rel_err(gx, ref_gx) < 1e-12 and rel_err(gw, ref_gw) < 1e-12


def test_export_traces_standard_ops_only():
    class Block(torch.nn.Module):
        def forward(self, a, b):
            return ska(a, b)

    x, w = torch.randn(1, 16, 8, 8), torch.randn(1, 4, 9, 8, 8)
    program = torch.export.export(Block(), (x, w))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("lsnet" in t for t in targets), targets  # portable: loads without lsnet
    assert rel_err(program.module()(x, w), ska_reference(x, w)) < 1e-6
