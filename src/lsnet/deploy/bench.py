"""Inference speed of LSNet and peer models: warm, interleaved runs, as ``lsnet bench`` prints them.

Every (model, runtime, batch) configuration is built and warmed up first; then each round
times every configuration once in turn, so that drift of a shared, noisy machine hits all
of them alike. Results are per-call medians with min and max over the rounds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..models import fuse as fuse_model
from .compiled import compile_for_inference
from .cuda_graph import CUDAGraphModel
from .profile import count_macs

logger = logging.getLogger(__name__)

__all__ = ["RUNTIMES", "BenchConfig", "BenchResult", "run_benchmark", "format_markdown",
           "plot_results", "PAPER_TABLE1", "peak_memory_mb", "resident_mb"]

# Facts from the LSNet paper's Table 1 (ImageNet-1K top-1 %, and RTX 3090 throughput in img/s),
# keyed by timm model name. Distilled results carry the teacher's help (marked * in the paper).
_PAPER_TABLE1_ROWS = """
lsnet_t                   74.9   14708
lsnet_t_distill           76.1   14708
lsnet_s                   77.8    9023
lsnet_s_distill           79.0    9023
lsnet_b                   80.3    3996
lsnet_b_distill           81.6    3996
edgenext_xx_small         71.2    5089
fasternet_t0              71.9   14467
efficientvit_m3           73.4   14613
starnet_s1                73.5    5034
edgenext_x_small          75.0    3118
mobilenetv3_large_100     75.2    7921
fastvit_t8                75.6    3909
efficientformerv2_s0      75.7    1329
fasternet_t1              76.2    8660
efficientnet_b0           77.1    4481
poolformer_s12            77.2    2769
shvit_s3                  77.4    8993
repvit_m0_9               77.4    4817
swiftformer_s             78.5    3376
fastvit_t12               79.1    2586
efficientformer_l1        79.2    3280
edgenext_small            79.4    2128
repvit_m1_1               79.4    3604
"""
PAPER_TABLE1: Dict[str, Dict[str, float]] = {
    name: {"top1": float(top1), "throughput": float(throughput)}
    for name, top1, throughput in (row.split() for row in _PAPER_TABLE1_ROWS.strip().splitlines())}


@dataclass
class BenchConfig:
    """What to measure."""

    models: Sequence[str]
    batch_sizes: Sequence[int] = (1, 16)
    device: str = "cpu"
    dtype: str = "float32"  # or "bfloat16" / "float16": autocast
    fuse: bool = False
    # PyTorch runtimes, timed side by side: "eager", "compiled" (torch.compile) and "frozen"
    # (torch.compile with inductor freezing: weights as constants, convolutions pre-packed)
    modes: Sequence[str] = ("eager",)
    channels_last: bool = False
    onnx: bool = False
    img_size: int = 224
    warmup: int = 3
    rounds: int = 10
    threads: Optional[int] = None


@dataclass
class BenchResult:
    """Timings of one (model, runtime, batch) configuration."""

    model: str
    runtime: str
    batch: int
    params: int
    gmacs: float
    times_ms: List[float] = field(default_factory=list)  # per call (one batch), one per round
    # MiB of tensor memory at the peak of one call: the model's weights and buffers, the input
    # batch, and the most the forward pass allocated at once on top (None: not measured)
    peak_mem_mb: Optional[float] = None

    @property
    def ms_per_image(self) -> Dict[str, float]:
        per = [t / self.batch for t in self.times_ms]
        return {"min": min(per), "median": statistics.median(per), "max": max(per)}

    @property
    def images_per_s(self) -> float:
        return 1e3 / self.ms_per_image["median"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ms_per_image=self.ms_per_image, images_per_s=self.images_per_s)
        return d


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> Optional[float]:
    """The most tensor memory ``fn`` holds at once on top of what was allocated before it ran
    (for a forward pass: its activations and workspaces, not the weights or the input), in MiB.

    CUDA: the caching allocator's peak statistics. CPU: every allocation and free of PyTorch's
    CPU allocator, in the order they happened, as the profiler records them with
    ``profile_memory=True`` (its raw allocation events, which carry time stamps of their own:
    the per-operator memory columns lump an operator's allocations and frees together at the
    operator's start, so a temporary buffer freed inside the operator that made it, or an
    output freed by a later operator, shifts or hides the peak). Process RSS (``getrusage``)
    is not used: it is a lifetime maximum that also counts the interpreter, the libraries'
    caches and what malloc keeps back, and would need a fresh process per configuration.
    None when this PyTorch's profiler offers no allocation events.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:
        return None
    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
    except AttributeError:
        return None
    changes = []  # (time, bytes): + allocated, - freed
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            changes.append((event.start_time_ns, event.extra_fields.alloc_size))
    current = peak = 0
    for _, size in sorted(changes):
        current += size
        peak = max(peak, current)
    return peak / 2 ** 20


