"""The paper's ablation variants (Tables 5, 7, 8, 9): construction, forward/backward, cost
against the paper's FLOPs column, ``--model-kwargs`` and the ablation runner."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn as nn

import lsnet  # noqa: F401  registers the models
import tiny_models  # noqa: F401  registers lsnet_test
from lsnet.classify import resolve_config
from lsnet.classify.config import parse_model_kwargs
from lsnet.classify.task import build_model
from lsnet.cli.main import main
from lsnet.errors import ConfigError
from lsnet.models.ablations import ABLATION_MODEL_NAMES, LSNET_VARIANTS, DownsampleLSConv, TokenLSConv
from lsnet.models.lsnet import LKP, LSConv, RepVGGDW
from lsnet.ops.ska import SKA
from lsnet.studies.ablation import VARIANT_GROUPS, cost_table, resolve_variants, variant_model

LSNET_KEYS = [k for k in LSNET_VARIANTS if k != "base"]


def _forward_backward(model: nn.Module, x: torch.Tensor, classes: int) -> None:
    out = model.train()(x)
    assert out.shape == (x.shape[0], classes)
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# ----- construction ---------------------------------------------------------------------------

def test_all_ablation_names_are_registered():
    assert set(ABLATION_MODEL_NAMES) <= set(timm.list_models())
    assert {f"lsnet_t_{k}" for k in LSNET_KEYS} <= set(ABLATION_MODEL_NAMES)


@pytest.mark.parametrize("key", LSNET_KEYS)
def test_lsnet_variant_forward_backward_at_64(key):
    model = timm.create_model(f"lsnet_t_{key}", num_classes=7)
    same = timm.create_model("lsnet_t", num_classes=7, **LSNET_VARIANTS[key].kwargs)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [(k, v.shape) for k, v in same.state_dict().items()]
    _forward_backward(model, torch.randn(2, 3, 64, 64), 7)


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def test_variants_remove_what_the_paper_says():
    base = timm.create_model("lsnet_t")
    n_ls, n_dw = _count(base, LSConv), _count(base, RepVGGDW)
    assert (n_ls, n_dw) == (5, 10)  # stage 2: 1, stage 3: 4 LS convs; 10 even blocks
    kl3 = timm.create_model("lsnet_t_kl3")
    assert all(m.cv2.c.kernel_size == (3, 3) for m in kl3.modules() if isinstance(m, LKP))
    no_lkp = timm.create_model("lsnet_t_no_lkp")
    assert all(isinstance(m.cv2, nn.Identity) for m in no_lkp.modules() if isinstance(m, LKP))
    no_ska = timm.create_model("lsnet_t_no_ska")
    assert _count(no_ska, SKA) == 0 and _count(no_ska, nn.GroupNorm) == 0
    statics = [m.static_dw for m in no_ska.modules() if isinstance(m, LSConv)]
    assert len(statics) == n_ls and all(c.kernel_size == (3, 3) and c.groups == c.in_channels for c in statics)
    ks5 = timm.create_model("lsnet_t_ks5")
    lkp = ks5.blocks2[3].mixer.lkp
    assert lkp.cv4.out_channels == 25 * 128 // 8 and lkp.small_kernel == 5
    cg1 = timm.create_model("lsnet_t_cg1")
    assert cg1.blocks3[3].mixer.lkp.cv4.out_channels == 9 * 256  # one kernel per channel
    no_dw = timm.create_model("lsnet_t_no_dw")
    assert _count(no_dw, RepVGGDW) == 0 and _count(no_dw, timm.layers.SqueezeExcite) == n_dw
    no_se = timm.create_model("lsnet_t_no_se")
    assert _count(no_se, timm.layers.SqueezeExcite) == 0 and _count(no_se, RepVGGDW) == n_dw
    no_ls = timm.create_model("lsnet_t_no_lsconv")
    assert _count(no_ls, LSConv) == 0 and _count(no_ls, RepVGGDW) == n_dw


def test_variant_kwargs_on_other_sizes_and_their_errors():
    model = timm.create_model("lsnet_s", num_classes=3, large_kernel=5, small_kernel=5, channels_per_group=16)
    _forward_backward(model, torch.randn(2, 3, 64, 64), 3)
    with pytest.raises(ValueError, match="large_kernel must be an odd"):
        timm.create_model("lsnet_t", large_kernel=4)
    with pytest.raises(ValueError, match="small_kernel must be an odd"):
        timm.create_model("lsnet_t", small_kernel=0)
    with pytest.raises(ValueError, match=r"channels_per_group .*\(128, 256\)"):
        timm.create_model("lsnet_t", channels_per_group=3)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("lsnet_t_kl3", pretrained=True)


@pytest.mark.parametrize("key", ["no_ska", "no_dw", "no_lkp", "ks1"])
def test_fused_variant_equals_unfused(key):
    model = timm.create_model(f"lsnet_t_{key}", num_classes=5).double().eval()
    for m in model.modules():  # non-trivial BN statistics, so that folding is tested
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(lsnet.fuse(model)(x), model(x))


def test_resnet50_lsconv_replaces_every_3x3_conv():
    model = timm.create_model("resnet50_lsconv", num_classes=4)
    assert _count(model, LSConv) == 16 and _count(model, DownsampleLSConv) == 3
    plain = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]
    assert not plain  # only depth-wise 3x3 convs (downsampling) are left
    assert model.pretrained_cfg["architecture"] == "resnet50_lsconv"
    _forward_backward(model, torch.randn(2, 3, 64, 64), 4)
    feats = timm.create_model("resnet50_lsconv", features_only=True, out_indices=(1, 4))
    assert [f.shape[1] for f in feats(torch.randn(1, 3, 64, 64))] == [256, 2048]


def test_deit_tiny_lsconv_replaces_every_attention():
    model = timm.create_model("deit_tiny_lsconv", num_classes=4, img_size=32)
    mixers = [m for m in model.modules() if isinstance(m, TokenLSConv)]
    assert len(mixers) == 12 and mixers[0].grid_size == (2, 2)
    assert not any(isinstance(m, timm.layers.Attention) for m in model.modules())
    assert model.num_prefix_tokens == 0 and model.global_pool == "avg"
    _forward_backward(model, torch.randn(2, 3, 32, 32), 4)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("deit_tiny_lsconv", pretrained=True)


def test_token_lsconv_equals_lsconv_on_the_grid():
    mixer = TokenLSConv(16, (3, 4)).eval()
    img = torch.randn(2, 16, 3, 4)
    tokens = img.flatten(2).transpose(1, 2)
    with torch.no_grad():
        want = mixer.ls(img)  # no shortcut inside a transformer block
        torch.testing.assert_close(mixer(tokens), want.flatten(2).transpose(1, 2))
        assert not torch.allclose(want, mixer.ls.bn(mixer.ls.ska(img, mixer.ls.lkp(img))) + img)


# ----- cost at 224 against the paper ------------------------------------------------------------

def test_gmacs_of_every_variant_match_the_paper():
    """All 19 counts at 224 take a few seconds on a CPU: none is left to the slow tests."""
    rows = cost_table(VARIANT_GROUPS["all"])
    assert {r.key for r in rows} == set(LSNET_VARIANTS) | set(VARIANT_GROUPS["table9"])
    for r in rows:
        assert r.matches, f"{r.key}: {r.gmacs:.4f} GMACs, paper {r.paper_gflops} G (tolerance {r.tolerance})"
    by_key = {r.key: r for r in rows}
    base = by_key["base"]
    assert base.params == 11_409_832 and round(base.gmacs, 3) == 0.316
    assert base.ska_gmacs == pytest.approx(677376 / 1e9)  # SKA is counted: 9 MACs per output element
    assert by_key["no_ska"].ska_gmacs == 0 and by_key["ks5"].ska_gmacs > base.ska_gmacs
    assert by_key["deit_tiny_patch16_224"].gmacs == pytest.approx(1.254, abs=0.002)  # attention counted on CPU


def test_variants_resolve_and_errors():
    assert resolve_variants("base,kl3,table5,kl3") == ["base", "kl3", "no_lsconv"]
    assert resolve_variants(["resnet50_lsconv"]) == ["resnet50_lsconv"]
    with pytest.raises(ConfigError, match="unknown variant 'kl4'"):
        resolve_variants("base,kl4")
    assert variant_model("kl3") == ("lsnet_t_kl3", {})
    assert variant_model("kl3", "lsnet_s") == ("lsnet_s", {"large_kernel": 3})
    assert variant_model("base", "lsnet_test") == ("lsnet_test", {})


def test_ablate_cli_prints_the_table(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["ablate", "--variants", "kl3,no_se", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| K_L = 3 | 7 | lsnet_t_kl3 |" in text and "yes (±0.01)" in text
    assert [r["key"] for r in json.loads(out.read_text())] == ["kl3", "no_se"]
    assert main(["ablate", "--variants", "nope"]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err


# ----- --model-kwargs ------------------------------------------------------------------------------

def test_model_kwargs_are_python_literals():
    got = parse_model_kwargs(["large_kernel=3", "use_se=False", "embed_dim=(16, 32)", "name=abc", "x='7'"])
    assert got == {"large_kernel": 3, "use_se": False, "embed_dim": (16, 32), "name": "abc", "x": "7"}
    with pytest.raises(ConfigError, match="given twice"):
        parse_model_kwargs(["a=1", "a=2"])
    with pytest.raises(ConfigError, match="num_classes with --num-classes"):
        parse_model_kwargs(["num_classes=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_model_kwargs(["large_kernel"])


def test_model_kwargs_reach_the_model(capsys):
    assert main(["train", "--model", "lsnet_t", "--model-kwargs", "large_kernel=3", "use_ska=False",
                 "--data", "/x", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model_kwargs"] == {"large_kernel": 3, "use_ska": False}
    model = build_model(resolve_config({"model": "lsnet_t", "model_kwargs": cfg["model_kwargs"]}), 10)
    assert _count(model, SKA) == 0 and model.blocks2[3].mixer.lkp.cv2.c.kernel_size == (3, 3)


@pytest.mark.parametrize("kwargs,needle", [({"bogus": 1}, "unexpected keyword argument 'bogus'"),
                                            ({"large_kernel": 4}, "large_kernel must be an odd")])
def test_bad_model_kwargs_are_one_config_error(kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        build_model(resolve_config({"model": "lsnet_t", "model_kwargs": kwargs}), 10)
    assert "\n" not in str(err.value) and "--model-kwargs" in str(err.value)


def test_bad_model_kwargs_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit):  # argparse: not key=value
        main(["train", "--model-kwargs", "large_kernel", "--print-config"])
    assert "key=value" in capsys.readouterr().err
    code = main(["train", "--model", "lsnet_test", "--model-kwargs", "bogus=1", "--epochs", "1", "-j", "0",
                 "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("lsnet train: error:") and "bogus" in err[-1]


# ----- the runner --------------------------------------------------------------------------------

def test_ablate_train_runs_variants_and_tabulates(tmp_path, capsys):
    out = tmp_path / "abl"
    code = main(["ablate", "train", "--variants", "base,no_ska", "--base", "lsnet_test", "--data", "digits",
                 "--epochs", "1", "-b", "96", "-j", "0", "--deterministic", "--log-interval", "1000",
                 "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| LSNet-T | lsnet_test |" in printed and "| w/o SKA | lsnet_test use_ska=False |" in printed
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["key"] for r in rows] == ["base", "no_ska"]
    assert rows[1]["model_kwargs"] == {"use_ska": False}
    for r in rows:
        assert 0 <= r["best_top1"] <= 100 and r["best_epoch"] == 1 and r["epochs"] == 1
        assert r["params"] > 0 and r["gmacs"] > 0 and r["img_size"] == 64
    assert rows[0]["params"] != rows[1]["params"]  # the checkpoint rebuilt the variant it was trained as
    assert (out / "ablation.md").read_text().count("\n") == 4
    assert (out / "no_ska" / "best.pth").is_file()
    # the variant's checkpoint evaluates: its --model-kwargs are read back from it
    assert main(["eval", "--checkpoint", str(out / "no_ska" / "best.pth"), "--data", "digits", "-j", "0"]) == 0


def test_ablate_train_refuses_model_and_resume(tmp_path, capsys):
    assert main(["ablate", "train", "--variants", "base", "--model", "lsnet_t", "--output", str(tmp_path)]) == 2
    assert "not --model" in capsys.readouterr().err
