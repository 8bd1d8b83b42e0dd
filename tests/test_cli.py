"""The ``lsnet`` command line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lsnet.cli.main import main


def test_info_table_and_json(capsys, tmp_path):
    assert main(["info", "--models", "lsnet_t,lsnet_b_distill", "--json", str(tmp_path / "info.json")]) == 0
    out = capsys.readouterr().out
    row_t = next(line for line in out.splitlines() if line.startswith("| lsnet_t |"))
    assert "11,409,832" in row_t and "| 0.316 |" in row_t
    data = json.loads((tmp_path / "info.json").read_text())
    assert [d["name"] for d in data] == ["lsnet_t", "lsnet_b_distill"]
    assert data[1]["params"] == 23_827_632 and data[1]["fused_params"] == 23_249_320
    assert round(data[1]["gmacs"], 3) == 1.245


@pytest.mark.parametrize("argv,message", [
    (["info", "--models", "lsnet_x"], "unknown model(s) lsnet_x"),
    (["info", "--models", "lsnet_t", "--img-size", "32"], "at least 64"),
])
def test_info_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_python_dash_m_and_console_script():
    out = subprocess.run([sys.executable, "-m", "lsnet", "info", "--models", "lsnet_s"],
                         capture_output=True, text=True, check=True).stdout
    assert "| lsnet_s | 224x224 | 16,146,304 |" in out and "| 0.538 |" in out
    exe = shutil.which("lsnet")
    if exe is None:
        pytest.skip("the console script is not installed (run pip install -e .)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == __import__("lsnet").__version__


def test_export_names_the_extra_it_needs_and_warns_about_random_weights(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    assert main(["export", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "lsnet[deploy]" in err and "onnx" in err and len(err.strip().splitlines()) == 1
    monkeypatch.delitem(sys.modules, "onnx")
    assert main(["export", "--format", "torchscript", "--model", "lsnet_t", "--img-size", "64",
                 "--output", str(tmp_path / "m.pt")]) == 0
    assert "randomly initialised weights" in capsys.readouterr().err


def _predict_setup(tmp_path, n=5):
    """A checkpoint of the tiny test model with 10 classes, ``n`` images and a file that is not one."""
    import timm

    import tiny_models  # noqa: F401 - registers lsnet_test
    from lsnet.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = timm.create_model("lsnet_test", num_classes=10, img_size=64)
    ck = save_checkpoint(model, tmp_path / "ck.pth", extra={
        "arch": "lsnet_test", "class_names": [f"class{i}" for i in range(10)],
        "config": {"img_size": 64, "crop_pct": 1.0, "interpolation": "bicubic", "seed": 0}})
    images = []
    for i in range(n):
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    (tmp_path / "notes.txt").write_text("not an image")
    return str(ck), images


def _predictions(text):
    """{path: [(probability %, class name), ...]} from predict's output."""
    out, path = {}, None
    for line in text.splitlines():
        if not line.startswith(" "):
            path = line.rstrip(":")
            out[path] = []
        else:
            p, name = line.split()
            out[path].append((float(p.rstrip("%")), name))
    return out


def test_predict_batches_images_and_keeps_their_order(tmp_path, capsys):
    ck, images = _predict_setup(tmp_path)
    assert main(["predict", "--checkpoint", ck, "--batch-size", "1", "--device", "cpu", *images]) == 0
    text = capsys.readouterr().out
    # class names start right after the probability, left-aligned (no padded column)
    assert all(re.fullmatch(r" +\d+\.\d\d%  class\d", line) for line in text.splitlines() if line.startswith(" "))
    one = _predictions(text)
    # 2 + 2 + 1 images per forward pass, an unreadable file in the middle left out (exit status 1)
    argv = [*images[:3], str(tmp_path / "notes.txt"), *images[3:]]
    assert main(["predict", "--checkpoint", ck, "-b", "2", "--device", "cpu", "--topk", "3", *argv]) == 1
    captured = capsys.readouterr()
    batched = _predictions(captured.out)
    assert list(batched) == images == list(one)
    for path in images:  # the same probabilities, up to float rounding (and the order of near ties)
        assert [p for p, _ in batched[path]] == pytest.approx([p for p, _ in one[path][:3]], abs=0.011)
        alone = {name: p for p, name in one[path]}
        assert all(alone.get(name) == pytest.approx(p, abs=0.011) for p, name in batched[path])
    assert "notes.txt" in captured.err and "1 of 6 image(s) could not be read" in captured.err


