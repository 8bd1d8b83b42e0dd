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
import torch
from lsnet.ops import ska_reference
from lsnet.ops.ska_triton import _INTERPRETED, ska_triton

assert _INTERPRETED, "TRITON_INTERPRET=1 did not reach triton.jit"
gen = torch.Generator().manual_seed(0)
count = 0


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen).to(dtype)


def close(got, want, rtol, what):
    # tolerance relative to the largest reference value: sums of K*K products cancel
    atol = rtol * max(1.0, want.abs().max().item())
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def check(n, cw, g, k, h, wd, dtype=torch.float32, rtol=1e-5, x_view=None, w_view=None, grads=(True, True)):
    # x_view / w_view build a non-contiguous tensor with the same values as the dense one
    global count
    x = rand(n, cw * g, h, wd, dtype=dtype)
    w = rand(n, cw, k * k, h, wd, dtype=dtype)
    gy = rand(n, cw * g, h, wd, dtype=dtype)
    xt = x_view(x) if x_view else x.clone()
    wt = w_view(w) if w_view else w.clone()
    assert torch.equal(xt, x) and torch.equal(wt, w)
    xt.requires_grad_(grads[0])
    wt.requires_grad_(grads[1])
    y = ska_triton(xt, wt)
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()

    # ground truth: the unfold reference in float32/64 on the same (rounded) values
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    xr = x.to(ref_dtype).requires_grad_(grads[0])
    wr = w.to(ref_dtype).requires_grad_(grads[1])
    yr = ska_reference(xr, wr)
    what = f"n={n} cw={cw} g={g} k={k} {h}x{wd} {dtype}"
    close(y, yr, rtol, what + " y")

    if any(grads):
        # the upstream gradient comes in through a transpose, so backward sees it non-contiguous
        (y.transpose(2, 3) * gy.transpose(2, 3)).sum().backward()
        (yr * gy.to(ref_dtype)).sum().backward()
        if grads[0]:
            assert xt.grad.dtype == dtype
            close(xt.grad, xr.grad, rtol, what + " grad_x")
        else:
            assert xt.grad is None
        if grads[1]:
            assert wt.grad.dtype == dtype
            close(wt.grad, wr.grad, rtol, what + " grad_w")
        else:
            assert wt.grad is None
    count += 1


# float32: every kernel size / kernel-channel / group combination on an odd 7x9 image
for k in (3, 5):
    for cw in (1, 2, 4):
        for g in (1, 3, 8):
            check(1, cw, g, k, 7, 9)
# batch 3
check(3, 2, 3, 3, 7, 9)
check(3, 4, 1, 5, 5, 7)
# several spatial blocks per (n, r) (13*21 = 273 positions), and images smaller than K
check(1, 2, 2, 3, 13, 21)
check(2, 1, 3, 5, 13, 21)
check(1, 2, 3, 5, 2, 3)
check(1, 1, 2, 5, 1, 1)
check(1, 2, 2, 7, 6, 5)
# non-contiguous inputs: transposed, channels-last, strided slices
check(2, 2, 3, 3, 7, 9, x_view=lambda t: t.transpose(2, 3).contiguous().transpose(2, 3))
check(1, 4, 2, 5, 7, 9, x_view=lambda t: t.contiguous(memory_format=torch.channels_last),
      w_view=lambda t: t.permute(0, 3, 4, 1, 2).contiguous().permute(0, 3, 4, 1, 2))
check(1, 2, 3, 3, 7, 9, x_view=lambda t: torch.cat([t, t], dim=3)[..., ::2].copy_(t),
      w_view=lambda t: torch.cat([t, t], dim=1)[:, ::2].copy_(t))
# only one input asks for a gradient; no gradient at all
check(2, 2, 3, 3, 7, 9, grads=(True, False))
check(2, 2, 3, 5, 7, 9, grads=(False, True))
check(1, 2, 3, 3, 7, 9, grads=(False, False))
# half precision against the float32 reference on the same rounded inputs
for dtype in (torch.float16, torch.bfloat16):
    for k, cw, g in ((3, 2, 3), (5, 4, 8), (5, 1, 1)):
        check(2, cw, g, k, 7, 9, dtype=dtype, rtol=1e-2)
# float64 accumulates in float64
check(1, 2, 3, 5, 7, 9, dtype=torch.float64, rtol=1e-12)

# grad_w has one writer per element: two backward passes agree bit for bit
x = rand(2, 8, 7, 9).requires_grad_()
w = rand(2, 2, 9, 7, 9).requires_grad_()
gy = rand(2, 8, 7, 9)
g1 = torch.autograd.grad(ska_triton(x, w), (x, w), gy)
g2 = torch.autograd.grad(ska_triton(x, w), (x, w), gy)
assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
count += 1

# empty batch: no launch, empty results
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

print(f"ALL OK {count} cases")
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
