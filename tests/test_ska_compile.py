"""SKA under torch.compile on the CPU (issue 22 item 3): no graph break for inference or for a
training step, compiled results equal to eager (eager, aot_eager and inductor backends), SKA one
opaque operator in the graph. The CUDA side (triton_ops through wrap_triton, CUDA graphs) needs a
GPU; the host path is checked here for host-device synchronisations."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn as nn

from conftest import rel_err
from lsnet.ops import SKA, bn_scale_shift, ska_affine_residual


class LSBlock(nn.Module):
    """An LS convolution in miniature: LKP-like kernel prediction, SKA, BatchNorm, residual."""

    def __init__(self, c: int = 16, groups: int = 8):
        super().__init__()
        self.cw = c // groups
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.pw = nn.Conv2d(c, self.cw * 9, 1)
        self.ska = SKA()
        self.bn = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        n, _, h, w = x.shape
        k = self.pw(torch.relu(self.dw(x))).view(n, self.cw, 9, h, w)
        y = self.bn(self.ska(x, k)) + x
        return self.head(y.mean((2, 3)))


class FusedBlock(LSBlock):
    """The same block in inference form: SKA, BatchNorm and residual as the fused operator."""

    def forward(self, x):
        n, _, h, w = x.shape
        k = self.pw(torch.relu(self.dw(x))).view(n, self.cw, 9, h, w)
        scale, shift = bn_scale_shift(self.bn)
        return self.head(ska_affine_residual(x, k, scale, shift).mean((2, 3)))


def _model(cls=LSBlock, seed=0):
    torch.manual_seed(seed)
    return cls()


def _train_step(model):
    def step(x, target):
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        return loss.detach()  # a returned loss whose graph was consumed would break the graph
    return step


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# 24 x 20 x 16 channels = 7680 elements: below lsnet.ops.ska._SMALL (unfold form); the 40 x 40 map
# takes the shifted form
@pytest.mark.parametrize("size", [(24, 20), (40, 40)])
def test_explain_inference_has_no_graph_break(size):
    model = _model().eval()
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        report = torch._dynamo.explain(model)(x)
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons
    ops = [str(n.target) for g in report.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert any("lsnet.ska" in o for o in ops), ops


def test_explain_training_step_has_no_graph_break():
    model = _model().train()
    x, target = torch.randn(2, 16, 24, 20), torch.tensor([1, 3])
    with torch._dynamo.config.patch(trace_autograd_ops=True):  # lets dynamo trace loss.backward()
        report = torch._dynamo.explain(_train_step(model))(x, target)
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons


def test_explain_fused_inference_has_no_graph_break():
    model = _model(FusedBlock).eval()
    with torch.no_grad():
        report = torch._dynamo.explain(model)(torch.randn(2, 16, 24, 20))
    assert report.graph_break_count == 0, report.break_reasons
    ops = [str(n.target) for g in report.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert any("lsnet.ska_bn_residual" in o for o in ops), ops


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_training_step_equals_eager(backend):
    x, target = torch.randn(2, 16, 40, 40), torch.tensor([0, 2])
    eager = _model().train()
    compiled = _model().train()
    loss_e = _train_step(eager)(x, target)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        loss_c = torch.compile(_train_step(compiled), backend=backend, fullgraph=True)(x, target)
    assert abs(loss_e.item() - loss_c.item()) < 1e-6
    for (name, pe), pc in zip(eager.named_parameters(), compiled.parameters()):
        assert rel_err(pc.grad, pe.grad) < 1e-5, name


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_module_backward_outside_equals_eager(backend):
    # the usual form: torch.compile(model), loss.backward() in eager (AOT autograd's backward graph)
    x, target = torch.randn(2, 16, 24, 20), torch.tensor([0, 2])
    eager, compiled = _model().train(), _model().train()
    torch.nn.functional.cross_entropy(eager(x), target).backward()
    torch.nn.functional.cross_entropy(torch.compile(compiled, backend=backend, fullgraph=True)(x), target).backward()
    for (name, pe), pc in zip(eager.named_parameters(), compiled.parameters()):
        assert rel_err(pc.grad, pe.grad) < 1e-4, name  # inductor sums the convolutions' float32 grads in its order


@pytest.mark.parametrize("cls", [LSBlock, FusedBlock])
def test_inductor_inference_equals_eager(cls):
    model = _model(cls).eval()
    x = torch.randn(2, 16, 40, 40)
    with torch.no_grad():
        want = model(x)
        got = torch.compile(model, fullgraph=True)(x)  # inductor, with SKA as one extern call
    assert rel_err(got, want) < 1e-5


def test_cuda_launch_path_has_no_host_synchronisation():
    """Nothing in the Triton launch path reads device values back or waits for the device (CUDA
    graph capture would fail). The one synchronisation, timing tile sizes on a shape's first
    eager call, is skipped while a graph is being captured."""
    pytest.importorskip("triton")
    import lsnet.ops.ska_triton as mod

    path = [mod._forward, mod._backward, mod.ska_triton_forward, mod.ska_triton_backward, mod.ska_triton_fused,
            mod._ska_triton_checked, mod.SKATriton.forward, mod.SKATriton.backward, mod.launch_config, mod._flat,
            mod._flat_stride, mod._device_guard, mod._tuned_target]
    for fn in path:
        source = inspect.getsource(fn)
        for needle in (".item()", ".cpu()", ".tolist()", "synchronize(", ".numpy()", "elapsed_time"):
            assert needle not in source, (fn.__name__, needle)
    assert "is_current_stream_capturing" in inspect.getsource(mod._tuning_enabled)
    assert "_tuning_enabled(" in inspect.getsource(mod._forward) and "_tuning_enabled(" in inspect.getsource(mod._backward)
