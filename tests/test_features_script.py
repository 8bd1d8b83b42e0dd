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
