"""timm's own model tests (``tests/test_models.py`` of the installed timm's sdist) pass for the
project's models: LSNet with its distillation and ablation variants, LOLViT and LSKNet.

Runs ``benchmarks/timm_model_tests.py`` (issue 18), which downloads timm's sdist from the package
registry into ``output/timm-tests`` (git-ignored; kept for later runs); skipped when the download
fails. The tests that need the model hub are left out (``--no-hub``): they download every
release checkpoint.
"""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "timm_model_tests.py"

# The main models and two of the 14 ablation variants (one without SKA, one with another kernel
# size), to keep CI within its time: these 12 models (116 tests) took 1 min 37 s on the 2-core
# machine when quiet, 5 min 14 s under load; all 24 (222 tests) 2 min 57 s when quiet. Every
# model: python benchmarks/timm_model_tests.py
MODELS = ["lsnet_t", "lsnet_s", "lsnet_b", "lsnet_t_distill", "lsnet_s_distill", "lsnet_b_distill",
          "lsnet_t_no_ska", "lsnet_t_ks5", "lolvit_s", "lolvit_x", "lsknet_t", "lsknet_s"]


def _script():
    spec = importlib.util.spec_from_file_location("timm_model_tests", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_timm_model_suite():
    script = _script()
    try:
        script.fetch_tests(script.DEFAULT_WORKDIR)
    except script.DownloadError as err:
        pytest.skip(f"timm's sdist (its test files) could not be downloaded from the package registry: {err}")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--families", "lsnet,lolvit,lsknet", "--models",
                           ",".join(MODELS), "--no-hub", "--", "-rA", "-W", "ignore"],
                          capture_output=True, text=True, cwd=ROOT)
    took = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    summary = [line for line in out.splitlines() if re.search(r"\d+ (passed|failed|errors?)\b", line)]
    assert proc.returncode == 0 and summary, f"timm's model tests failed (exit {proc.returncode}):\n{out[-8000:]}"
    assert not re.search(r"\d+ (failed|errors?)\b", summary[-1]), summary[-1]
    # every model was tested, by each kind of test (a renamed model would drop out silently)
    passed = {}
    for test, params in re.findall(r"^PASSED \S*::(\w+)\[([^\]]+)\]", out, flags=re.M):
        for name in params.split("-"):
            passed.setdefault(name, set()).add(test)
    kinds = {"test_model_forward", "test_model_backward", "test_model_forward_torchscript", "test_model_forward_fx",
             "test_model_forward_fx_torchscript"}
    if "GITHUB_ACTIONS" in os.environ:
        kinds.discard("test_model_forward_fx_torchscript")  # timm leaves it out there (memory)
    for name in MODELS:
        tests = passed.get(name, set())
        assert kinds <= tests, (name, sorted(tests))
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all("model hub" in line for line in skipped), skipped
    print(f"{summary[-1]} ({took:.0f} s)")
