"""GPU measurement suite for LSNet (issue 22): correctness first, then speed, in one run.

    PYTHONPATH=src python benchmarks/gpu_suite.py --json gpu.json            # on one H100/H200
    PYTHONPATH=src python benchmarks/gpu_suite.py --dry --json dry.json      # on the CPU, tiny shapes

Sections, in this order (``--sections`` picks a subset, by name or number):

1. ``correctness``: every SKA implementation on the device (on CUDA: the public ``ska``, which
   dispatches to the registered Triton backend, the dispatcher operator ``torch.ops.lsnet.ska``,
   the generic shifted form ``ska_shift`` and the traced form ``ska_functional``; plus the Triton
   forward and backward kernels launched directly into NaN-filled output buffers) against the
   unfold reference in float64, forward and both gradients, and the fused inference operator
   ``ska_affine_residual`` (public, and its Triton kernel into NaN-filled buffers) against
   ``SKA * scale + shift + x`` in float64, on fresh random inputs, at the five SKA shapes of the
   issue, float32 and bfloat16, NCHW and channels-last inputs (w then in the channels-last
   layout LKP's convolution hands over). Before each public call the caching allocator is emptied and refilled
   with freed NaN blocks of the outputs' sizes, so an element the kernel forgets to write shows up
   as NaN (the "poison" column says whether the outputs landed in those blocks).
2. ``bandwidth``: a large device-to-device copy, GB/s counting read + write.
3. ``ska``: median ms of the SKA forward and forward+backward (ours = ``lsnet.ops.ska`` vs the
   unfold reference ``ska_reference`` run in the same dtype) and of the fused inference op
   (``ska_affine_residual``, forward), float32 and bfloat16, NCHW and channels-last, GB/s
   counting each byte of x, w and y once (forward+backward: x, w, y, grad y, grad x, grad w once
   each) and % of the copy rate.
4. ``throughput``: images/s of the fused models (``lsnet.fuse``) at 224x224 beside timm peers:
   float32 eager, bfloat16 autocast + channels-last, and ``torch.compile`` (float32).
5. ``latency``: batch-1 median ms, eager and replayed from a CUDA graph of the fused forward.
6. ``train``: training step (forward, cross-entropy, backward, AdamW) at batch 256, float32 and
   bfloat16 autocast + channels-last: median ms per step and peak allocated memory.

GPU times come from CUDA events around each call (after warm-up; one synchronisation at the
end of a series); CPU times from ``time.perf_counter``. Each section prints one markdown table;
``--json`` writes every row. The exit status is 1 when a correctness check failed or a row raised
an error (the suite carries on after either), 0 otherwise.

``--dry`` runs every section on the CPU with tiny shapes, batch 2 and 1-2 repeats, to exercise
the code paths and the output formats (tests/test_gpu_suite.py). It sets TRITON_INTERPRET=1
before Triton is imported, so the Triton kernels are checked too (by the interpreter). CUDA
graphs and CUDA events are skipped there with a note, and so is ``torch.compile`` unless
``--dry-compile`` is given (compiling the models takes minutes on a small CPU).

Only the standard library, torch, timm, triton (optional) and lsnet are needed.
"""

from __future__ import annotations

import os
import sys

if "--dry" in sys.argv[1:]:
    # the interpreter is chosen when triton.jit decorates a kernel: set it before any import
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Dict, List, Optional  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import lsnet  # noqa: E402,F401  (registers the lsnet_* models with timm)
from lsnet.ops import ska, ska_affine_residual, ska_functional, ska_reference, ska_shift  # noqa: E402
from lsnet.ops.backends import backend_for  # noqa: E402
from lsnet.deploy.cuda_graph import CUDAGraphModel  # noqa: E402
from lsnet.deploy.profile import count_aten_ops  # noqa: E402

SECTIONS = ["correctness", "bandwidth", "ska", "throughput", "latency", "train"]

