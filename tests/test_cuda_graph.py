"""CUDA-graph inference helper: what can be checked without a GPU (the GPU suite replays it)."""

import pytest
import torch
import torch.nn as nn

from lsnet.deploy.cuda_graph import CUDAGraphModel, _layout, capture_cuda_graph
from lsnet.errors import ConfigError


def test_cpu_inputs_are_refused_with_a_hint():
    model = CUDAGraphModel(nn.Conv2d(3, 4, 3))
    with pytest.raises(ConfigError, match="CUDA graphs need CUDA tensors; got an input on cpu"):
        model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="move the model"):
        capture_cuda_graph(lambda x: x, torch.zeros(2))


def test_a_model_back_in_training_mode_is_refused():
    model = CUDAGraphModel(nn.Conv2d(3, 4, 3))
    model.model.train()
    with pytest.raises(RuntimeError, match="for inference"):
        model(torch.zeros(1, 3, 8, 8))


def test_graphs_are_keyed_by_memory_layout():
    x = torch.zeros(2, 3, 4, 5)
    assert _layout(x) == "contiguous"
    assert _layout(x.contiguous(memory_format=torch.channels_last)) == "channels_last"
    assert _layout(x[..., ::2]) == "strided"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_replay_matches_eager_and_follows_new_inputs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).cuda().eval()
    graphed = CUDAGraphModel(model)
    for seed in range(3):
        x = torch.randn(4, 3, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        with torch.inference_mode():
            torch.testing.assert_close(graphed(x).clone(), model(x))
    graphed(torch.randn(2, 3, 16, 16, device="cuda"))
    assert graphed.num_graphs == 2


def test_bench_refuses_cuda_graphs_on_the_cpu():
    from lsnet.deploy.bench import BenchConfig, run_benchmark

    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device; got --device cpu"):
        run_benchmark(BenchConfig(models=["lsnet_t"], modes=("eager", "cuda-graph"), device="cpu"))


def test_bench_cli_cuda_graph_needs_a_gpu(capsys):
    from lsnet.cli.main import main

    assert main(["bench", "--models", "lsnet_t", "--cuda-graph"]) == 2
    assert "--cuda-graph needs a GPU: add --device cuda" in capsys.readouterr().err
