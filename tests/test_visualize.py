"""``lsnet visualize`` and :mod:`lsnet.studies.visualize`: the effective receptive field on
convolutions whose field is known, the SKA weights against the model's own, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import tiny_models  # noqa: F401 - registers lsnet_test
import torch
from PIL import Image
from torch import nn

from lsnet.cli.main import main
from lsnet.ops.ska import ska_reference
from lsnet.studies import visualize as vz


def _ones_convs(n: int) -> nn.Module:
    layers = [nn.Conv2d(3 if i == 0 else 1, 1, 3, padding=1, bias=False) for i in range(n)]
    for conv in layers:
        nn.init.ones_(conv.weight)
    return nn.Sequential(*layers)


def _positive_images(k: int, size: int):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(1, 3, size, size, generator=g) + 0.1 for _ in range(k)]


def test_erf_of_one_3x3_convolution_is_its_kernel():
    erf, used = vz.effective_receptive_field(_ones_convs(1), _positive_images(3, 15))
    assert used == 3
    support = np.argwhere(erf > 0)
    assert support.min(0).tolist() == [6, 6] and support.max(0).tolist() == [8, 8]
    assert np.allclose(erf[6:9, 6:9], 3.0)  # one per input channel
    ratios = vz.high_contribution_ratios(erf)
    for t in (0.2, 0.3, 0.5, 0.99):
        assert ratios[t] == (3, pytest.approx((3 / 15) ** 2))


def test_erf_of_two_stacked_3x3_convolutions():
    erf, _ = vz.effective_receptive_field(_ones_convs(2), _positive_images(2, 15))
    a = np.array([1, 2, 3, 2, 1], dtype=float)
    expected = np.zeros((15, 15))
    expected[5:10, 5:10] = 3 * np.outer(a, a)  # paths through two all-ones kernels, three input channels
    assert np.allclose(erf, expected)
    # log10(x+1): the centred 3x3 holds 45.6% of the 5x5 total, so 20% and 30% need side 3,
    # 50% and 99% side 5
    logs = np.log10(3 * np.outer(a, a) + 1)
    assert logs[1:4, 1:4].sum() / logs.sum() == pytest.approx(0.4556, abs=1e-4)
    ratios = vz.high_contribution_ratios(erf)
    assert ratios[0.2] == (3, pytest.approx(9 / 225)) and ratios[0.3] == (3, pytest.approx(9 / 225))
    assert ratios[0.5] == (5, pytest.approx(25 / 225)) and ratios[0.99] == (5, pytest.approx(25 / 225))


def test_high_contribution_area_none_when_no_square_fits():
    data = np.ones((8, 8))
    assert vz.high_contribution_area(data, 0.99) is None  # the largest centred square is 7x7 of 8x8
    assert vz.high_contribution_area(data, 0.5) == (7, pytest.approx(49 / 64))


def test_stage_output_of_lsnet_and_of_a_peer():
    model = timm.create_model("lsnet_test").eval()
    x = torch.randn(1, 3, 64, 64)
    assert vz.StageOutput(model, -1)(x).shape == (1, 64, 1, 1)
    assert vz.StageOutput(model, 1)(x).shape == (1, 32, 4, 4)
    peer = vz.StageOutput(timm.create_model("test_resnet").eval(), 2)
    assert peer(x).dim() == 4
    with pytest.raises(Exception, match="out of range"):
        vz.StageOutput(model, 4)


def test_captured_ska_weights_are_the_models_own():
    model = timm.create_model("lsnet_test").eval()
    names = [n for n, _ in vz.ls_convs(model)]
    assert names and all(n.endswith("mixer") for n in names)
    _, conv = vz.select_ls_conv(model, 0)
    x = torch.randn(2, 3, 64, 64)
    got = vz.capture_ls_conv(model, conv, x)
    with torch.no_grad():
        w = conv.lkp(got["input"])
        assert torch.equal(got["weights"], w.to(got["input"].dtype))
        assert torch.allclose(got["ska"], ska_reference(got["input"], got["weights"]), atol=1e-5)
        n, g, kk, h, wd = got["weights"].shape
        head = conv.lkp.norm(conv.lkp.cv4(got["lkp"])).view(n, g, kk, h, wd)
        assert torch.equal(head, got["weights"])
    assert kk == 9 and got["input"].shape[-2:] == (h, wd)
    # the hooks are gone afterwards
    assert not conv._forward_pre_hooks and not conv.ska._forward_hooks


def test_cli_erf_weights_features(tmp_path, capsys):
    out = tmp_path / "erf.png"
    assert main(["visualize", "erf", "--model", "lsnet_test", "--model", "test_resnet", "--num-images", "2",
                 "--input-size", "64", "--output", str(out), "--json", str(tmp_path / "erf.json")]) == 0
    text = capsys.readouterr().out
    assert "| lsnet_test | 3 (64) | 2 |" in text and "| test_resnet |" in text
    report = json.loads((tmp_path / "erf.json").read_text())
    assert [m["model"] for m in report["models"]] == ["lsnet_test", "test_resnet"]
    assert set(report["models"][0]["ratios"]) == {"0.2", "0.3", "0.5", "0.99"}
    Image.open(out).verify()

    img = tmp_path / "pic.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(img)
    assert main(["visualize", "weights", "--model", "lsnet_test", "--input-size", "64", "--pixel", "10,20",
                 str(img), "--output", str(tmp_path / "w.png"), "--json", str(tmp_path / "w.json")]) == 0
    w = json.loads((tmp_path / "w.json").read_text())
    assert w["pixels"][0]["pixel"] == [10, 20] and np.asarray(w["pixels"][0]["kernels"]).shape[1:] == (3, 3)
    Image.open(tmp_path / "w.png").verify()

    assert main(["visualize", "features", "--model", "lsnet_test", "--data", "shapes", "--num-images", "2",
                 "--input-size", "64", "--layer", "-1", "--output", str(tmp_path / "f.png")]) == 0
    assert "| shape0_" in capsys.readouterr().out
    Image.open(tmp_path / "f.png").verify()


@pytest.mark.parametrize("argv,message", [
    (["weights", "--model", "test_resnet"], "has no LS convolution"),
    (["weights", "--model", "lsnet_test", "--layer", "99"], "--layer 99 is out of range"),
    (["weights", "--model", "lsnet_test", "--pixel", "1"], "--pixel takes Y,X"),
    (["erf", "--model", "lsnet_test", "--stage", "7"], "--stage 7 is out of range"),
    (["erf", "--model", "lsnet_test", "--num-images", "0"], "--num-images must be at least 1"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    assert main(["visualize", *argv, "--input-size", "64", "--output", str(tmp_path / "x.png")]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("lsnet visualize")]
    assert len(err) == 1 and message in err[0]