# (label, batch, channels, height, width); w has C/8 kernels of 3x3 taps (LSNet's groups=8, K=3)
SKA_SHAPES = [
    ("LSNet-T stage 2", 2048, 128, 14, 14),
    ("LSNet-T stage 3", 2048, 256, 7, 7),
    ("LSNet-B stage 1", 256, 128, 28, 28),
    ("LSNet-B stage 2", 256, 256, 14, 14),
    ("64 ch 56x56", 256, 64, 56, 56),
]
SKA_GROUPS = 8
SKA_K = 3
MODELS = ["lsnet_t", "lsnet_s", "lsnet_b", "efficientvit_m3", "efficientvit_m4", "efficientvit_m5", "shvit_s3",
          "repvit_m1_1"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# max |got - ref| / max |ref| allowed, per dtype of the inputs and outputs
TOLERANCE = {"fp32": 2e-5, "bf16": 3e-2}


class Suite:
    """Shared state: options, device, timers, and the failures that decide the exit status."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry = args.dry
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.failures: List[str] = []
        self.copy_gbs: Optional[float] = None  # set by the bandwidth section, used by the SKA one

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def times_ms(self, fn: Callable[[], object], warmup: Optional[int] = None,
                 repeats: Optional[int] = None) -> List[float]:
        """Per-call ms of ``fn`` after ``warmup`` calls: CUDA events on a GPU, perf_counter otherwise."""
        warmup = self.args.warmup if warmup is None else warmup
        repeats = self.args.repeats if repeats is None else repeats
        for _ in range(warmup):
            fn()
        self.sync()
        if self.cuda:
            marks = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                marks.append((start, end))
            self.sync()
            return [s.elapsed_time(e) for s, e in marks]
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
        return out

    def median_ms(self, fn, warmup=None, repeats=None) -> float:
        return statistics.median(self.times_ms(fn, warmup, repeats))

    def empty_cache(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()

    def fail(self, what: str) -> None:
        self.failures.append(what)


# ------------------------------------------------------------------------------ output helpers

def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and abs(v) < 10 ** -digits:
            return f"{v:.2e}"
        return f"{v:,.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def print_table(title: str, columns: List[tuple], rows: List[dict], notes: List[str]) -> None:
    """One markdown table: ``columns`` is [(header, key, digits)], rows are dicts."""
    print(f"\n## {title}\n", flush=True)
    print("| " + " | ".join(h for h, _, _ in columns) + " |")
    print("|" + "|".join("---" if d is None else "---:" for _, _, d in columns) + "|")
    for r in rows:
        print("| " + " | ".join(fmt(r.get(k), d if d is not None else 3) for _, k, d in columns) + " |")
    for n in notes:
        print(f"\nNote: {n}")
    sys.stdout.flush()


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def ska_shapes(suite: Suite):
    """The five SKA shapes, shrunk in dry mode (batch 2, channels / 8) but keeping the maps."""
    for label, n, c, h, w in SKA_SHAPES:
        if suite.dry:
            n, c = 2, max(SKA_GROUPS * 2, c // 8)
        yield label, n, c, h, w


def ska_inputs(n, c, h, w, dtype, device, gen):
    """Fresh x, w, grad-y of one shape: standard normal values rounded to ``dtype``."""
    cw = c // SKA_GROUPS
    x = torch.randn(n, c, h, w, device=device, generator=gen).to(dtype)
    k = torch.randn(n, cw, SKA_K * SKA_K, h, w, device=device, generator=gen).to(dtype)
    gy = torch.randn(n, c, h, w, device=device, generator=gen).to(dtype)
    return x, k, gy


def layout(t: torch.Tensor, name: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if name == "channels-last" else t.contiguous()


def layout_w(k: torch.Tensor, name: str) -> torch.Tensor:
    """w as a model hands it over: contiguous for NCHW; for channels-last, LKP's channels-last
    (N, Cw*K*K, H, W) convolution output viewed as (N, Cw, K*K, H, W)."""
    if name != "channels-last":
        return k.contiguous()
    n, cw, kk, h, w = k.shape
    return k.reshape(n, cw * kk, h, w).contiguous(memory_format=torch.channels_last).view(n, cw, kk, h, w)


def affine_inputs(c: int, device, gen):
    """Per-channel float32 scale and shift of an eval BatchNorm (scale in [0.5, 1.5])."""
    scale = torch.rand(c, device=device, generator=gen) + 0.5
    shift = torch.randn(c, device=device, generator=gen)
    return scale, shift


def layouts_for(suite: Suite) -> List[str]:
    return ["NCHW", "channels-last"]


# ------------------------------------------------------------------------------ 1. correctness

def _name_of(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__name__', type(fn).__name__)}"


def _ska_implementations(suite: Suite) -> Dict[str, Callable]:
    impls = {}
    if suite.cuda:
        backend = backend_for("cuda")
        impls[f"ska -> {_name_of(backend) if backend else 'generic path (no CUDA backend)'}"] = ska
        impls["ska_shift (generic)"] = ska_shift
    else:
        impls["ska (CPU default)"] = ska
    impls["ska_functional (traced form)"] = ska_functional
    return impls


def _triton_module(suite: Suite):
    """lsnet.ops.ska_triton when it can run here (CUDA, or the interpreter on the CPU), else None."""
    try:
        from lsnet.ops import ska_triton as mod
    except ImportError:
        return None
    if suite.cuda or getattr(mod, "_INTERPRETED", False):
        return mod
    return None


def _poison(suite: Suite, like: List[torch.Tensor], copies: int = 3) -> set:
    """Free the cached blocks, then allocate ``copies`` NaN-filled (all bits set) blocks of each
    size in ``like`` and free them again, so that the next allocations of those sizes reuse them.
    Returns their addresses. On the CPU the allocator gives no such promise (addresses still
    returned; the caller reports whether its outputs landed there)."""
    suite.empty_cache()
    blocks = [torch.empty(t.numel() * t.element_size(), dtype=torch.uint8, device=t.device).fill_(255)
              for t in like for _ in range(copies)]
    ptrs = {b.data_ptr() for b in blocks}
    del blocks
    return ptrs


def _rel_err(got: Optional[torch.Tensor], ref: torch.Tensor) -> float:
    if got is None:
        return float("nan")
    diff = (got.double() - ref).abs().max().item()
    return diff / max(ref.abs().max().item(), 1e-30)


def _nan_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, float("nan"))


def _triton_direct(mod, x, k, gy, kk: int):
    """The Triton kernels launched on the given layouts with every output buffer NaN-filled
    (the module's output allocator swapped for one that fills with NaN): forward, then the
    backward kernel for both gradients."""
    previous = mod._new_like
    mod._new_like = _nan_like
    try:
        y = mod.ska_triton_forward(x, k, kk)
        gx, gw = mod.ska_triton_backward(gy, x, k, kk, True, True)
    finally:
        mod._new_like = previous
    return y, gx, gw


def _triton_direct_fused(mod, x, k, scale, shift, kk: int):
    previous = mod._new_like
    mod._new_like = _nan_like
    try:
        return mod.ska_triton_fused(x, k, kk, scale, shift)
    finally:
        mod._new_like = previous


def section_correctness(suite: Suite) -> dict:
    rows, notes = [], []
    impls = _ska_implementations(suite)
    triton_mod = _triton_module(suite)
    direct = triton_mod is not None and all(hasattr(triton_mod, a) for a in
                                            ("_new_like", "ska_triton_forward", "ska_triton_backward",
                                             "ska_triton_fused"))
    impls = dict(impls)
    impls["torch.ops.lsnet.ska (dispatcher op)"] = torch.ops.lsnet.ska
    where = "" if suite.cuda else " (interpreter)"
    if direct:
        impls["ska_triton kernels, NaN-filled out" + where] = "direct"
    # the fused inference op: forward only, against bn(SKA) + x in float64
    impls["ska_affine_residual (fused op)"] = "fused"
    if direct:
        impls["ska_triton fused kernel, NaN-filled out" + where] = "fused direct"
    elif suite.cuda:
        notes.append("the Triton module did not import: only the generic paths were checked")
    else:
        notes.append("Triton kernels not checked here (set TRITON_INTERPRET=1 before import to check them on the CPU)")
    if not suite.cuda:
        notes.append("CPU: the allocator cannot be pre-filled, so public calls may get fresh (unpoisoned) memory; "
                     "the direct Triton rows write into NaN-filled buffers")
    gen = torch.Generator(device=suite.device).manual_seed(suite.args.seed)
    for label, n, c, h, w in ska_shapes(suite):
        for dname, dtype in DTYPES.items():
            try:
                x, k, gy = ska_inputs(n, c, h, w, dtype, suite.device, gen)
                # float64 ground truth on the same rounded values, shared by every layout and implementation
                xr = x.double().requires_grad_(True)
                kr = k.double().requires_grad_(True)
                yr = ska_reference(xr, kr)
                gxr, gkr = torch.autograd.grad(yr, (xr, kr), gy.double())
                yr = yr.detach()
                scale, shift = affine_inputs(c, suite.device, gen)
                fr = yr * scale.double().view(c, 1, 1) + shift.double().view(c, 1, 1) + x.double()
                del xr, kr
            except Exception as exc:  # noqa: BLE001 - report and carry on
                suite.fail(f"correctness reference {label} {dname}: {error_text(exc)}")
                rows.append(dict(impl="float64 reference", shape=label, dtype=dname, layout="-", ok=False,
                                 error=error_text(exc)))
                continue
            for lname in layouts_for(suite):
                for iname, fn in impls.items():
                    row = dict(impl=iname, shape=label, size=f"{n}x{c}x{h}x{w}", dtype=dname, layout=lname)
                    try:
                        xi = layout(x, lname).requires_grad_(True)
                        ki = layout_w(k, lname).requires_grad_(True)
                        gyi = layout(gy, lname)
                        if fn in ("fused", "fused direct"):
                            with torch.no_grad():
                                if fn == "fused":
                                    ptrs = _poison(suite, [x])
                                    y = ska_affine_residual(xi, ki, scale, shift)
                                    row["poisoned"] = f"{int(y.data_ptr() in ptrs)}/1"
                                else:
                                    y = _triton_direct_fused(triton_mod, xi, ki, scale, shift, SKA_K)
                                    row["poisoned"] = "1/1"
                            suite.sync()
                            row["err_y"] = _rel_err(y, fr)
                            finite = bool(torch.isfinite(y).all())
                            layout_ok = y.shape == x.shape and y.stride() == torch.empty_like(xi).stride()
                            tol = TOLERANCE[dname]
                            row["ok"] = bool(finite and layout_ok and row["err_y"] <= tol)
                            if not row["ok"]:
                                why = ("non-finite values" if not finite else "wrong shape or layout" if not layout_ok
                                       else f"err {row['err_y']:.3g} > tolerance {tol:g}")
                                suite.fail(f"correctness {iname} {label} {dname} {lname}: {why}")
                            rows.append(row)
                            del xi, ki, gyi, y
                            continue
                        if fn == "direct":
                            y, gx, gk = _triton_direct(triton_mod, xi.detach(), ki.detach(), gyi, SKA_K)
                            row["poisoned"] = "3/3"
                        else:
                            ptrs = _poison(suite, [x])
                            y = fn(xi, ki)
                            landed = int(y.data_ptr() in ptrs)
                            ptrs = _poison(suite, [x, k])
                            gx, gk = torch.autograd.grad(y, (xi, ki), gyi)
                            landed += int(gx.data_ptr() in ptrs) + int(gk.data_ptr() in ptrs)
                            row["poisoned"] = f"{landed}/3"
                        suite.sync()
                        row["err_y"] = _rel_err(y.detach(), yr)
                        row["err_gx"] = _rel_err(gx, gxr)
                        row["err_gw"] = _rel_err(gk, gkr)
                        finite = all(bool(torch.isfinite(t).all()) for t in (y, gx, gk))
                        shape_ok = y.shape == x.shape and gx.shape == x.shape and gk.shape == k.shape
                        tol = TOLERANCE[dname]
                        row["ok"] = bool(finite and shape_ok and max(row["err_y"], row["err_gx"], row["err_gw"]) <= tol)
                        if not row["ok"]:
                            worst = max(row["err_y"], row["err_gx"], row["err_gw"])
                            why = ("non-finite values" if not finite else "wrong shape" if not shape_ok
                                   else f"err {worst:.3g} > tolerance {tol:g}")
                            suite.fail(f"correctness {iname} {label} {dname} {lname}: {why}")
                        del xi, ki, gyi, y, gx, gk
                    except Exception as exc:  # noqa: BLE001
                        row.update(ok=False, error=error_text(exc))
                        suite.fail(f"correctness {iname} {label} {dname} {lname}: {error_text(exc)}")
                    rows.append(row)
            del x, k, gy, yr, gxr, gkr, fr
            suite.empty_cache()
    notes.append("fused rows: y = SKA(x, w) * scale + shift + x (inference op; no gradients), reference in float64; "
                 "channels-last rows pass w as the channels-last convolution output viewed as 5-D (as models do)")
    notes.append("err = max |got - ref| / max |ref| against SKA in float64 on the same rounded inputs; "
                 f"pass when every err <= {TOLERANCE['fp32']:g} (fp32) / {TOLERANCE['bf16']:g} (bf16) and all "
                 "values finite; 'poisoned' counts the outputs (y, grad x, grad w) that landed in NaN-filled memory")
    failed = sum(1 for r in rows if not r.get("ok"))
    notes.append(f"{len(rows) - failed} of {len(rows)} checks passed")
    columns = [("implementation", "impl", None), ("shape", "shape", None), ("N x C x H x W", "size", None),
               ("dtype", "dtype", None), ("x layout", "layout", None), ("err y", "err_y", 2),
               ("err grad x", "err_gx", 2), ("err grad w", "err_gw", 2), ("poisoned", "poisoned", None),
               ("pass", "ok", None), ("error", "error", None)]
    return dict(title="1. Correctness of the SKA implementations (float64 reference)", columns=columns, rows=rows,
                notes=notes, summary=dict(checks=len(rows), failed=failed))


# ------------------------------------------------------------------------------ 2. bandwidth

def section_bandwidth(suite: Suite) -> dict:
    mib = 8 if suite.dry else suite.args.copy_mib
    src = torch.empty(mib * 2 ** 20, dtype=torch.uint8, device=suite.device).random_(0, 256)
    dst = torch.empty_like(src)
    ms = suite.median_ms(lambda: dst.copy_(src), repeats=max(suite.args.repeats, 5))
    ok = torch.equal(src[:: 4096], dst[:: 4096])
    if not ok:
        suite.fail("bandwidth: the copy did not reproduce its source")
    gbs = 2 * src.numel() / (ms * 1e-3) / 1e9
    suite.copy_gbs = gbs
    row = dict(what="device-to-device copy", mib=mib, ms=ms, gbs=gbs, ok=ok)
    columns = [("what", "what", None), ("MiB", "mib", 0), ("median ms", "ms", 3), ("GB/s (read + write)", "gbs", 1),
               ("copy checked", "ok", None)]
    return dict(title="2. Copy bandwidth", columns=columns, rows=[row],
                notes=["GB/s = 2 x bytes / median time (each byte read once and written once), 1 GB = 1e9 bytes"],
                summary=dict(copy_gbs=gbs))


# ------------------------------------------------------------------------------ 3. SKA kernels

def section_ska(suite: Suite) -> dict:
    rows, notes = [], []
    impls = {"ours (ska)": ska, "unfold reference": ska_reference, "ours fused (ska_bn_residual)": "fused"}
    gen = torch.Generator(device=suite.device).manual_seed(suite.args.seed + 1)
    if suite.copy_gbs is None:
        notes.append("the bandwidth section did not run: no % of copy")
    for label, n, c, h, w in ska_shapes(suite):
        for dname, dtype in DTYPES.items():
            x0, k0, gy0 = ska_inputs(n, c, h, w, dtype, suite.device, gen)
            scale, shift = affine_inputs(c, suite.device, gen)
            size = x0.element_size()
            fwd_bytes = (2 * x0.numel() + k0.numel()) * size  # x, w read, y written
            both_bytes = 2 * fwd_bytes + (x0.numel() + k0.numel()) * size  # + grad y, grad x, grad w
            for lname in layouts_for(suite):
                x = layout(x0, lname).requires_grad_(True)
                k = layout_w(k0, lname).requires_grad_(True)
                gy = layout(gy0, lname)
                for iname, fn in impls.items():
                    row = dict(impl=iname, shape=label, size=f"{n}x{c}x{h}x{w}", dtype=dname, layout=lname)
                    try:
                        if fn == "fused":
                            def forward(x=x, k=k):
                                with torch.no_grad():
                                    ska_affine_residual(x, k, scale, shift)

                            forward_backward = None  # inference only
                        else:
                            def forward(fn=fn, x=x, k=k):
                                with torch.no_grad():
                                    fn(x, k)

                            def forward_backward(fn=fn, x=x, k=k, gy=gy):
                                torch.autograd.grad(fn(x, k), (x, k), gy)

                        row["fwd_ms"] = suite.median_ms(forward)
                        row["fwd_gbs"] = fwd_bytes / (row["fwd_ms"] * 1e-3) / 1e9
                        if forward_backward is not None:
                            row["both_ms"] = suite.median_ms(forward_backward)
                            row["both_gbs"] = both_bytes / (row["both_ms"] * 1e-3) / 1e9
                        if suite.copy_gbs:
                            row["fwd_pct"] = 100 * row["fwd_gbs"] / suite.copy_gbs
                            if "both_gbs" in row:
                                row["both_pct"] = 100 * row["both_gbs"] / suite.copy_gbs
                    except Exception as exc:  # noqa: BLE001
                        row["error"] = error_text(exc)
                        suite.fail(f"ska {iname} {label} {dname} {lname}: {error_text(exc)}")
                    rows.append(row)
                del x, k, gy
            del x0, k0, gy0
            suite.empty_cache()
    notes.append("bytes: forward x + w + y; forward+backward x + w + y + grad y + grad x + grad w, each once; "
                 "the unfold reference runs in the benchmark dtype; w is (N, C/8, 9, H, W): contiguous for NCHW, "
                 "for channels-last the channels-last convolution output viewed as 5-D (as LKP hands it over)")
    notes.append("fused = SKA * scale + shift + x in one op (LSConv's eval BatchNorm and residual); its bytes are "
                 "counted as the forward's (the two C-vectors are negligible); compare its ms with ours + the "
                 "separate BatchNorm and add it replaces")
    columns = [("implementation", "impl", None), ("shape", "shape", None), ("N x C x H x W", "size", None),
               ("dtype", "dtype", None), ("x layout", "layout", None), ("fwd ms", "fwd_ms", 3),
               ("fwd+bwd ms", "both_ms", 3), ("fwd GB/s", "fwd_gbs", 1), ("fwd % copy", "fwd_pct", 1),
               ("fwd+bwd GB/s", "both_gbs", 1), ("fwd+bwd % copy", "both_pct", 1), ("error", "error", None)]
    return dict(title="3. SKA kernels (median ms)", columns=columns, rows=rows, notes=notes)


# ------------------------------------------------------------------------------ models

def _create(name: str, suite: Suite, fused: bool):
    import timm

    model = timm.create_model(name, pretrained=False)
    if fused:
        model = lsnet.fuse(model.eval(), inplace=True)
    return model.to(suite.device)


def _available(name: str) -> bool:
    import timm

    return bool(timm.list_models(name))


def _batch_for(suite: Suite, name: str, default: int) -> int:
    if suite.dry:
        return 2
    for item in suite.args.model_batch:
        key, _, value = item.partition("=")
        if key == name:
            return int(value)
    return default


def _images(suite: Suite, n: int, channels_last: bool = False) -> torch.Tensor:
    size = suite.args.img_size
    x = torch.randn(n, 3, size, size, device=suite.device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _compile_allowed(suite: Suite, notes: List[str]) -> bool:
    if suite.dry and not suite.args.dry_compile:
        msg = "torch.compile skipped in --dry (minutes on a small CPU; --dry-compile runs it)"
        if msg not in notes:
            notes.append(msg)
        return False
    return True


# ------------------------------------------------------------------------------ 4. throughput

def section_throughput(suite: Suite) -> dict:
    rows, notes = [], []
    compile_models = set(suite.args.compile_models)
    for name in suite.args.models:
        if not _available(name):
            notes.append(f"{name}: not in this timm ({_timm_version()}), skipped")
            continue
        batch = _batch_for(suite, name, suite.args.batch)
        try:
            model = _create(name, suite, fused=True)
        except Exception as exc:  # noqa: BLE001
            rows.append(dict(model=name, mode="build", batch=batch, error=error_text(exc)))
            suite.fail(f"throughput {name} build: {error_text(exc)}")
            continue
        modes = [("fp32 eager", False, None, False)]
        if name in compile_models and _compile_allowed(suite, notes):
            modes.append(("fp32 torch.compile", False, None, True))
        modes.append(("bf16 autocast + channels-last", True, torch.bfloat16, False))
        for mode, cl, amp, compiled in modes:
            row = dict(model=name, mode=mode, batch=batch)
            try:
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                runner = model
                x = _images(suite, batch, cl)
                if compiled:
                    torch._dynamo.reset()
                    runner = torch.compile(model, dynamic=False)

                def call(runner=runner, x=x, amp=amp):
                    with torch.inference_mode(), torch.autocast(suite.device.type, dtype=amp or torch.bfloat16,
                                                                enabled=amp is not None):
                        runner(x)

                if compiled:
                    start = time.perf_counter()
                    call()
                    suite.sync()
                    row["compile_s"] = time.perf_counter() - start
                ms = suite.median_ms(call)
                row.update(ms=ms, img_s=batch / (ms * 1e-3))
                del x, runner
            except Exception as exc:  # noqa: BLE001
                row["error"] = error_text(exc)
                suite.fail(f"throughput {name} {mode}: {error_text(exc)}")
            rows.append(row)
            suite.empty_cache()
        del model
        suite.empty_cache()
    notes.append(f"fused models (lsnet.fuse), {suite.args.img_size}x{suite.args.img_size}, inference_mode; "
                 "img/s = batch / median ms per batch; compile_s = the first compiled call (compilation)")
    columns = [("model", "model", None), ("mode", "mode", None), ("batch", "batch", 0), ("median ms", "ms", 2),
               ("img/s", "img_s", 0), ("compile s", "compile_s", 1), ("error", "error", None)]
    return dict(title="4. Model throughput (fused)", columns=columns, rows=rows, notes=notes)


def _timm_version() -> str:
    import timm

    return f"timm {timm.__version__}"


# ------------------------------------------------------------------------------ 5. batch-1 latency

def section_latency(suite: Suite) -> dict:
    rows, notes = [], []
    if not suite.cuda:
        notes.append("CUDA graphs skipped: no CUDA device (--dry or --device cpu)")
    repeats = max(suite.args.repeats, 2) if suite.dry else max(suite.args.repeats, 50)
    for name in suite.args.latency_models:
        if not _available(name):
            notes.append(f"{name}: not in this timm ({_timm_version()}), skipped")
            continue
        row = dict(model=name, batch=1, ops=None, eager_ms=None, graph_ms=None, graph_diff=None)
        try:
            model = _create(name, suite, fused=True)
            x = _images(suite, 1)

            def eager(model=model, x=x):
                with torch.no_grad():
                    model(x)

            row["eager_ms"] = suite.median_ms(eager, warmup=max(suite.args.warmup, 1 if suite.dry else 10),
                                              repeats=repeats)
            row["ops"] = sum(count_aten_ops(model, x, warmup=0).values())
            if suite.cuda:
                graphed = CUDAGraphModel(model)  # the deployment helper: capture on the first call

                def replay(graphed=graphed, x=x):
                    with torch.inference_mode():
                        return graphed(x)

                out = replay()
                row["graph_ms"] = suite.median_ms(replay, repeats=repeats)
                with torch.no_grad():
                    want = model(x)
                out = replay()
                suite.sync()
                row["graph_diff"] = (out.float() - want.float()).abs().max().item()
                if not row["graph_diff"] <= 1e-3 * max(1.0, want.abs().max().item()):
                    suite.fail(f"latency {name}: the CUDA graph's output differs from eager ({row['graph_diff']:.3g})")
        except Exception as exc:  # noqa: BLE001
            row["error"] = error_text(exc)
            suite.fail(f"latency {name}: {error_text(exc)}")
        rows.append(row)
        suite.empty_cache()
    notes.append("fused, float32, NCHW, no_grad; ops = operators one forward dispatches (lsnet.deploy.profile."
                 "count_aten_ops; the release's LSNet-T: 334); graph = lsnet.deploy.CUDAGraphModel (captured once, "
                 "replayed); graph diff = max |graph output - eager output|")
    columns = [("model", "model", None), ("batch", "batch", 0), ("ops", "ops", 0), ("eager ms", "eager_ms", 3),
               ("CUDA graph ms", "graph_ms", 3), ("graph diff", "graph_diff", 2), ("error", "error", None)]
    return dict(title="5. Batch-1 latency (median ms)", columns=columns, rows=rows, notes=notes)


# ------------------------------------------------------------------------------ 6. training step

def section_train(suite: Suite) -> dict:
    rows, notes = [], []
    batch = 2 if suite.dry else suite.args.train_batch
    if not suite.cuda:
        notes.append("peak memory needs CUDA (torch.cuda.max_memory_allocated): not measured here")
    for name in suite.args.train_models:
        if not _available(name):
            notes.append(f"{name}: not in this timm ({_timm_version()}), skipped")
            continue
        for mode, cl, amp in (("fp32", False, None), ("bf16 autocast + channels-last", True, torch.bfloat16)):
            row = dict(model=name, mode=mode, batch=batch, ms=None, img_s=None, peak_gib=None)
            try:
                torch.manual_seed(suite.args.seed)
                model = _create(name, suite, fused=False).train()
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=suite.cuda or None)
                x = _images(suite, batch, cl)
                y = torch.randint(0, 1000, (batch,), device=suite.device)

                def step(model=model, opt=opt, x=x, y=y, amp=amp):
                    with torch.autocast(suite.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                        loss = F.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                for _ in range(max(suite.args.warmup, 1)):
                    step()
                if suite.cuda:
                    suite.sync()
                    torch.cuda.reset_peak_memory_stats(suite.device)
                row["ms"] = suite.median_ms(step, warmup=0)
                row["img_s"] = batch / (row["ms"] * 1e-3)
                if suite.cuda:
                    row["peak_gib"] = torch.cuda.max_memory_allocated(suite.device) / 2 ** 30
                del step, model, opt, x, y  # free all of it before the next row's peak is taken
            except Exception as exc:  # noqa: BLE001
                row["error"] = error_text(exc)
                suite.fail(f"train {name} {mode}: {error_text(exc)}")
            rows.append(row)
            gc.collect()
            suite.empty_cache()
    notes.append(f"{suite.args.img_size}x{suite.args.img_size}, not fused, train mode, cross-entropy, AdamW "
                 "(fused on CUDA); peak = torch.cuda.max_memory_allocated over the timed steps (weights, "
                 "optimizer state, activations)")
    columns = [("model", "model", None), ("mode", "mode", None), ("batch", "batch", 0), ("ms / step", "ms", 2),
               ("img/s", "img_s", 0), ("peak GiB", "peak_gib", 2), ("error", "error", None)]
    return dict(title="6. Training step", columns=columns, rows=rows, notes=notes)


RUNNERS = {"correctness": section_correctness, "bandwidth": section_bandwidth, "ska": section_ska,
           "throughput": section_throughput, "latency": section_latency, "train": section_train}


# ------------------------------------------------------------------------------ driver

def _meta(suite: Suite) -> dict:
    import timm

    meta = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), python=platform.python_version(), torch=torch.__version__,
                timm=timm.__version__, device=str(suite.device), dry=suite.dry, host=platform.machine(),
                threads=torch.get_num_threads(), argv=sys.argv[1:])
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        meta["triton"] = None
    meta["triton_interpret"] = os.environ.get("TRITON_INTERPRET")
    if suite.cuda:
        props = torch.cuda.get_device_properties(suite.device)
        meta.update(gpu=props.name, gpu_mem_gib=props.total_memory / 2 ** 30,
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    try:
        root = Path(__file__).resolve().parents[1]
        meta["commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        meta["commit"] = None
    return meta


def _plain(obj):
    """JSON-safe copy: non-finite floats become the strings "nan", "inf", "-inf" (strict JSON has none)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def _sections(values: List[str]) -> List[str]:
    chosen = set()
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            if part.isdigit() and 1 <= int(part) <= len(SECTIONS):
                chosen.add(SECTIONS[int(part) - 1])
            elif part in SECTIONS:
                chosen.add(part)
            else:
                raise SystemExit(f"gpu_suite: unknown section {part!r}; choose from {', '.join(SECTIONS)} or 1-6")
    return [s for s in SECTIONS if s in chosen]  # always in the suite's order


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="device to measure (default cuda; --dry forces cpu)")
    p.add_argument("--dry", action="store_true", help="CPU, tiny shapes, 1-2 repeats: checks code paths and formats")
    p.add_argument("--dry-compile", action="store_true", help="with --dry: run torch.compile too (slow)")
    p.add_argument("--sections", nargs="+", default=[",".join(SECTIONS)],
                   help=f"subset of {', '.join(SECTIONS)} or 1-6 (default: all, in that order)")
    p.add_argument("--json", type=Path, help="write every row to this JSON file")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per timing (default 3; dry 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 20; dry 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--copy-mib", type=int, default=2048, help="size of the copied buffer (default 2048 MiB)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--models", nargs="+", default=MODELS, help="models of the throughput section")
    p.add_argument("--compile-models", nargs="*", default=["lsnet_t", "efficientvit_m3"],
                   help="models also timed under torch.compile (float32); compiling costs ~1 min each")
    p.add_argument("--batch", type=int, default=2048, help="throughput batch (default 2048, as in the issue)")
    p.add_argument("--model-batch", nargs="*", default=[], metavar="NAME=N",
                   help="per-model throughput batch, e.g. lsnet_b=512 (if 2048 does not fit)")
    p.add_argument("--latency-models", nargs="+", default=["lsnet_t", "lsnet_s", "lsnet_b", "efficientvit_m3",
                                                           "shvit_s3", "repvit_m1_1"])
    p.add_argument("--train-models", nargs="+", default=["lsnet_t", "efficientvit_m3"])
    p.add_argument("--train-batch", type=int, default=256)
    args = p.parse_args(argv)
    if args.dry:
        args.device = "cpu"
    args.warmup = args.warmup if args.warmup is not None else (1 if args.dry else 3)
    args.repeats = args.repeats if args.repeats is not None else (2 if args.dry else 20)
    args.sections = _sections(args.sections)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    suite = Suite(args)
    if suite.cuda and not torch.cuda.is_available():
        print("gpu_suite: --device cuda but CUDA is not available (use --dry for the CPU check)", file=sys.stderr)
        return 2
    if suite.cuda:
        torch.backends.cudnn.benchmark = True
    meta = _meta(suite)
    print(f"# LSNet GPU suite{' (dry run on the CPU: the numbers mean nothing)' if suite.dry else ''}")
    print(", ".join(f"{k} {v}" for k, v in meta.items() if k not in ("argv",) and v is not None))
    results = {"meta": meta, "sections": {}}
    t_all = time.perf_counter()
    for name in args.sections:
        start = time.perf_counter()
        try:
            out = RUNNERS[name](suite)
        except Exception as exc:  # noqa: BLE001 - a broken section must not hide the others
            traceback.print_exc()
            suite.fail(f"{name}: {error_text(exc)}")
            out = dict(title=f"{SECTIONS.index(name) + 1}. {name}", rows=[dict(error=error_text(exc))],
                       notes=[f"section raised {error_text(exc)}"], columns=[("error", "error", None)])
        out["seconds"] = time.perf_counter() - start
        out["notes"] = out.get("notes", []) + [f"section time {out['seconds']:.1f} s"]
        print_table(out["title"], out["columns"], out["rows"], out["notes"])
        results["sections"][name] = {k: v for k, v in out.items() if k != "columns"}
        suite.empty_cache()
    results["seconds"] = time.perf_counter() - t_all
    results["failures"] = suite.failures
    print(f"\nTotal {results['seconds']:.1f} s; "
          + (f"{len(suite.failures)} failure(s):" if suite.failures else "no failures"))
    for f in suite.failures:
        print(f"- {f}")
    if args.json:
        args.json.write_text(json.dumps(_plain(results), indent=2, default=str))
        print(f"JSON written to {args.json}")
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main())
