"""Export a (fused) model to ONNX, TorchScript or a ``torch.export`` program, and check it.

SKA is traced in its functional form (pad, slice, multiply, add), so the ONNX graph holds
only standard operators and runs in onnxruntime without custom ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn

from ..errors import ConfigError

__all__ = ["ExportResult", "export_model", "export_onnx", "check_onnx", "FORMATS"]

FORMATS = ("onnx", "torchscript", "torch-export")


@dataclass
class ExportResult:
    """What was written and how closely it reproduces the PyTorch model."""

    path: Path
    format: str
    size_mb: float
    max_rel_err: Optional[float]  # against the PyTorch model on a random batch; None if not checked


def _example(img_size: Tuple[int, int], batch: int, in_chans: int = 3) -> torch.Tensor:
    return torch.randn(batch, in_chans, *img_size, generator=torch.Generator().manual_seed(0))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@torch.no_grad()
def export_onnx(model: nn.Module, path: Union[str, os.PathLike], img_size: Tuple[int, int] = (224, 224),
                opset: int = 17) -> Path:
    """Write ``model`` (eval mode, float32) to ONNX with a dynamic batch dimension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _example(img_size, 2, getattr(model, "in_chans", 3))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints becoming constants
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def onnx_session(path: Union[str, os.PathLike], threads: Optional[int] = None):
    """An onnxruntime CPU session for ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # idle onnxruntime threads busy-wait by default, stealing the cores PyTorch runs on in between
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_onnx(model: nn.Module, path: Union[str, os.PathLike], img_size: Tuple[int, int] = (224, 224),
               batches=(1, 3)) -> float:
    """Largest relative error of onnxruntime against PyTorch over a few batch sizes."""
    session = onnx_session(path)
    worst = 0.0
    for b in batches:
        x = _example(img_size, b, getattr(model, "in_chans", 3))
        out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        worst = max(worst, _rel(out, model(x)))
    return worst


@torch.no_grad()
def export_model(model: nn.Module, path: Union[str, os.PathLike], fmt: str = "onnx",
                 img_size: Tuple[int, int] = (224, 224), check: bool = True) -> ExportResult:
    """Export ``model`` (already fused and in eval mode) in ``fmt`` and check it against PyTorch."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    model = model.eval().float()
    err = None
    if fmt == "onnx":
        export_onnx(model, path, img_size)
        if check:
            err = check_onnx(model, path, img_size)
    elif fmt == "torchscript":
        path.parent.mkdir(parents=True, exist_ok=True)
        x = _example(img_size, 2, getattr(model, "in_chans", 3))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (x,), check_trace=False)
        traced.save(str(path))
        if check:
            loaded = torch.jit.load(str(path))
            y = _example(img_size, 3, getattr(model, "in_chans", 3))
            err = _rel(loaded(y), model(y))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        x = _example(img_size, 2, getattr(model, "in_chans", 3))
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
        if check:
            loaded = torch.export.load(str(path)).module()
            y = _example(img_size, 3, getattr(model, "in_chans", 3))
            err = _rel(loaded(y), model(y))
    return ExportResult(path, fmt, path.stat().st_size / 1e6, err)
