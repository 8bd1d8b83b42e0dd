"""``features_only`` backbones of every family compile with TorchScript (as timm's own models'
do) and give the eager features, for all stages and for a pruned subset."""

import pytest
import timm
import torch

import lsnet  # noqa: F401 - registers the models


@pytest.mark.parametrize("name,size", [("lsnet_t", (96, 99)), ("lolvit_s", (97, 100)), ("lsknet_t", (67, 70))])
@pytest.mark.parametrize("out_indices", [None, (0, 1), (1, 3)])
def test_features_only_scripts(name, size, out_indices):
    torch.manual_seed(0)
    kwargs = {} if out_indices is None else dict(out_indices=out_indices)
    model = timm.create_model(name, features_only=True, **kwargs).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        want, got = model(x), scripted(x)
    assert len(got) == len(want) == (len(model.feature_info.out_indices))
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


class _Intermediates(torch.nn.Module):
    """Calls ``forward_intermediates`` with fixed arguments, so that TorchScript compiles it."""

    def __init__(self, model, indices, stop_early: bool):
        super().__init__()
        self.model, self.indices, self.stop_early = model, indices, stop_early

    def forward(self, x: torch.Tensor):
        return self.model.forward_intermediates(x, indices=self.indices, stop_early=self.stop_early)


@pytest.mark.parametrize("name,size", [("lsnet_t", (96, 99)), ("lolvit_s", (97, 100)), ("lsknet_t", (67, 70))])
@pytest.mark.parametrize("indices,stop_early", [(2, False), ([1], True), ([0, 2], True), ([0, 2], False), ([-1], True)])
def test_scripted_forward_intermediates_equal_eager(name, size, indices, stop_early):
    """The final output and the intermediates, with and without ``stop_early`` (the scripted form
    runs every stage but returns the last selected one's output as the final one)."""
    torch.manual_seed(0)
    wrapper = _Intermediates(timm.create_model(name).eval(), indices, stop_early).eval()
    scripted = torch.jit.script(wrapper)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        (final, feats), (final_s, feats_s) = wrapper(x), scripted(x)
    torch.testing.assert_close(final_s, final, rtol=0, atol=0)
    assert len(feats_s) == len(feats)
    for a, b in zip(feats, feats_s):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