def resident_mb(model: nn.Module, *inputs: torch.Tensor) -> float:
    """MiB of the tensors an inference holds throughout: the model's parameters and buffers
    and its input batch (each storage once)."""
    storages = {}
    for t in itertools.chain(model.parameters(), model.buffers(), inputs):
        storage = t.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values()) / 2 ** 20


# "cuda-graph": the eager model captured once per batch size in a CUDA graph and replayed
# (lsnet.deploy.cuda_graph); GPUs only
RUNTIMES = {"eager": "pytorch", "compiled": "pytorch-compiled", "frozen": "pytorch-frozen",
            "cuda-graph": "pytorch-cuda-graph"}


@contextlib.contextmanager
def _native_stderr_silenced():
    """Mute file descriptor 2: PyTorch's CUDA build, profiling on a machine without a GPU,
    prints profiler start/stop lines and a 'gpuGetDeviceCount failed' error from C++."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _log(msg: str) -> None:
    logger.info(msg)


def _build_model(name: str, cfg: BenchConfig, device: torch.device) -> nn.Module:
    import timm

    model = timm.create_model(name, pretrained=False).eval()
    if cfg.fuse:
        model = fuse_model(model, inplace=True)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _autocast(cfg: BenchConfig, device: torch.device):
    if cfg.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, cfg.dtype))


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] = _log) -> List[BenchResult]:
    """Measure every configuration of ``cfg``; returns one result per (model, runtime, batch)."""
    from ..engine.distributed import check_device_available, parse_device

    device = parse_device(cfg.device)
    check_device_available(device, cfg.device)
    if cfg.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"--dtype must be float32, bfloat16 or float16, got {cfg.dtype!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    unknown = [m for m in cfg.modes if m not in RUNTIMES]
    if unknown or not cfg.modes:
        raise ConfigError(f"modes must be among {', '.join(RUNTIMES)}, got {', '.join(cfg.modes) or 'none'}")
    if "cuda-graph" in cfg.modes and device.type != "cuda":
        raise ConfigError(f"CUDA graphs need a CUDA device; got --device {cfg.device}")
    entries = []  # (result, callable)
    resident = {}  # entry index -> MiB of weights and input it holds throughout
    tmp = tempfile.TemporaryDirectory(prefix="lsnet-bench-")
    try:
        for i, name in enumerate(cfg.models):
            log(f"[{i + 1}/{len(cfg.models)}] building {name}")
            model = _build_model(name, cfg, device)
            params = sum(p.numel() for p in model.parameters())
            gmacs = count_macs(model, cfg.img_size)[0] / 1e9
            for mode, b in itertools.product(cfg.modes, cfg.batch_sizes):
                # one static graph per batch size: switching sizes between rounds must not recompile
                if mode == "eager":
                    runner = model
                elif mode == "cuda-graph":
                    runner = CUDAGraphModel(model)  # captured at the first (warm-up) call, under autocast
                else:
                    runner = compile_for_inference(model, freeze=mode == "frozen")
                x = torch.randn(b, 3, cfg.img_size, cfg.img_size, device=device)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)

                def call(runner=runner, x=x):
                    with torch.inference_mode(), _autocast(cfg, device):
                        runner(x)
                    sync()

                entries.append((BenchResult(name, RUNTIMES[mode], b, params, gmacs), call))
                resident[len(entries) - 1] = resident_mb(model, x)
            if cfg.onnx:
                from .export import export_onnx, onnx_session

                log(f"[{i + 1}/{len(cfg.models)}] exporting {name} to ONNX")
                cpu_model = fuse_model(_build_model(name, BenchConfig(models=[name]), torch.device("cpu")))
                path = export_onnx(cpu_model, Path(tmp.name) / f"{name}.onnx", (cfg.img_size, cfg.img_size))
                session = onnx_session(path, cfg.threads)
                for b in cfg.batch_sizes:
                    xn = torch.randn(b, 3, cfg.img_size, cfg.img_size).numpy()
                    entries.append((BenchResult(name, "onnxruntime", b, params, gmacs),
                                    lambda s=session, xn=xn: s.run(None, {"input": xn})))
        for k, (res, call) in enumerate(entries):
            log(f"warm-up {k + 1}/{len(entries)}: {res.model} {res.runtime} batch {res.batch}")
            for _ in range(cfg.warmup):
                call()
            # the CPU profiler does not see the allocations of compiled code: report none there
            if res.runtime == "pytorch" or device.type == "cuda" and res.runtime != "onnxruntime":
                extra = peak_memory_mb(call, device)
                res.peak_mem_mb = None if extra is None else resident[k] + extra
        for r in range(cfg.rounds):
            log(f"round {r + 1}/{cfg.rounds}")
            for res, call in entries:
                start = time.perf_counter()
                call()
                res.times_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        tmp.cleanup()
    return [res for res, _ in entries]


def format_markdown(results: Sequence[BenchResult]) -> str:
    """The results as a markdown table (ms/image as median, min-max)."""
    lines = ["| model | runtime | batch | params (M) | GMACs | ms/image median (min-max) | images/s | peak MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        m = r.ms_per_image
        mem = f"{r.peak_mem_mb:.0f}" if r.peak_mem_mb is not None else "-"
        lines.append(f"| {r.model} | {r.runtime} | {r.batch} | {r.params / 1e6:.2f} | {r.gmacs:.3f} | "
                     f"{m['median']:.2f} ({m['min']:.2f}-{m['max']:.2f}) | {r.images_per_s:.1f} | {mem} |")
    return "\n".join(lines)


def write_json(results: Sequence[BenchResult], cfg: BenchConfig, path) -> None:
    """Raw numbers, with the configuration and the machine, as JSON."""
    import platform

    payload = {"config": asdict(cfg), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "results": [r.to_dict() for r in results]}
    Path(path).write_text(json.dumps(payload, indent=2))


def plot_results(results: Sequence[BenchResult], path, title: str = "") -> None:
    """Throughput against GMACs and against the paper's top-1, one series per runtime and batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    series = sorted({(r.runtime, r.batch) for r in results})
    for runtime, batch in series:
        rows = [r for r in results if r.runtime == runtime and r.batch == batch]
        label = f"{runtime}, batch {batch}"
        axes[0].scatter([r.gmacs for r in rows], [r.images_per_s for r in rows], label=label)
        for r in rows:
            axes[0].annotate(r.model, (r.gmacs, r.images_per_s), fontsize=7, xytext=(3, 3), textcoords="offset points")
        known = [r for r in rows if r.model in PAPER_TABLE1]
        axes[1].scatter([r.images_per_s for r in known], [PAPER_TABLE1[r.model]["top1"] for r in known], label=label)
        for r in known:
            axes[1].annotate(r.model, (r.images_per_s, PAPER_TABLE1[r.model]["top1"]), fontsize=7,
                             xytext=(3, 3), textcoords="offset points")
    axes[0].set_xlabel("GMACs per image")
    axes[0].set_ylabel("images / s")
    axes[1].set_xlabel("images / s (measured)")
    axes[1].set_ylabel("ImageNet top-1 % (LSNet paper, Table 1)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Inference throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
