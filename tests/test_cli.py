"""The ``lsnet`` command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

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
