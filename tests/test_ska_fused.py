"""The fused LS-convolution inference operator on the CPU: torch.ops.lsnet.ska_bn_residual /
lsnet.ops.ska_affine_residual = SKA(x, w) * scale[c] + shift[c] + x (the Triton kernel's epilogue
is tested under the interpreter in test_ska_triton.py)."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import rel_err
from lsnet.ops import bn_scale_shift, ska_affine_residual, ska_reference
from lsnet.ops.ska_fused import _cpu_epilogue, _cpu_prescaled

FUSED = sys.modules["lsnet.ops.ska_fused"]


def eval_bn(c: int, dtype=torch.float64, seed: int = 0) -> torch.nn.BatchNorm2d:
    gen = torch.Generator().manual_seed(seed)
    bn = torch.nn.BatchNorm2d(c).to(dtype).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=gen))
        bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.weight.copy_(torch.randn(c, generator=gen))
        bn.bias.copy_(torch.randn(c, generator=gen))
    return bn


def inputs(n, c, cw, k, h, wd, dtype, channels_last, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, wd, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.randn(n, cw, k * k, h, wd, generator=gen, dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w


TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [(2, 16, 2, 3, 5, 7), (2, 64, 8, 3, 24, 20), (1, 12, 12, 5, 13, 17),
                                  (3, 6, 3, 3, 1, 1)])  # unfold form, shifted form, Cw = C / K = 5, 1x1
def test_fused_matches_bn_after_reference(case, dtype, channels_last):
    n, c, cw, k, h, wd = case
    bn = eval_bn(c)
    x, w = inputs(n, c, cw, k, h, wd, dtype, channels_last)
    with torch.no_grad():
        want = bn(ska_reference(x.double(), w.double())) + x.double()
    scale, shift = bn_scale_shift(bn)  # float64 here (a float64 BatchNorm)
    if dtype != torch.float64:
        scale, shift = scale.float(), shift.float()
    for fn in (ska_affine_residual, torch.ops.lsnet.ska_bn_residual,
               lambda *a: _cpu_epilogue(*a[:2], k, *a[2:]), lambda *a: _cpu_prescaled(*a[:2], k, *a[2:])):
        y = fn(x, w, scale, shift)
        assert y.dtype == dtype and y.shape == x.shape
        assert y.stride() == torch.empty_like(x).stride()  # laid out like x
        assert rel_err(y.double(), want) < TOL[dtype], (fn, rel_err(y.double(), want))


def test_bn_scale_shift_is_the_eval_batchnorm():
    bn = eval_bn(8, torch.float32)
    scale, shift = bn_scale_shift(bn)
    assert scale.dtype == torch.float32 and not scale.requires_grad and scale.shape == (8,)
    t = torch.randn(2, 8, 3, 3)
    assert rel_err(t * scale.view(8, 1, 1) + shift.view(8, 1, 1), bn(t).detach()) < 1e-6


def test_both_cpu_forms_of_the_sum(monkeypatch):
    # the unfold form below _FUSED_SMALL elements, the shifted form above: both against the reference
    bn = eval_bn(16)
    scale, shift = bn_scale_shift(bn)
    x, w = inputs(2, 16, 4, 3, 9, 11, torch.float64, False)
    want = bn(ska_reference(x, w)).detach() + x
    for small in (0, 1 << 30):
        monkeypatch.setattr(FUSED, "_FUSED_SMALL", small)
        assert rel_err(ska_affine_residual(x, w, scale, shift), want) < 1e-12


def test_opcheck_fused_operator():
    bn = eval_bn(16)
    scale, shift = bn_scale_shift(bn)
    for channels_last in (False, True):
        x, w = inputs(2, 16, 2, 3, 6, 7, torch.float64, channels_last)
        torch.library.opcheck(torch.ops.lsnet.ska_bn_residual, (x, w, scale, shift))


def test_gradients_fall_back_to_the_unfused_composition():
    bn = eval_bn(8)
    scale, shift = bn_scale_shift(bn)
    x, w = inputs(2, 8, 2, 3, 5, 6, torch.float64, False)
    x.requires_grad_()
    w.requires_grad_()
    y = ska_affine_residual(x, w, scale, shift)
    want = bn(ska_reference(x, w)) + x
    assert rel_err(y, want) < 1e-12
    gy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w), gy)
    ref = torch.autograd.grad(want, (x, w), gy)
    assert rel_err(got[0], ref[0]) < 1e-12 and rel_err(got[1], ref[1]) < 1e-12
    # the operator itself is inference-only: its backward says so
    y = torch.ops.lsnet.ska_bn_residual(x, w, scale, shift)
    with pytest.raises(RuntimeError, match="inference operator"):
        y.sum().backward()


@pytest.mark.parametrize("scale_shape,message", [((7,), "length C=8"), ((8, 1), "length C=8")])
def test_affine_shape_errors(scale_shape, message):
    x, w = inputs(1, 8, 2, 3, 4, 4, torch.float32, False)
    with pytest.raises(ValueError, match=message):
        ska_affine_residual(x, w, torch.ones(scale_shape), torch.zeros(8))


def test_compiled_fused_operator_is_one_node():
    bn = eval_bn(16, torch.float32)
    scale, shift = bn_scale_shift(bn)
    x, w = inputs(2, 16, 2, 3, 12, 10, torch.float32, False)
    graphs = []
    torch._dynamo.reset()
    fn = torch.compile(lambda a, b: ska_affine_residual(a, b, scale, shift),
                       backend=lambda gm, _: graphs.append(gm) or gm)
    with torch.no_grad():
        y = fn(x, w)
    assert len(graphs) == 1 and "lsnet.ska_bn_residual" in str(graphs[0].graph)
    assert rel_err(y, ska_affine_residual(x, w, scale, shift)) < 1e-6
