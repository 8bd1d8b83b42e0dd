"""Deployment: ONNX / TorchScript / torch.export round trips, torch.compile, and `lsnet bench`."""

from __future__ import annotations

import json
import sys

import pytest
import timm
import torch

import lsnet
from conftest import rel_err
from lsnet.cli.main import main
from lsnet.deploy.export import export_model, onnx_session
from lsnet.models.lsnet import LSNet


def trained_like(name="lsnet_t", **kwargs):
    """A model with non-trivial BatchNorm statistics, so that fusion and export are exercised."""
    model = timm.create_model(name, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
    return model.eval()


def test_onnx_round_trip_dynamic_batch(tmp_path):
    pytest.importorskip("onnxruntime")
    model = lsnet.fuse(trained_like())
    res = export_model(model, tmp_path / "m.onnx", "onnx")
    assert res.max_rel_err < 1e-4 and res.size_mb > 1
    session = onnx_session(res.path)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 224, 224)
        out = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            assert out.shape == (batch, 1000)
            assert rel_err(torch.from_numpy(out), model(x)) < 1e-4
    import onnx

    ops = {n.op_type for n in onnx.load(str(res.path)).graph.node}
    assert "Conv" in ops and not any(op.startswith("ATen") or op == "PythonOp" for op in ops)


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export"])
def test_other_export_formats(tmp_path, fmt):
    model = lsnet.fuse(trained_like(num_classes=7))
    res = export_model(model, tmp_path / "m.bin", fmt, img_size=(128, 128))
    assert res.max_rel_err < 1e-5


def test_export_cli_with_release_checkpoint(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    src = trained_like(num_classes=10)
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "ck.pth")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "lsnet_t", "--num-classes", "10", "--checkpoint", str(tmp_path / "ck.pth"),
                 "--output", str(out)]) == 0
    assert "(OK)" in capsys.readouterr().out
    x = torch.randn(2, 3, 224, 224)
    got = onnx_session(out).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert rel_err(torch.from_numpy(got), src(x)) < 1e-4  # the checkpoint's weights, not random ones


def test_torch_compile_inference_and_training():
    # small but with every block kind: RepVGG+SE, LSConv (stage 3) and attention (stage 4)
    cfg = dict(embed_dim=(16, 32, 48, 64), depth=(0, 1, 2, 2), num_heads=(2, 2, 2, 2), key_dim=(8, 8, 8, 8),
               img_size=64, num_classes=5)
    torch.manual_seed(0)
    eager = LSNet(**cfg).double()
    twin = LSNet(**cfg).double()
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin)
    x = torch.randn(3, 3, 64, 80, dtype=torch.float64)
    target = torch.tensor([1, 4, 0])
    loss_e = torch.nn.functional.cross_entropy(eager(x), target)
    loss_c = torch.nn.functional.cross_entropy(compiled(x), target)
    loss_e.backward()
    loss_c.backward()
    assert abs(loss_e.item() - loss_c.item()) < 1e-10
    for (name, a), b in zip(eager.named_parameters(), twin.parameters()):
        # some gradients are zero up to rounding (a bias followed by a training-mode BN)
        assert torch.allclose(b.grad, a.grad, rtol=1e-8, atol=1e-12), name
    with torch.no_grad():
        assert rel_err(compiled.eval()(x), eager.eval()(x)) < 1e-10


