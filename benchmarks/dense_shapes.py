"""Train the three dense models on the synthetic shapes set with the small presets and report,
per model, the best validation metric, when it was reached and the wall time.

    python benchmarks/dense_shapes.py [--only retinanet,maskrcnn,semantic_fpn] [--output output/bench-dense]
                                      [--backbone-checkpoint weights/lsnet_t_shapes.safetensors]

Each run is the README's command (``lsnet detect|segment train``) in a subprocess, timed from
start to exit (model building and evaluations included; generating the shapes set is not,
it is made first if missing). Writes ``summary.md`` and ``summary.json`` under --output.

The shared machine's speed varies; before and after the runs a host calibration (fused
LSNet-T at batch 16, as ``lsnet bench --models lsnet_t --batch-sizes 16 --fuse --rounds 8``,
median ms/image) is measured and written beside the results, to compare runs across days.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "retinanet": (["detect", "train", "--arch", "retinanet"], "val_bbox_AP50", 15),
    "maskrcnn": (["detect", "train", "--arch", "maskrcnn"], "val_segm_AP50", 20),
    "semantic_fpn": (["segment", "train"], "val_mIoU", 15),
}
TARGETS = {"retinanet": 0.6, "maskrcnn": 0.5, "semantic_fpn": 0.6}


def calibrate() -> float:
    """Median ms/image of fused LSNet-T at batch 16 on this host right now."""
    from lsnet.deploy.bench import BenchConfig, run_benchmark

    cfg = BenchConfig(models=["lsnet_t"], batch_sizes=[16], fuse=True, rounds=8)
    return run_benchmark(cfg, log=lambda _: None)[0].ms_per_image["median"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    parser.add_argument("--output", default="output/bench-dense")
    parser.add_argument("--backbone-checkpoint", help="classification weights for every backbone, e.g. the "
                        "repository's weights/lsnet_t_shapes.safetensors (default: from scratch)")
    args = parser.parse_args()
    if args.backbone_checkpoint and not Path(args.backbone_checkpoint).is_file():
        parser.error(f"--backbone-checkpoint: no such file: {args.backbone_checkpoint}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if not (Path("data/shapes") / "shapes.json").exists():  # generated outside the timed runs
        subprocess.run([sys.executable, "-m", "lsnet", "dense", "make-shapes", "data/shapes"], check=True)
    calib_before = calibrate()
    print(f"host calibration: fused LSNet-T, batch 16: {calib_before:.2f} ms/image", flush=True)
    rows = []
    for name in args.only.split(","):
        cmd, key, minutes = RUNS[name]
        if args.backbone_checkpoint:
            cmd = cmd + ["--backbone-checkpoint", args.backbone_checkpoint]
        run_dir = out / name
        full = [sys.executable, "-m", "lsnet", *cmd, "--output", str(run_dir)]
        print("$ lsnet " + " ".join(cmd + ["--output", str(run_dir)]), flush=True)
        start = time.time()
        subprocess.run(full, check=True)
        wall = time.time() - start
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        best = max(records, key=lambda r: r[key])
        rows.append({"model": name, "metric": key[4:], "best": best[key], "at_iteration": best["iteration"],
                     "at_s": best["elapsed_s"], "wall_s": wall, "budget_min": minutes, "target": TARGETS[name],
                     "curve": [(r["iteration"], round(r["elapsed_s"]), r[key]) for r in records]})
    calib_after = calibrate()
    lines = [f"machine: {platform.processor() or platform.machine()}, {platform.system()}; "
             f"{time.strftime('%Y-%m-%d')}; backbone: {args.backbone_checkpoint or 'from scratch'}",
             f"host calibration (fused LSNet-T, batch 16, ms/image): {calib_before:.2f} before, {calib_after:.2f} after", "",
             "| model | metric | best | target | reached at (s) | wall (s) | budget (min) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['metric']} | {r['best']:.3f} | {r['target']} | {r['at_s']:.0f} | "
                     f"{r['wall_s']:.0f} | {r['budget_min']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"calibration_ms_per_image": [calib_before, calib_after],
                                                  "runs": rows}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
