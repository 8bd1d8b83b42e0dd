"""Checkpoint files: the release's layout, safetensors, timm's pretrained hook, and safety."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys

import pytest
import timm
import torch

from conftest import load_fixture, rel_err
from lsnet import CheckpointError, load_checkpoint, save_checkpoint
from lsnet.models.lsnet import LSNet


def release_file(path, state_dict, prefix=""):
    """Write a file the way the release's training script does (DeiT-style main.py)."""
    model = {prefix + k: v for k, v in state_dict.items()}
    torch.save({
        "model": model,
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}},
                      "param_groups": [{"lr": 1e-3, "weight_decay": 0.025, "params": [0]}]},
        "lr_scheduler": {"base_values": [0.004], "last_epoch": 299},
        "epoch": 299,
        "model_ema": {k: v.clone() for k, v in model.items()},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0},
        "max_accuracy": 74.9,
        "args": argparse.Namespace(model="lsnet_t", batch_size=256, lr=0.004, input_size=224,
                                   distillation_type="none", data_path="/data/imagenet"),
    }, path)
    return path


@pytest.mark.parametrize("name,prefix", [("a", ""), ("b", "module.")])
def test_release_format_file_reproduces_fixture(tmp_path, name, prefix):
    fx = load_fixture(f"lsnet_tiny_{name}")
    path = release_file(tmp_path / "release.pth", fx["state_dict"], prefix)
    model = LSNet(**fx["config"])
    report = load_checkpoint(model, path)  # strict by default
    assert report == {"missing": [], "unexpected": [], "dropped": []}
    with torch.no_grad():
        assert rel_err(model.eval()(fx["input"]), fx["logits_eval"]) < 1e-5


def test_bare_state_dict_and_safetensors_round_trip(tmp_path):
    fx = load_fixture("lsnet_tiny_a")
    torch.save(fx["state_dict"], tmp_path / "bare.pth")
    model = LSNet(**fx["config"])
    load_checkpoint(model, tmp_path / "bare.pth")
    save_checkpoint(model, tmp_path / "w.safetensors", metadata={"variant": "tiny_a"})
    save_checkpoint(model, tmp_path / "ours.pth", extra={"epoch": 3})
    for f in ("w.safetensors", "ours.pth"):
        again = LSNet(**fx["config"])
        load_checkpoint(again, tmp_path / f)
        for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
            assert torch.equal(a, b), (f, k)
        with torch.no_grad():
            assert rel_err(again.eval()(fx["input"]), fx["logits_eval"]) < 1e-5
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_ema_weights_on_request(tmp_path):
    fx = load_fixture("lsnet_tiny_b")
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in fx["state_dict"].items()}
    torch.save({"model": fx["state_dict"], "model_ema": ema}, tmp_path / "ck.pth")
    model = LSNet(**fx["config"])
    load_checkpoint(model, tmp_path / "ck.pth", use_ema=True)
    key = "patch_embed.0.c.weight"
    assert torch.equal(model.state_dict()[key], ema[key])