def test_predict_help_names_batch_size_and_device(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "--batch-size" in text and "--device" in text and "cuda:N" in text


@pytest.mark.parametrize("argv,message", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:1"], "--device cuda:1 was asked for but CUDA is not available"),
])
def test_predict_refuses_a_batch_size_or_device_that_cannot_work(tmp_path, capsys, monkeypatch, argv, message):
    ck, images = _predict_setup(tmp_path, n=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine
    assert main(["predict", "--checkpoint", ck, *argv, *images]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ----- the launcher: --version and --help without torch ----------------------------------------

_PROBE = """
import sys, lsnet_launcher
try:
    rc = lsnet_launcher.main(sys.argv[1:])
except SystemExit as stop:  # --help exits from argparse
    rc = stop.code
print("heavy modules:", sorted(m for m in ("torch", "timm", "lsnet") if m in sys.modules))
raise SystemExit(rc)
"""


@pytest.mark.parametrize("argv,status", [(["--version"], 0), (["--help"], 0), (["-h"], 0), ([], 2)])
def test_version_and_help_do_not_import_torch(argv, status):
    res = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True)
    assert res.returncode == status, res.stderr
    assert "heavy modules: []" in res.stdout
    if argv == ["--version"]:
        assert res.stdout.splitlines()[0] == __import__("lsnet").__version__
    else:
        assert "train" in res.stdout and "rotated" in res.stdout


def test_lsnet_version_takes_under_a_second():
    """What the console script runs, best of three (the machine may be busy)."""
    import time

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from lsnet_launcher import main; raise SystemExit(main(['--version']))"],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    assert min(times) < 1.0, times


def test_console_script_is_the_launcher():
    from importlib.metadata import entry_points

    scripts = [e for e in entry_points(group="console_scripts") if e.name == "lsnet"]
    if not scripts:
        pytest.skip("the console script is not installed (run pip install -e .)")
    assert scripts[0].value == "lsnet_launcher:main"


def test_launcher_help_is_the_full_parsers(monkeypatch):
    """The launcher's static list of sub-commands says what the sub-commands register."""
    from lsnet.cli.main import build_parser
    from lsnet_launcher import summary_parser

    monkeypatch.setenv("COLUMNS", "100")
    assert summary_parser().format_help() == build_parser().format_help()


def test_launcher_hands_sub_commands_over(capsys):
    from lsnet_launcher import main as launch

    assert launch(["info", "--models", "lsnet_t"]) == 0
    assert "| lsnet_t | 224x224 | 11,409,832 |" in capsys.readouterr().out


# ----- timm's option names, the old spellings kept ----------------------------------------------

def _config(capsys, *argv):
    """--print-config's JSON and the warnings of ``lsnet <argv> --print-config``."""
    assert main([*argv, "--print-config"]) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_train_takes_timm_names_for_weights_and_amp(capsys, tmp_path):
    weights = str(tmp_path / "w.safetensors")
    for flag in ("--initial-checkpoint", "--pretrained-path"):
        cfg, err = _config(capsys, "train", flag, weights)
        assert cfg["pretrained"] == weights and "deprecated" not in err
    cfg, err = _config(capsys, "train", "--amp")
    assert cfg["amp"] == "float16" and not err  # timm's default dtype
    cfg, _ = _config(capsys, "train", "--amp", "--amp-dtype", "bfloat16")
    assert cfg["amp"] == "bfloat16"
    cfg, _ = _config(capsys, "train", "--amp-dtype", "bfloat16")  # implies --amp
    assert cfg["amp"] == "bfloat16"
    cfg, _ = _config(capsys, "train")
    assert cfg["amp"] is None and cfg["pretrained"] is None


def test_train_old_spellings_still_work_and_warn(capsys, tmp_path):
    weights = str(tmp_path / "w.pth")
    cfg, err = _config(capsys, "train", "--pretrained", weights, "--amp", "bfloat16")
    assert cfg["pretrained"] == weights and cfg["amp"] == "bfloat16"
    assert "--pretrained FILE is deprecated; use --initial-checkpoint FILE" in err
    assert "--amp bfloat16 is deprecated; use --amp --amp-dtype bfloat16" in err
    with pytest.raises(SystemExit):
        main(["train", "--amp", "fp8", "--print-config"])
    assert "the dtype goes to --amp-dtype" in capsys.readouterr().err


def test_no_amp_turns_off_what_a_resumed_run_used():
    from lsnet.cli.train import train_overrides
    from lsnet.cli.main import build_parser

    parse = build_parser().parse_args
    assert train_overrides(parse(["train", "--no-amp"]))["amp"] is None
    assert "amp" not in train_overrides(parse(["train"]))  # unset: the preset's (or the resumed run's)


def _fake_hub(monkeypatch, tmp_path, missing=("model.safetensors",), offline=False, unreachable=False,
              cached=()):
    """hf_hub_download as if online (a file per name, some missing), offline (the hub fails, or
    its host refuses connections: ``unreachable``), with ``cached`` names in the local cache;
    returns the calls that went to the hub."""
    import socket

    import huggingface_hub

    calls = []

    class EntryNotFoundError(Exception):
        pass

    class LocalEntryNotFoundError(Exception):
        pass

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("no network")

    def accept(*args, **kwargs):
        return socket.socket()  # closed right away by the caller

    monkeypatch.setattr(socket, "create_connection", refuse if unreachable else accept)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def download(repo_id, filename, **kwargs):
        if kwargs.get("local_files_only"):
            if filename in cached:
                return str(tmp_path / f"cached-{filename}")
            raise LocalEntryNotFoundError("not in the cache")
        calls.append((repo_id, filename))
        if offline:
            raise LocalEntryNotFoundError("no connection and not in the cache")
        if filename in missing:
            raise EntryNotFoundError(filename)
        path = tmp_path / filename
        path.write_bytes(b"weights")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_pretrained_switch_fetches_the_published_weights(monkeypatch, tmp_path, capsys):
    calls = _fake_hub(monkeypatch, tmp_path)
    cfg, _ = _config(capsys, "train", "--pretrained", "--model", "lsnet_s")
    assert calls == [("jameslahm/lsnet_s", "model.safetensors"), ("jameslahm/lsnet_s", "pytorch_model.bin")]
    assert cfg["pretrained"] == str(tmp_path / "pytorch_model.bin") and cfg["model"] == "lsnet_s"
    # the dense and oriented detectors start their backbone from them
    cfg, _ = _config(capsys, "detect", "train", "--model", "lsnet_t", "--pretrained")
    assert cfg["backbone_checkpoint"] == str(tmp_path / "pytorch_model.bin")
    cfg, _ = _config(capsys, "rotated", "train", "--model", "lsnet_t", "--pretrained")
    assert cfg["backbone"] == "lsnet_t" and cfg["backbone_checkpoint"] == str(tmp_path / "pytorch_model.bin")


@pytest.mark.parametrize("argv,needles", [
    (["train", "--pretrained"], ["could not fetch the published weights of lsnet_t", "LocalEntryNotFoundError",
                                 "https://huggingface.co/jameslahm/lsnet/blob/main/lsnet_t.pth",
                                 "--initial-checkpoint FILE"]),
    (["train", "--pretrained", "--model", "lsknet_t"], ["lsknet_t has no published weights"]),
    (["train", "--pretrained", "--initial-checkpoint", "w.pth"], ["use one"]),
    (["detect", "train", "--pretrained", "--backbone-checkpoint", "w.pth"], ["use one"]),
    (["rotated", "train", "--pretrained", "--backbone", "lsknet_s"], ["lsknet_s has no published weights"]),
])
def test_pretrained_switch_errors_are_one_line(monkeypatch, tmp_path, capsys, argv, needles):
    calls = _fake_hub(monkeypatch, tmp_path, offline=True)
    assert main([*argv, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(n in err for n in needles), err
    assert len(calls) <= 1  # offline: no second file name tried (each try waits for the hub's retries)


def test_pretrained_offline_fails_at_once_and_the_cache_needs_no_network(monkeypatch, tmp_path, capsys):
    calls = _fake_hub(monkeypatch, tmp_path, unreachable=True)
    assert main(["train", "--pretrained", "--print-config"]) == 2
    err = capsys.readouterr().err
    from huggingface_hub import constants

    assert f"cannot reach {constants.ENDPOINT}" in err and "--initial-checkpoint FILE" in err, err
    assert calls == []  # the hub was not asked (its retries take about 20 s offline)
    # weights fetched before load from the cache, offline too
    calls = _fake_hub(monkeypatch, tmp_path, unreachable=True, cached=("pytorch_model.bin",))
    cfg, _ = _config(capsys, "train", "--pretrained", "--model", "lsnet_s")
    assert cfg["pretrained"] == str(tmp_path / "cached-pytorch_model.bin") and calls == []


def test_dense_and_rotated_take_the_classification_names(capsys, tmp_path):
    weights = str(tmp_path / "w.safetensors")
    cfg, err = _config(capsys, "detect", "train", "--model", "lsnet_s", "--initial-checkpoint", weights)
    assert (cfg["backbone"], cfg["backbone_checkpoint"]) == ("lsnet_s", weights) and not err
    assert cfg["epochs"] == 3 and cfg["frozen_stages"] == 4  # the small preset's fine-tuning of a checkpoint
    cfg, _ = _config(capsys, "segment", "train", "--backbone", "lsnet_b", "--backbone-checkpoint", weights)
    assert (cfg["backbone"], cfg["backbone_checkpoint"]) == ("lsnet_b", weights)
    cfg, _ = _config(capsys, "rotated", "train", "--model", "lsnet_t", "--initial-checkpoint", weights,
                     "--drop-path", "0.05")
    assert (cfg["backbone"], cfg["backbone_checkpoint"], cfg["drop_path_rate"]) == ("lsnet_t", weights, 0.05)
    cfg, _ = _config(capsys, "rotated", "train", "--drop-path-rate", "0.2")
    assert cfg["drop_path_rate"] == 0.2


def test_img_size_takes_one_value_everywhere(capsys, monkeypatch):
    from lsnet.cli.main import build_parser

    monkeypatch.setenv("COLUMNS", "100")
    info_help = build_parser()._subparsers._group_actions[0].choices["info"].format_help()
    assert "--img-size PX " in info_help and "--input-size C H W" in info_help
    assert main(["info", "--models", "lsnet_t", "--input-size", "3", "224", "256"]) == 0
    assert "| lsnet_t | 224x256 |" in capsys.readouterr().out
    assert main(["info", "--models", "lsnet_t", "--img-size", "224", "256"]) == 0  # the older form
    captured = capsys.readouterr()
    assert "| lsnet_t | 224x256 |" in captured.out
    assert "--img-size H W is deprecated; use --input-size 3 H W" in captured.err
    assert main(["info", "--models", "lsnet_t", "--input-size", "1", "224", "224"]) == 2
    assert "3 channels" in capsys.readouterr().err
    # visualize's --input-size N (one side, unlike timm's C H W) is now --img-size N
    args = build_parser().parse_args(["visualize", "erf", "--input-size", "64"])
    assert args.input_size == 64 and args.deprecated_options == [("--input-size", "--img-size")]
    assert build_parser().parse_args(["visualize", "erf", "--img-size", "64"]).input_size == 64


def test_info_says_which_head_it_counts(capsys):
    assert main(["info", "--models", "lsnet_t"]) == 0
    assert "1000-class ImageNet classifier" in capsys.readouterr().out


# ----- --help shows each preset's defaults ------------------------------------------------------

def _help(*path):
    """The help of sub-command ``path`` (e.g. "detect", "train"), one line per option."""
    import re

    from lsnet.cli.main import build_parser

    parser = build_parser()
    for name in path:
        parser = parser._subparsers._group_actions[0].choices[name]
    return re.sub(r"\s+", " ", parser.format_help())


def test_train_help_shows_the_defaults_of_each_preset():
    from lsnet.classify.config import PRESETS, TrainConfig

    text = _help("train")
    small = PRESETS["small"]
    assert f"(default: {small['epochs']} for small; {TrainConfig.epochs} for imagenet)" in text
    assert f"(default: {small['img_size']} for small; {TrainConfig.img_size} for imagenet)" in text
    # the learning rate as resolved for one process, not "none"
    assert "--lr LR peak learning rate; unset: lr-base x total batch / 512 (default: 0.002 for small; 0.0005 for " \
           "imagenet)" in text
    assert "(default: 0.05 for small, lsnet_b* under imagenet; 0.025 for imagenet)" in text  # Table 10
    assert "--model-ema, --no-model-ema keep an exponential moving average of the weights (default: off for " \
           "small; on for imagenet)" in text
    assert "--amp [DTYPE]" in text and "(default: off)" in text


def test_train_help_follows_the_presets(monkeypatch):
    """Generated from the configuration, not written by hand."""
    from lsnet.classify.config import PRESETS

    monkeypatch.setitem(PRESETS, "small", {**PRESETS["small"], "epochs": 31, "mixup": 0.3})
    text = _help("train")
    assert "(default: 31 for small; 300 for imagenet)" in text and "(default: 0.3 for small; 0.8 for imagenet)" in text


def test_every_train_option_shows_its_default():
    import dataclasses

    from lsnet.classify.config import TrainConfig
    from lsnet.cli.main import build_parser

    parser = build_parser()._subparsers._group_actions[0].choices["train"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # None in every preset: "unset" means something else (from the data, no file, no resume, ...)
    unset = {"num_classes", "pretrained", "teacher_checkpoint", "resume", "stop_after", "preset"}
    missing = [a.option_strings[0] for a in parser._actions
               if a.dest in fields - unset and a.const is not False and "default:" not in (a.help or "")]
    assert not missing


def test_dense_and_rotated_help_show_the_defaults_of_each_preset():
    from lsnet.dense.config import DENSE_PRESETS, SMALL_DETECT_ARCH, SMALL_FINETUNE
    from lsnet.rotated.config import ROTATED_PRESETS, SMALL_FINETUNE as ROTATED_FINETUNE

    text = _help("detect", "train")
    epochs = (f"(default: {SMALL_DETECT_ARCH['retinanet']['epochs']} for small retinanet; "
              f"{SMALL_FINETUNE['retinanet']['epochs']} for small retinanet from a checkpoint, small maskrcnn; "
              f"{SMALL_FINETUNE['maskrcnn']['epochs']} for small maskrcnn from a checkpoint; "
              f"{DENSE_PRESETS['1x']['epochs']} for 1x)")
    assert SMALL_FINETUNE["retinanet"]["epochs"] == SMALL_DETECT_ARCH["maskrcnn"]["epochs"]  # as grouped above
    assert epochs in text and "--output OUTPUT folder for checkpoints, metrics.jsonl and curves (default: " \
                              "output/detect)" in text
    text = _help("segment", "train")
    assert (f"(default: {DENSE_PRESETS['small-segment']['iters']} for small; {SMALL_FINETUNE['semantic_fpn']['iters']} "
            f"for small from a checkpoint; {DENSE_PRESETS['40k']['iters']} for 40k)") in text
    text = _help("rotated", "train")
    assert (f"(default: {ROTATED_FINETUNE['epochs']} for small; {ROTATED_PRESETS['small']['epochs']} for small from "
            f"scratch; {ROTATED_PRESETS['1x']['epochs']} for 1x)") in text


def test_pretrained_in_hub_offline_mode_asks_nothing(monkeypatch, tmp_path, capsys):
    from huggingface_hub import constants

    calls = _fake_hub(monkeypatch, tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["train", "--pretrained", "--print-config"]) == 2
    assert "HF_HUB_OFFLINE is set and they are not in the cache" in capsys.readouterr().err and calls == []


def test_bare_amp_keeps_a_resumed_runs_dtype(tmp_path):
    """``--resume CK --amp`` continues in the resumed run's autocast dtype (not float16);
    ``--amp-dtype`` still chooses, and without ``--resume`` a bare ``--amp`` is float16 (timm's)."""
    from lsnet.cli.args import amp_overrides
    from lsnet.cli.main import build_parser

    ck = tmp_path / "last.pth"
    torch.save({"config": {"amp": "bfloat16"}}, ck)
    parse = build_parser().parse_args
    for command in (["train"], ["detect", "train"], ["rotated", "train"]):
        assert amp_overrides(parse([*command, "--resume", str(ck), "--amp"])) == {"amp": "bfloat16"}
        assert amp_overrides(parse([*command, "--resume", str(ck), "--amp-dtype", "float16"])) == {"amp": "float16"}
        assert amp_overrides(parse([*command, "--amp"])) == {"amp": "float16"}
