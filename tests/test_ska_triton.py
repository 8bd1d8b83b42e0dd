"""Tests of the Triton SKA kernels (lsnet.ops.ska_triton) without a GPU.

Triton picks the interpreter when a kernel is *decorated*, i.e. when ska_triton is first
imported, from TRITON_INTERPRET. This pytest process may already hold Triton (``import
lsnet`` pulls it in through timm/torch), so the kernel checks run in a fresh interpreter
subprocess with TRITON_INTERPRET=1 and report back through their exit code and stdout.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src"


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _run(code: str, **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python with ``src`` on the path and ``extra_env`` set."""
    env = {**os.environ, **extra_env}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=300)


# Every interpreter case in one subprocess: the start-up (torch, timm, triton) costs seconds,
# each kernel launch on these tiny shapes a fraction of one.
_INTERPRETER_CASES = r"""
import math
import time
import torch
import lsnet.ops.ska_triton as mod
from lsnet.ops import ska_reference
from lsnet.ops.ska_triton import _INTERPRETED, ska_triton, ska_triton_forward, ska_triton_fused

assert _INTERPRETED, "TRITON_INTERPRET=1 did not reach triton.jit"
start = time.perf_counter()
# every kernel output starts as NaN: an element a kernel forgets to write fails the comparison
mod._new_like = lambda t: torch.full_like(t, float("nan"))
gen = torch.Generator().manual_seed(0)
count = 0
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
LAYOUTS = ("NCHW", "channels-last")


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def close(got, want, rtol, what):
    # tolerance relative to the largest reference value: sums of K*K products cancel
    assert not torch.isnan(got).any(), f"{what}: NaN (an element was not written)"
    atol = rtol * max(1.0, want.abs().max().item())
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def lay_x(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels-last" else t.clone()


def lay_w(t, layout):
    # channels-last models hand SKA the (N, Cw*K*K, H, W) channels-last conv output viewed as 5-D
    if layout != "channels-last":
        return t.clone()
    n, cw, kk, h, wd = t.shape
    return t.reshape(n, cw * kk, h, wd).contiguous(memory_format=torch.channels_last).view(n, cw, kk, h, wd)


def check(n, cw, g, k, h, wd, dtype=torch.float32, layout="NCHW", grads=(True, True), x_view=None, w_view=None):
    # the values are rounded to dtype first; the reference runs in float64 on those values
    global count
    x = rand(n, cw * g, h, wd, dtype=dtype)
    w = rand(n, cw, k * k, h, wd, dtype=dtype)
    gy = rand(n, cw * g, h, wd, dtype=dtype)
    xt = x_view(x) if x_view else lay_x(x, layout)
    wt = w_view(w) if w_view else lay_w(w, layout)
    assert torch.equal(xt, x) and torch.equal(wt, w)
    if layout == "channels-last" and not x_view:
        assert mod._flat(xt)[0] is xt and mod._flat(wt)[0] is wt  # read in place, never copied
    xt.requires_grad_(grads[0])
    wt.requires_grad_(grads[1])
    y = ska_triton(xt, wt)
    assert y.dtype == dtype and y.shape == x.shape
    assert y.stride() == torch.empty_like(xt).stride(), (y.stride(), xt.stride())  # laid out like x
    xr = x.double().requires_grad_(grads[0])
    wr = w.double().requires_grad_(grads[1])
    yr = ska_reference(xr, wr)
    what = f"n={n} cw={cw} g={g} k={k} {h}x{wd} {dtype} {layout}"
    close(y, yr, TOL[dtype], what + " y")
    if any(grads):
        # the upstream gradient in the output's layout, the reference's in float64
        (y * lay_x(gy, layout)).sum().backward()
        (yr * gy.double()).sum().backward()
        for t, tr, name, need in ((xt, xr, "grad_x", grads[0]), (wt, wr, "grad_w", grads[1])):
            if need:
                assert t.grad.dtype == dtype, name
                close(t.grad, tr.grad, TOL[dtype], f"{what} {name}")
            else:
                assert t.grad is None, name
    count += 1


# float64 against the float64 reference: kernel sizes, kernel sharing (Cw = C, Cw < C, Cw = 1),
# both layouts
for layout in LAYOUTS:
    for k in (3, 5):
        for cw, g in ((4, 1), (2, 4), (1, 3)):
            check(1, cw, g, k, 7, 7, torch.float64, layout)
    # odd sizes: 1x1, an image smaller than K, 13x17 = 221 positions (not a multiple of any
    # block), batch 3; several kernel rows per tile with a partial last one (Cw = 3, G = 8)
    check(2, 2, 2, 3, 1, 1, torch.float64, layout)
    check(1, 1, 2, 5, 1, 1, torch.float64, layout)
    check(1, 2, 3, 5, 2, 3, torch.float64, layout)
    check(3, 2, 3, 3, 13, 17, torch.float64, layout)
    check(1, 3, 8, 3, 7, 7, torch.float64, layout)
    check(1, 1, 2, 7, 6, 5, torch.float64, layout)
    # only one input asks for a gradient
    check(2, 2, 3, 3, 7, 9, torch.float64, layout, grads=(True, False))
    check(2, 2, 3, 5, 7, 9, torch.float64, layout, grads=(False, True))
    check(1, 2, 3, 3, 5, 5, torch.float64, layout, grads=(False, False))
    # float32 / float16 / bfloat16 (accumulated in float32) against the float64 reference
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        check(2, 2, 4, 3, 7, 7, dtype, layout)
        check(1, 4, 2, 5, 13, 17, dtype, layout)
        check(1, 16, 1, 3, 14, 14, dtype, layout)

# the tile sizes the first call on CUDA chooses between: a fake timer makes each one win in turn
real_tuning, real_timer = mod._tuning_enabled, mod._time_ms
mod._tuning_enabled = lambda t: True
for winner in range(3):
    def fake_timer(launch, calls=[0]):
        launch()  # the trial run itself must work too
        calls[0] += 1
        return 0.0 if (calls[0] - 1) % 3 == winner else 1.0
    for layout in LAYOUTS:
        mod._TUNED.clear()
        mod._time_ms = fake_timer
        check(2, 2, 8, 3, 7, 9, torch.float32, layout)
        fwd = [v for key, v in mod._TUNED.items() if not key[0]]
        bwd = [v for key, v in mod._TUNED.items() if key[0]]
        assert fwd == [mod._TILE_CANDIDATES[False][winner]] and bwd == [mod._TILE_CANDIDATES[True][winner]], mod._TUNED
mod._tuning_enabled, mod._time_ms = real_tuning, real_timer
mod._TUNED.clear()

# other strides: a transposed-then-copied x (dense, odd order), strided slices (copied), a
# permuted w
check(2, 2, 3, 3, 7, 9, x_view=lambda t: t.transpose(2, 3).contiguous().transpose(2, 3))
check(1, 2, 3, 3, 7, 9, x_view=lambda t: torch.cat([t, t], dim=3)[..., ::2].copy_(t),
      w_view=lambda t: torch.cat([t, t], dim=1)[:, ::2].copy_(t))
check(1, 4, 2, 5, 7, 9, w_view=lambda t: t.permute(0, 3, 4, 1, 2).contiguous().permute(0, 3, 4, 1, 2))

# gradcheck in float64, both layouts
for layout in LAYOUTS:
    x = lay_x(rand(1, 4, 5, 6, dtype=torch.float64), layout).requires_grad_()
    w = lay_w(rand(1, 2, 9, 5, 6, dtype=torch.float64), layout).requires_grad_()
    assert torch.autograd.gradcheck(ska_triton, (x, w), fast_mode=True)
    count += 1
x = rand(1, 2, 2, 3, dtype=torch.float64).requires_grad_()
w = rand(1, 1, 9, 2, 3, dtype=torch.float64).requires_grad_()
assert torch.autograd.gradcheck(ska_triton, (x, w))  # the full Jacobian, on a tiny input
count += 1

# grad_w has one writer per element: two backward passes agree bit for bit
x = rand(2, 8, 7, 9).requires_grad_()
w = rand(2, 2, 9, 7, 9).requires_grad_()
gy = rand(2, 8, 7, 9)
g1 = torch.autograd.grad(ska_triton(x, w), (x, w), gy)
g2 = torch.autograd.grad(ska_triton(x, w), (x, w), gy)
assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
count += 1

# the fused inference kernel: SKA * scale + shift + x against an eval BatchNorm after the reference
for layout in LAYOUTS:
    for dtype, (n, cw, g, k, h, wd) in ((torch.float64, (2, 2, 4, 3, 7, 7)), (torch.float64, (1, 3, 2, 5, 13, 17)),
                                         (torch.float32, (3, 2, 8, 3, 7, 7)), (torch.bfloat16, (2, 4, 2, 3, 5, 6)),
                                         (torch.float16, (1, 2, 2, 3, 1, 1))):
        c = cw * g
        bn = torch.nn.BatchNorm2d(c).double().eval()
        bn.running_mean.copy_(rand(c, dtype=torch.float64))
        bn.running_var.copy_(rand(c, dtype=torch.float64).abs() + 0.5)
        bn.weight.data.copy_(rand(c, dtype=torch.float64))
        bn.bias.data.copy_(rand(c, dtype=torch.float64))
        with torch.no_grad():
            scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).to(torch.float32 if dtype != torch.float64 else dtype)
            shift = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).to(scale.dtype)
            x = rand(n, c, h, wd, dtype=dtype)
            w = rand(n, cw, k * k, h, wd, dtype=dtype)
            want = bn(ska_reference(x.double(), w.double())) + x.double()
            xt = lay_x(x, layout)
            y = ska_triton_fused(xt, lay_w(w, layout), k, scale, shift)
        assert y.dtype == dtype and y.stride() == torch.empty_like(xt).stride()
        close(y, want, TOL[dtype] if dtype != torch.float64 else 1e-12, f"fused {dtype} {layout} {(n, cw, g, k, h, wd)}")
        count += 1

# the triton_ops run the same kernels (eagerly here; torch.compile needs a GPU to trace them)
assert mod.TRITON_OPS
x = rand(2, 8, 5, 6, dtype=torch.float64)
w = rand(2, 2, 9, 5, 6, dtype=torch.float64)
gy = rand(2, 8, 5, 6, dtype=torch.float64)
close(torch.ops.lsnet.ska_triton(x, w), ska_reference(x, w), 1e-12, "triton_op forward")
gx, gw = torch.ops.lsnet.ska_triton_backward(gy, x, w, True, True)
xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
rgx, rgw = torch.autograd.grad(ska_reference(xr, wr), (xr, wr), gy)
close(gx, rgx, 1e-12, "triton_op grad_x")
close(gw, rgw, 1e-12, "triton_op grad_w")
xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
agx, agw = torch.autograd.grad(torch.ops.lsnet.ska_triton(xg, wg), (xg, wg), gy)
assert torch.equal(agx, gx) and torch.equal(agw, gw)
mod._new_like = torch.empty_like
checks = ("test_schema", "test_autograd_registration", "test_faketensor")
torch.library.opcheck(torch.ops.lsnet.ska_triton, (xg, wg), test_utils=checks)
torch.library.opcheck(torch.ops.lsnet.ska_triton_backward, (gy, x, w, True, False), test_utils=checks)
torch.library.opcheck(torch.ops.lsnet.ska_bn_residual_triton, (x, w, gy[0, :, 0, 0].clone(), gy[1, :, 0, 0].clone()),
                      test_utils=checks)
count += 1

# empty batch: no launch, empty results, a zero grad_w
x = torch.zeros(0, 4, 5, 5, requires_grad=True)
w = torch.zeros(0, 2, 9, 5, 5, requires_grad=True)
y = ska_triton(x, w)
assert y.shape == (0, 4, 5, 5)
y.sum().backward()
assert x.grad.shape == x.shape and w.grad.shape == w.shape
count += 1

# bad shapes are refused with the shared message, before any launch
try:
    ska_triton(torch.zeros(1, 3, 5, 5), torch.zeros(1, 2, 9, 5, 5))
except ValueError as exc:
    assert "multiple" in str(exc)
else:
    raise AssertionError("C not a multiple of Cw was accepted")
count += 1

print(f"ALL OK {count} cases in {time.perf_counter() - start:.1f} s")
"""