def test_timm_pretrained_file_overlay(tmp_path):
    src = timm.create_model("lsnet_t")
    with torch.no_grad():  # non-trivial BN statistics so that a wrong load would show
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
    path = release_file(tmp_path / "lsnet_t.pth", src.state_dict(), prefix="module.")
    model = timm.create_model("lsnet_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), src.eval()(x))
    # another number of classes: timm drops the classifier
    ten = timm.create_model("lsnet_t", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(ten.patch_embed[0].c.weight, src.patch_embed[0].c.weight)
    # another training resolution: bias tables resized from 4x4 to 6x6
    big = timm.create_model("lsnet_t", pretrained=True, img_size=384, pretrained_cfg_overlay=dict(file=str(path)))
    assert big.blocks4[3].mixer.m.attention_biases.shape == (4, 36)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Exploit()}, f, protocol=2)  # torch.save's protocol
    with pytest.raises(CheckpointError, match="Refusing to load") as info:
        load_checkpoint(timm.create_model("lsnet_t"), path)
    assert "evil.pth" in str(info.value) and "system" in str(info.value)  # names the culprit
    with open(tmp_path / "evil4.pth", "wb") as f:
        pickle.dump({"model": Exploit()}, f, protocol=4)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        load_checkpoint(timm.create_model("lsnet_t"), tmp_path / "evil4.pth")
    assert not marker.exists()
    with pytest.raises(Exception):
        timm.create_model("lsnet_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not marker.exists()


def test_wrong_variant_lists_keys(tmp_path):
    save_checkpoint(timm.create_model("lsnet_s"), tmp_path / "s.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(timm.create_model("lsnet_t"), tmp_path / "s.pth")
    text = str(info.value)
    assert "s.pth" in text and "unexpected keys" in text and "mis-shaped keys" in text
    assert "looks like a checkpoint of lsnet_s" in text
    assert "patch_embed.0.c.weight (file (24, 3, 3, 3), model (16, 3, 3, 3))" in text


def test_wrong_num_classes_and_drop_head(tmp_path):
    src = timm.create_model("lsnet_t_distill")
    save_checkpoint(src, tmp_path / "t.safetensors")
    with pytest.raises(CheckpointError, match="only the classifier differs"):
        load_checkpoint(timm.create_model("lsnet_t_distill", num_classes=10), tmp_path / "t.safetensors")
    model = timm.create_model("lsnet_t_distill", num_classes=10)
    report = load_checkpoint(model, tmp_path / "t.safetensors", drop_head=True)
    assert sorted(report["dropped"]) == ["head.l.bias", "head.l.weight", "head_dist.l.bias", "head_dist.l.weight"]
    assert torch.equal(model.blocks4[3].mixer.m.attention_biases, src.blocks4[3].mixer.m.attention_biases)
    # a backbone without head takes a classification checkpoint with drop_head
    feats = timm.create_model("lsnet_t_distill", features_only=True)
    load_checkpoint(feats, tmp_path / "t.safetensors", drop_head=True)
    assert torch.equal(feats.model.patch_embed[0].c.weight, src.patch_embed[0].c.weight)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(timm.create_model("lsnet_t"), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_checkpoint(timm.create_model("lsnet_t"), tmp_path / "junk.pth")
    (tmp_path / "text.pth").write_text("junk\n")  # read as a legacy pickle, it fails with a KeyError
    with pytest.raises(CheckpointError, match="text.pth is not a readable PyTorch checkpoint"):
        load_checkpoint(timm.create_model("lsnet_t"), tmp_path / "text.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_checkpoint(timm.create_model("lsnet_t"), tmp_path / "junk.safetensors")
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="holds no"):
        load_checkpoint(timm.create_model("lsnet_t"), tmp_path / "nostate.pth")


def test_pretrained_offline_names_the_file(tmp_path):
    code = ("import timm, lsnet\n"
            "try:\n"
            "    timm.create_model('lsnet_s_distill', pretrained=True)\n"
            "except lsnet.PretrainedWeightsUnavailable as e:\n"
            "    print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "lsnet_s_distill.pth" in out.stdout
    assert "pretrained_cfg_overlay=dict(file=" in out.stdout
    assert "lsnet.load_checkpoint" in out.stdout


def _trained_like_tiny(seed=0):
    """A tiny LSNet with non-trivial BatchNorm statistics, one running mean below float16's range."""
    torch.manual_seed(seed)
    model = LSNet(embed_dim=(16, 32, 48, 64), depth=(0, 1, 2, 2), num_heads=(2, 2, 2, 2), key_dim=(8, 8, 8, 8),
                  num_classes=5, img_size=64)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean.fill_(3e-9)
    return model.eval()


@pytest.mark.parametrize("half", [False, True])
def test_convert_keeps_weights_and_metadata(tmp_path, half):
    from lsnet.models.checkpoint import checkpoint_info, convert_checkpoint

    model = _trained_like_tiny()
    names = ["circle", "ellipse", "square", "star", "triangle"]
    save_checkpoint(model, tmp_path / "train.pth", extra={
        "arch": "lsnet_test", "class_names": names, "epoch": 3,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "config": {"img_size": 64, "crop_pct": 1.0, "seed": 3, "lr": 1e-3}})
    out = tmp_path / "w.safetensors"
    res = convert_checkpoint(tmp_path / "train.pth", out, half=half)
    assert checkpoint_info(out) == {"arch": "lsnet_test", "class_names": names, "img_size": 64, "crop_pct": 1.0,
                                    "seed": 3}
    from safetensors.torch import load_file

    stored, own = load_file(str(out)), model.state_dict()
    assert set(stored) == set(own)
    for k, v in own.items():
        want = torch.float16 if half and v.is_floating_point() and v.dim() >= 2 else v.dtype
        assert stored[k].dtype == want, k
        if want == v.dtype:
            assert torch.equal(stored[k], v), k  # kept exactly, the 3e-9 running mean included
    assert res["float16_tensors"] == (sum(v.is_floating_point() and v.dim() >= 2 for v in own.values()) if half else 0)
    again = _trained_like_tiny(seed=1)
    load_checkpoint(again, out)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        err = rel_err(again(x), model(x))
    assert (err < 5e-3) if half else (err == 0.0)
    assert res["max_rel_rounding_error"] < (1e-3 if half else 1e-12)


def test_convert_cli_and_its_errors(tmp_path, capsys):
    from lsnet.cli.main import main

    save_checkpoint(_trained_like_tiny(), tmp_path / "train.pth", extra={"arch": "lsnet_test"})
    assert main(["convert", str(tmp_path / "train.pth"), str(tmp_path / "w.safetensors"), "--half"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'w.safetensors'} (") and "as float16" in out and "arch=lsnet_test" in out
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "w.safetensors").st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    for argv, message in [
        ([str(tmp_path / "train.pth"), str(tmp_path / "w.pth")], "output must be a .safetensors file"),
        ([str(tmp_path / "missing.pth"), str(tmp_path / "w.safetensors")], "missing.pth"),
    ]:
        assert main(["convert", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
