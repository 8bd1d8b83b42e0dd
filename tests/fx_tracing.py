"""torch.fx tracing as timm's feature extraction does it, shared by the model tests."""

import torch


def timm_fx_graph(model: torch.nn.Module) -> torch.fx.GraphModule:
    """``model`` traced by torch.fx with timm's leaves and wrapped functions (what timm's
    ``test_model_forward_fx_torchscript`` scripts)."""
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torch.fx import GraphModule, Tracer

    leaves = tuple(get_notrace_modules())

    class TimmTracer(Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, leaves) or super().is_leaf_module(m, name)

    return GraphModule(model, TimmTracer(autowrap_functions=tuple(get_notrace_functions())).trace(model))


def assert_script_and_fx_match_eager(model: torch.nn.Module, x: torch.Tensor) -> None:
    """``torch.jit.script`` of ``model`` and of its torch.fx graph (timm's two TorchScript tests)
    give exactly the eager output on ``x``."""
    scripted = torch.jit.script(model)
    graph = torch.jit.script(timm_fx_graph(model))
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(scripted(x), want, rtol=0, atol=0)
        torch.testing.assert_close(graph(x), want, rtol=0, atol=0)