@pytest.mark.skipif(not _triton_importable(), reason="triton is not installed (the Triton SKA kernels need it)")
def test_kernels_match_reference_under_interpreter():
    """Forward and both gradients against ska_reference, run by the Triton interpreter."""
    proc = _run(_INTERPRETER_CASES, TRITON_INTERPRET="1")
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, report
    assert "ALL OK" in proc.stdout, report


def test_import_lsnet_and_cpu_ska_without_triton_kernels():
    """``import lsnet`` works and SKA on CPU neither imports nor calls the Triton kernels."""
    proc = _run(
        r"""
        import sys
        import torch
        import lsnet
        from lsnet.ops import ska, ska_reference

        x = torch.randn(2, 6, 5, 7, requires_grad=True)
        w = torch.randn(2, 3, 9, 5, 7, requires_grad=True)
        y = ska(x, w)
        y.sum().backward()
        torch.testing.assert_close(y, ska_reference(x, w))
        assert "lsnet.ops.ska_triton" not in sys.modules, "CPU SKA imported the Triton kernels"
        assert "cpu" not in sys.modules["lsnet.ops.backends"]._BACKENDS
        print("CPU OK")
        """
    )
    assert proc.returncode == 0 and "CPU OK" in proc.stdout, f"{proc.stdout}\n{proc.stderr[-6000:]}"