def test_bench_cli_runs_and_numbers_are_well_formed(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    prefix = tmp_path / "b" / "bench"
    assert main(["bench", "--models", "lsnet_t,efficientvit_m0", "--batch-sizes", "1,2", "--img-size", "64",
                 "--rounds", "2", "--warmup", "1", "--fuse", "--onnx", "--output", str(prefix)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| lsnet_t") or line.startswith("| efficientvit")]
    assert len(rows) == 8  # 2 models x 2 batches x (pytorch, onnxruntime)
    data = json.loads(prefix.with_suffix(".json").read_text())
    assert data["config"]["fuse"] is True and len(data["results"]) == 8
    for r in data["results"]:
        assert len(r["times_ms"]) == 2 and all(t > 0 for t in r["times_ms"])
        m = r["ms_per_image"]
        assert 0 < m["min"] <= m["median"] <= m["max"]
        assert r["images_per_s"] == pytest.approx(1e3 / m["median"])
        assert r["gmacs"] > 0 and r["params"] > 0
        if r["runtime"] == "pytorch":
            assert r["peak_mem_mb"] > 0
    png = prefix.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_frozen_compile_matches_eager_and_refuses_gradients():
    from lsnet.deploy import compile_for_inference

    torch.manual_seed(0)
    model = lsnet.fuse(LSNet(embed_dim=(16, 32, 48, 64), depth=(0, 1, 2, 2), num_heads=(2, 2, 2, 2),
                             key_dim=(8, 8, 8, 8), img_size=64, num_classes=5).eval())
    frozen = compile_for_inference(model)
    x = torch.randn(2, 3, 64, 80)
    with torch.inference_mode():
        assert rel_err(frozen(x), model(x)) < 1e-5
    with pytest.raises(RuntimeError, match="without gradients"):
        frozen(x)


def test_bench_times_eager_and_frozen_side_by_side(tmp_path, capsys):
    prefix = tmp_path / "bench"
    assert main(["bench", "--models", "lsnet_t", "--batch-sizes", "2", "--img-size", "64", "--rounds", "2",
                 "--warmup", "1", "--fuse", "--compile", "eager,frozen", "--output", str(prefix)]) == 0
    runtimes = [r["runtime"] for r in json.loads(prefix.with_suffix(".json").read_text())["results"]]
    assert runtimes == ["pytorch", "pytorch-frozen"]
    with pytest.raises(SystemExit):
        main(["bench", "--compile", "eager,fast"])
    assert "argument --compile: expected a comma-separated list of eager, compiled, frozen" in capsys.readouterr().err


def test_bench_rejects_unknown_model(capsys):
    assert main(["bench", "--models", "lsnet_q"]) == 2
    assert "unknown timm model(s): lsnet_q" in capsys.readouterr().err


def test_peak_memory_counts_allocations():
    from lsnet.deploy.bench import peak_memory_mb

    def work():
        a = torch.ones(1024, 1024)  # 4 MiB
        b = torch.ones(2048, 1024)  # 8 MiB, both alive
        return float(a.sum() + b.sum())

    assert 11.9 < peak_memory_mb(work, torch.device("cpu")) < 14


def test_peak_memory_mutes_the_profilers_native_lines_and_restores_stderr(capfd):
    from lsnet.deploy.bench import peak_memory_mb

    peak_memory_mb(lambda: torch.ones(256, 256).sum(), torch.device("cpu"))
    print("still here", file=sys.stderr, flush=True)
    err = capfd.readouterr().err
    assert "profiler_start" not in err and "gpuGetDeviceCount" not in err  # printed by the CUDA build here
    assert "still here" in err


def test_peak_memory_sees_a_temporary_freed_inside_the_operation_that_made_it():
    """The profiler's per-operator memory columns put an operator's net allocation at its
    start: a 16 MiB buffer made and freed inside one (here a ``record_function`` range, as
    inside a composite operator) netted to nothing there. The allocation events count it."""
    from torch.profiler import record_function

    from lsnet.deploy.bench import peak_memory_mb

    def work():
        with record_function("composite"):
            scratch = torch.ones(4 * 2 ** 20)  # 16 MiB, freed before the range ends
            total = float(scratch.sum())
            del scratch
        return total

    assert 15.9 < peak_memory_mb(work, torch.device("cpu")) < 17


def test_bench_peak_memory_counts_weights_input_and_activations(tmp_path, capsys):
    """LSNet-T at batch 16 (224x224) on the CPU: about 44 MiB of weights, 9 MiB of input and
    the forward's activations on top (its first convolution alone writes 16 x 16 x 112 x 112
    float32, 12.25 MiB); the peak was once reported as 2 MB."""
    from lsnet.deploy.bench import resident_mb

    prefix = tmp_path / "bench"
    assert main(["bench", "--models", "lsnet_t", "--batch-sizes", "16", "--rounds", "1", "--warmup", "1",
                 "--output", str(prefix)]) == 0
    [result] = json.loads(prefix.with_suffix(".json").read_text())["results"]
    model = timm.create_model("lsnet_t")
    weights = resident_mb(model)
    held = resident_mb(model, torch.empty(16, 3, 224, 224))
    assert 43 < weights < 45 and held - weights == pytest.approx(16 * 3 * 224 * 224 * 4 / 2 ** 20)
    assert result["peak_mem_mb"] > held + 12.25
    assert result["peak_mem_mb"] < held + 200  # activations of a batch of 16, not the whole process
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| lsnet_t"))
    assert row.endswith(f"| {result['peak_mem_mb']:.0f} |")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_bench_device_takes_a_gpu_index_as_train_does(device, capsys, monkeypatch):
    from lsnet.cli.bench import _device

    assert _device(device) == device
    if torch.cuda.is_available():
        pytest.skip("the message for a missing GPU needs a machine without one")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--models", "lsnet_t", "--device", device, "--output", "unused"]) == 2
    err = capsys.readouterr().err
    assert f"--device {device} was asked for but CUDA is not available" in err and "Traceback" not in err


def test_bench_device_refuses_what_names_no_device(capsys):
    for bad in ("gpu", "cuda:x", "cuda:-1", "cuda1"):
        with pytest.raises(SystemExit):
            main(["bench", "--device", bad])
        err = capsys.readouterr().err
        assert "argument --device: expected cpu, cuda or cuda:N" in err and repr(bad) in err


def test_a_gpu_index_beyond_the_machines_is_one_line(monkeypatch):
    from lsnet.engine.distributed import DistInfo, resolve_device
    from lsnet.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"--device cuda:2: there is no such GPU \(this machine has 2"):
        resolve_device("cuda:2", DistInfo())
    with pytest.raises(ConfigError, match="--device must be auto, cpu, cuda or cuda:N"):
        resolve_device("gpu", DistInfo())
