"""benchmarks/gpu_suite.py in its --dry mode: every section runs on the CPU with tiny shapes,
prints its markdown table and lands in the JSON with numbers (the GPU run itself needs a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.py"

# section name -> (title line, header of its table, a numeric field every row has)
EXPECTED = {
    "correctness": ("## 1. Correctness", "| implementation | shape | N x C x H x W | dtype | x layout | err y |",
                    "err_y"),
    "bandwidth": ("## 2. Copy bandwidth", "| what | MiB | median ms | GB/s (read + write) |", "gbs"),
    "ska": ("## 3. SKA kernels", "| implementation | shape | N x C x H x W | dtype | x layout | fwd ms | fwd+bwd ms |",
            "fwd_ms"),
    "throughput": ("## 4. Model throughput", "| model | mode | batch | median ms | img/s |", "img_s"),
    "latency": ("## 5. Batch-1 latency", "| model | batch | ops | eager ms | CUDA graph ms |", "eager_ms"),
    "train": ("## 6. Training step", "| model | mode | batch | ms / step | img/s | peak GiB |", "ms"),
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def test_gpu_suite_dry_run(tmp_path):
    out_json = tmp_path / "dry.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry", "--json", str(out_json)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    out = proc.stdout
    positions = []
    for name, (title, header, _) in EXPECTED.items():
        assert title in out, f"{name}: no title line {title!r}"
        assert header in out, f"{name}: no table header {header!r}"
        positions.append(out.index(title))
    assert positions == sorted(positions), "sections out of order"
    assert "CUDA graphs skipped" in out and "torch.compile skipped in --dry" in out  # skips are said, not silent
    assert "no failures" in out

    data = json.loads(out_json.read_text())
    assert data["meta"]["dry"] is True and data["meta"]["device"] == "cpu"
    assert data["failures"] == []
    assert list(data["sections"]) == list(EXPECTED)
    for name, (_, _, field) in EXPECTED.items():
        section = data["sections"][name]
        assert section["rows"], f"{name}: no rows"
        assert _number(section["seconds"])
        for row in section["rows"]:
            assert "error" not in row, f"{name}: {row}"
            assert _number(row[field]), f"{name}: {field} not numeric in {row}"
    correctness = data["sections"]["correctness"]
    assert all(r["ok"] is True for r in correctness["rows"])
    assert {r["dtype"] for r in correctness["rows"]} == {"fp32", "bf16"}
    assert {r["layout"] for r in correctness["rows"]} == {"NCHW", "channels-last"}
    assert len({r["shape"] for r in correctness["rows"]}) == 5
    assert data["sections"]["bandwidth"]["summary"]["copy_gbs"] > 0
    assert all(_number(r["fwd_pct"]) for r in data["sections"]["ska"]["rows"])
    models = {r["model"] for r in data["sections"]["throughput"]["rows"]}
    assert {"lsnet_t", "lsnet_s", "lsnet_b", "efficientvit_m3"} <= models
    print(f"gpu_suite --dry took {elapsed:.1f} s")


def test_gpu_suite_rejects_unknown_section():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry", "--sections", "nonsense"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "unknown section" in proc.stderr