def test_cpu_ska_does_not_dispatch_to_triton(monkeypatch):
    """In-process: the CPU path never asks for the CUDA backend."""
    ska_module = importlib.import_module("lsnet.ops.ska")

    def refuse(device_type):
        raise AssertionError("CPU SKA tried to load the Triton backend")

    monkeypatch.setattr(ska_module, "backend_for", refuse)
    x = torch.randn(1, 4, 6, 5)
    w = torch.randn(1, 2, 25, 6, 5)
    torch.testing.assert_close(ska_module.ska(x, w), ska_module.ska_reference(x, w))


def test_missing_triton_raises_import_error():
    """Without Triton the module raises ImportError, which ska.py turns into the shift path."""
    proc = _run(
        r"""
        import sys
        sys.modules["triton"] = None  # makes every `import triton` raise ImportError
        import importlib
        import torch
        try:
            import lsnet.ops.ska_triton
        except ImportError:
            pass
        else:
            raise AssertionError("lsnet.ops.ska_triton imported without triton")
        backends = importlib.import_module("lsnet.ops.backends")
        assert backends.backend_for("cuda") is None
        print("NO TRITON OK")
        """
    )
    assert proc.returncode == 0 and "NO TRITON OK" in proc.stdout, f"{proc.stdout}\n{proc.stderr[-6000:]}"


