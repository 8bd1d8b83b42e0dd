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