# Compiled ahead of time for an H100/H200 (sm_90) without a GPU: the interpreter runs the kernels
# as Python and accepts code the compiler refuses (e.g. a constexpr reassigned in an unrolled
# loop), so every kernel variant the launchers use is also compiled to a cubin here.
_COMPILE_CASES = r"""
import re

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import lsnet.ops.ska_triton as mod

assert not mod._INTERPRETED
TARGET = GPUTarget("cuda", 90, 32)
PTR = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "fp64": "fp64"}
ACC = {"fp64": tl.float64}
# the strides that are 1 in each layout (Triton specialises integer arguments equal to 1)
UNIT = {False: {"xsP", "ysP", "wsP", "gsP", "gxsP", "gwsP"}, True: {"xsC", "ysC", "gsC", "gxsC", "wsT", "gwsT"}}


def build(kernel, dtype, channels_last, meta, warps):
    names = list(kernel.arg_names)
    signature, constants = {}, {}
    for name in names:
        if name.endswith("_ptr"):
            signature[name] = "*" + ("fp32" if name in ("scale_ptr", "shift_ptr") else PTR[dtype])
        elif name in meta:
            signature[name] = "constexpr"
            constants[name] = meta[name]
        elif name in UNIT[channels_last]:
            signature[name] = "constexpr"
            constants[name] = 1
        else:
            signature[name] = "i32"
    src = ASTSource(kernel, signature, constexprs={(names.index(k),): v for k, v in constants.items()})
    compiled = triton.compile(src, target=TARGET, options={"num_warps": warps})
    ptx = compiled.asm["ptx"]
    assert not re.search(r"^\s*(@%p\d+\s+)?(atom|red)\.", ptx, re.M), "atomics in an SKA kernel"
    return compiled


count = 0
for dtype, shapes in (("fp32", [(2048, 128, 16, 196)]), ("bf16", [(2048, 256, 32, 49)]),
                      ("fp16", [(2, 24, 3, 221)]), ("fp64", [(1, 16, 16, 9)])):
    for n, c, cw, hw in shapes:
        for channels_last in (False, True):
            acc = ACC.get(dtype, tl.float32)
            # the default tile in every variant; for the LSNet-T stage-2 shape also the other tile
            # sizes the first-call measurement tries
            first = n == 2048 and dtype == "fp32"
            for i, target in enumerate(mod._TILE_CANDIDATES[False] if first else mod._TILE_CANDIDATES[False][:1]):
                _, br, bg, bp, warps = mod.launch_config(False, channels_last, n, c, cw, hw, target)
                for affine in (False, True) if i == 0 else (False,):
                    build(mod._ska_fwd_kernel, dtype, channels_last,
                          dict(K=3, BR=br, BG=bg, BP=bp, ACC=acc, AFFINE=affine), warps)
                    count += 1
            for i, target in enumerate(mod._TILE_CANDIDATES[True] if first else mod._TILE_CANDIDATES[True][:1]):
                _, br, bg, bp, warps = mod.launch_config(True, channels_last, n, c, cw, hw, target)
                needs = [(True, True), (True, False), (False, True)] if first and i == 0 else [(True, True)]
                for need_x, need_w in needs:
                    build(mod._ska_bwd_kernel, dtype, channels_last,
                          dict(K=3, BR=br, BG=bg, BP=bp, ACC=acc, NEED_X=need_x, NEED_W=need_w), warps)
                    count += 1
build(mod._ska_fwd_kernel, "fp32", False, dict(K=5, BR=1, BG=4, BP=256, ACC=tl.float32, AFFINE=False), 4)
print(f"COMPILED {count + 1} variants")
"""


def _sm90_compiler_available() -> bool:
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
        import triton.backends.nvidia  # noqa: F401
    except Exception:  # noqa: BLE001 - any missing piece means: cannot compile here
        return False
    return True


@pytest.mark.skipif(not _triton_importable() or not _sm90_compiler_available(),
                    reason="needs Triton with its NVIDIA backend (ptxas) to compile for sm_90")
def test_kernels_compile_for_sm90_without_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_COMPILE_CASES)], env=env, capture_output=True,
                          text=True, timeout=600)
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0 and "COMPILED" in proc.stdout, report
