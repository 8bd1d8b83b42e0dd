"""Search the readings of the LOLViT paper for one that reproduces its LOLViTBlock parameter counts.

The paper (Li et al., Tables 16-17) gives six LOLViTBlock counts but none of the block's widths;
its text describes the block in words only. This script enumerates structural readings of that
text (each option below names the passage or the code convention it comes from), counts the
parameters of each reading from the shapes of its tensors, and reports how close the readings
come to the six counts:

* ``free`` widths: the Transformer width ``d`` is free per block (a multiple of 8, 16..768), the
  MLP width is ``ratio * d`` and the fusion width follows the reading's rule. A reading
  "reproduces" a block when some ``d`` gives the exact count.
* ``rule`` widths: ``d = k * c`` for ``k`` in 1, 1.5, 2 (``c`` the block's channels). The closest
  reading is the one with the smallest largest relative error over the six blocks.

It also prints the two pairs of blocks with equal channels (S's 1/16 and X's 1/8 block, both 96;
S's 1/32 and X's 1/16 block, both 128): under any reading whose widths depend on the channels
alone, such a pair differs only by its stage's settings (Fold 1-2-4 in the final configuration).

Usage: ``python tools/lolvit_block_search.py [--json report.json]`` (a few seconds on 2 cores).
The reading that ``lsnet.models.lolvit`` implements is one point of this space (with fitted
widths); ``tests/test_lolvit_search.py`` checks that this script's shapes for it equal the real
module's parameters.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

Shape = Tuple[int, ...]

#: The six LOLViTBlocks of Tables 16-17: (model, stage index 0..2, channels c, parameters).
#: ``c`` is the real width derived from the GhostNet rows (see the model file's docstring).
TABLE_BLOCKS: List[Tuple[str, int, int, int]] = [
    ("lolvit_s", 0, 64, 163_927), ("lolvit_s", 1, 96, 295_703), ("lolvit_s", 2, 128, 472_535),
    ("lolvit_x", 0, 96, 269_943), ("lolvit_x", 1, 128, 468_439), ("lolvit_x", 2, 192, 900_279),
]
FOLDS = (1, 2, 4)  # the paper's final configuration (Sec. 6, Table 24)
HEADS = 4  # Table 12's best


# ----- the readings ---------------------------------------------------------------------------

@dataclass(frozen=True)
class OuterReading:
    """What surrounds the Transformer layers in a LOLViTBlock."""
    local: str  # "none" | "conv3" (MobileViT's nxn local representation) | "dw3_pw" | "ghost5" ("GhostNet
    # extracts features": GhostModule c -> c with a 5x5 cheap operation, as the GhostNetBlocks)
    up_bn: bool  # "a convolutional layer for upscaling": 1x1 conv + BN (True) or a plain 1x1 conv
    fusion: str  # "mobilevit" (1x1 d->c, 3x3 on [x, g]) | "feature" (App. A: bottleneck with parallel
    # depth-wise 5x5 and 7x7) | "feature357" (3x3, 5x5 and 7x7 branches) | "feature_add" (bottleneck on g only)
    fusion_width: str  # "c/2" | "c" | "2c": the bottleneck's hidden width ("feature*" only)


@dataclass(frozen=True)
class LayerReading:
    """One Transformer layer with Fast Window Attention."""
    final_norm: bool  # a LayerNorm after the last layer (MobileViT-v1's Transformer has one)
    qt_bias: bool  # bias in the Linear that makes Query and Token
    head_dim: int  # 0: d / heads; else fixed (8: the common MobileViT code's 4 heads x 8)
    kv_scope: str  # the 1x1 "Conv" on the folded key sequence: "head" (D*Fold -> 2D, shared by the
    # heads), "inner" (all heads at once: I*Fold -> 2I), "per_head" (one per head)
    kv_bias: bool
    dp_per_head: bool  # DReLu's DP: one scalar per layer (False) or per head (True)
    proj: str  # output projection: "bias" | "nobias" | "none" (only when the inner width is d)
    mlp_ratio: int
    depths: Tuple[int, int, int]  # the paper's L per block
    cache: bool  # Eq. 5: layers 2..L take the key sequence from the cache (no Token projection)


def outer_readings() -> Iterator[OuterReading]:
    """Every OuterReading of the search."""
    for local, up_bn in itertools.product(("none", "conv3", "dw3_pw", "ghost5"), (True, False)):
        yield OuterReading(local, up_bn, "mobilevit", "-")
        for fusion, width in itertools.product(("feature", "feature357", "feature_add"), ("c/2", "c", "2c")):
            yield OuterReading(local, up_bn, fusion, width)


def layer_readings() -> Iterator[LayerReading]:
    """Every LayerReading of the search."""
    depth_cache = [((1, 1, 1), True), ((2, 4, 3), True), ((2, 4, 3), False), ((2, 2, 2), True), ((3, 3, 3), True),
                   ((3, 3, 3), False), ((1, 2, 3), True)]
    for (final_norm, qt_bias, head_dim, kv_scope, kv_bias, dp_per_head, proj, mlp_ratio, (depths, cache)) in \
            itertools.product((False, True), (False, True), (0, 8, 16), ("head", "inner", "per_head"),
                              (False, True), (False, True), ("bias", "nobias", "none"), (1, 2, 3, 4), depth_cache):
        if proj == "none" and head_dim != 0:
            continue  # without an output projection the heads must fill d
        yield LayerReading(final_norm, qt_bias, head_dim, kv_scope, kv_bias, dp_per_head, proj, mlp_ratio,
                           depths, cache)


# ----- tensor shapes of a reading --------------------------------------------------------------

def conv(cin: int, cout: int, k: int = 1, groups: int = 1, bias: bool = False) -> List[Shape]:
    """Shapes of a Conv2d."""
    return [(cout, cin // groups, k, k)] + ([(cout,)] if bias else [])


def norm(ch: int) -> List[Shape]:
    """Shapes of a BatchNorm2d or LayerNorm (weight and bias)."""
    return [(ch,), (ch,)]


def linear(cin: int, cout: int, bias: bool = True) -> List[Shape]:
    """Shapes of a Linear."""
    return [(cout, cin)] + ([(cout,)] if bias else [])


def outer_shapes(r: OuterReading, c: int, d: int, fusion_width: int | None = None) -> List[Shape]:
    """Parameter shapes of everything in the block but the Transformer layers (``fusion_width``
    overrides the reading's rule)."""
    s: List[Shape] = []
    if r.local == "conv3":
        s += conv(c, c, 3) + norm(c)
    elif r.local == "dw3_pw":
        s += conv(c, c, 3, groups=c) + norm(c) + conv(c, c) + norm(c)
    elif r.local == "ghost5":
        s += conv(c, c // 2) + norm(c // 2) + conv(c // 2, c // 2, 5, groups=c // 2) + norm(c // 2)
    s += conv(c, d) + (norm(d) if r.up_bn else [])
    s += conv(d, c) + norm(c)  # back to the block's channels
    if r.fusion == "mobilevit":
        return s + conv(2 * c, c, 3) + norm(c)
    e = fusion_width if fusion_width is not None else {"c/2": c // 2, "c": c, "2c": 2 * c}[r.fusion_width]
    s += conv(c if r.fusion == "feature_add" else 2 * c, e) + norm(e)
    for k in ((3, 5, 7) if r.fusion == "feature357" else (5, 7)):
        s += conv(e, e, k, groups=e) + norm(e)
    return s + conv(e, c) + norm(c)


def layer_shapes(r: LayerReading, d: int, stage: int, mlp_width: int | None = None) -> List[Shape]:
    """Parameter shapes of the Transformer layers of a block at ``stage`` (0..2) (``mlp_width``
    overrides ``mlp_ratio * d``)."""
    head_dim = d // HEADS if r.head_dim == 0 else r.head_dim
    m = r.mlp_ratio * d if mlp_width is None else mlp_width
    inner, fold = HEADS * head_dim, FOLDS[stage]
    s: List[Shape] = []
    for i in range(r.depths[stage]):
        with_token = i == 0 or not r.cache
        s += norm(d) + linear(d, (2 if with_token else 1) * inner, r.qt_bias)
        if r.kv_scope == "head":
            s += linear(head_dim * fold, 2 * head_dim, r.kv_bias)
        elif r.kv_scope == "inner":
            s += linear(inner * fold, 2 * inner, r.kv_bias)
        else:
            s += HEADS * linear(head_dim * fold, 2 * head_dim, r.kv_bias)
        s += [(HEADS,)] if r.dp_per_head else [()]
        if r.proj != "none":
            s += linear(inner, d, r.proj == "bias")
        s += norm(d) + linear(d, m) + linear(m, d)
    if r.final_norm:
        s += norm(d)
    return s


def count(shapes: Sequence[Shape]) -> int:
    """Number of parameters of tensors with these shapes."""
    return sum(math.prod(shape) for shape in shapes)


def quadratic_in_d(fn, d_points=(32, 64, 96)) -> np.ndarray:
    """Coefficients (a, b, c) of ``a d^2 + b d + c`` through ``fn`` at three multiples of 32.

    Every count here is a polynomial of degree <= 2 in ``d`` (for ``d`` a multiple of 8 with
    ``heads = 4``), so three points determine it; ``--check`` verifies it on the whole grid.
    """
    x = np.array(d_points, dtype=np.float64)
    y = np.array([fn(int(v)) for v in d_points], dtype=np.float64)
    return np.linalg.solve(np.vander(x, 3), y)


def evaluate(coef: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Exact integer values of the quadratics ``coef[..., 3]`` on ``d``."""
    return np.rint(coef[..., 0:1] * d * d + coef[..., 1:2] * d + coef[..., 2:3]).astype(np.int64)


# ----- the search ------------------------------------------------------------------------------

def pair_analysis() -> List[Dict[str, object]]:
    """The blocks with equal channels, and what differs between them."""
    out = []
    by_c: Dict[int, List[Tuple[str, int, int]]] = {}
    for model, stage, c, n in TABLE_BLOCKS:
        by_c.setdefault(c, []).append((model, stage, n))
    for c, blocks in sorted(by_c.items()):
        if len(blocks) == 2:
            (m1, s1, n1), (m2, s2, n2) = sorted(blocks, key=lambda b: b[1])
            out.append(dict(channels=c, blocks=[f"{m1} stage {s1}", f"{m2} stage {s2}"],
                            folds=[FOLDS[s1], FOLDS[s2]], difference=n2 - n1))
    return out


def run(check: bool = False, d_step: int = 8) -> Dict[str, object]:
    """Search every reading, with ``d`` on ``16, 16 + d_step, ..., 768``; return the report."""
    if d_step not in (4, 8, 16):  # multiples of the 4 heads on which every width k * c lies
        raise ValueError(f"--d-step must be 4, 8 or 16, got {d_step}")
    t0 = time.perf_counter()
    D_GRID = np.arange(16, 769, d_step, dtype=np.int64)
    outers, layers = list(outer_readings()), list(layer_readings())
    # (outer, block, 3) and (layer, stage, 3) quadratic coefficients in d
    outer_coef = np.array([[quadratic_in_d(lambda d, r=r, c=c: count(outer_shapes(r, c, d)))
                            for _, _, c, _ in TABLE_BLOCKS] for r in outers])
    layer_coef = np.array([[quadratic_in_d(lambda d, r=r, s=s: count(layer_shapes(r, d, s)))
                            for s in range(3)] for r in layers])
    if check:  # the quadratics equal direct counts on the whole grid (every 7th / 97th reading)
        for r, coef in zip(outers[::7], outer_coef[::7]):
            for (_, _, c, _), co in zip(TABLE_BLOCKS, coef):
                assert (evaluate(co[None], D_GRID)[0] == [count(outer_shapes(r, c, int(d))) for d in D_GRID]).all()
        for r, coef in zip(layers[::97], layer_coef[::97]):
            for s, co in enumerate(coef):
                assert (evaluate(co[None], D_GRID)[0] == [count(layer_shapes(r, int(d), s)) for d in D_GRID]).all()
    outer_vals = evaluate(outer_coef.reshape(-1, 3), D_GRID).reshape(len(outers), len(TABLE_BLOCKS), -1)
    layer_vals = evaluate(layer_coef.reshape(-1, 3), D_GRID).reshape(len(layers), 3, -1)
    stages = [stage for _, stage, _, _ in TABLE_BLOCKS]
    targets = np.array([n for *_, n in TABLE_BLOCKS], dtype=np.int64)
    rule_ks = (1.0, 1.5, 2.0)
    rule_idx = np.array([[np.searchsorted(D_GRID, int(k * c)) for _, _, c, _ in TABLE_BLOCKS] for k in rule_ks])

    free_hist = np.zeros(len(TABLE_BLOCKS) + 1, dtype=np.int64)
    free_best: List[Tuple[int, int, int, List[List[int]]]] = []
    consistent_full = 0
    rule_exact = np.zeros(len(TABLE_BLOCKS) + 1, dtype=np.int64)
    closest = (math.inf, None)
    closest_free: Dict[str, Tuple[float, object]] = {"own": (math.inf, None), "shared": (math.inf, None)}
    blocks = np.arange(len(TABLE_BLOCKS))
    for li, lv in enumerate(layer_vals):
        total = outer_vals + lv[stages][None]  # (outer, block, d)
        rel = np.abs(total - targets[None, :, None]) / targets[None, :, None]
        # closest with d free per block ("own"), and with one d per channel width ("shared":
        # blocks 1/3 have 96 channels, 2/4 have 128)
        for mode in ("own", "shared"):
            per_block = rel if mode == "own" else np.stack(
                [rel[:, 0], np.maximum(rel[:, 1], rel[:, 3]), np.maximum(rel[:, 2], rel[:, 4]),
                 np.maximum(rel[:, 1], rel[:, 3]), np.maximum(rel[:, 2], rel[:, 4]), rel[:, 5]], 1)
            best_d = per_block.argmin(-1)  # (outer, block)
            worst = np.take_along_axis(per_block, best_d[..., None], -1)[..., 0].max(-1)
            oi = int(worst.argmin())
            if worst[oi] < closest_free[mode][0]:
                counts = total[oi, blocks, best_d[oi]].tolist()
                closest_free[mode] = (float(worst[oi]), (oi, li, D_GRID[best_d[oi]].tolist(), counts))
        hit = total == targets[None, :, None]
        blocks_hit = hit.any(-1).sum(-1)  # per outer reading
        free_hist += np.bincount(blocks_hit, minlength=len(TABLE_BLOCKS) + 1)
        for oi in np.nonzero(blocks_hit >= 5)[0]:
            ds = [D_GRID[hit[oi, b]].tolist() for b in range(len(TABLE_BLOCKS))]
            free_best.append((int(blocks_hit[oi]), oi, li, ds))
            # equal channels, equal widths: S stage 1 / X stage 0 (96) and S stage 2 / X stage 1 (128)
            if all(ds) and set(ds[1]) & set(ds[3]) and set(ds[2]) & set(ds[4]):
                consistent_full += 1
        for k, idx in enumerate(rule_idx):
            vals = total[:, np.arange(len(TABLE_BLOCKS)), idx]  # (outer, block)
            rule_exact += np.bincount((vals == targets).sum(-1), minlength=len(TABLE_BLOCKS) + 1)
            err = np.abs(vals - targets) / targets
            worst = err.max(-1)
            oi = int(worst.argmin())
            if worst[oi] < closest[0]:
                closest = (float(worst[oi]), (oi, li, rule_ks[k], vals[oi].tolist()))
    free_best.sort(key=lambda t: -t[0])
    n_readings = len(outers) * len(layers)
    report: Dict[str, object] = {
        "readings": n_readings, "outer_readings": len(outers), "layer_readings": len(layers),
        "d_grid": [int(D_GRID[0]), int(D_GRID[-1]), d_step],
        "pairs": pair_analysis(),
        "table_mod_32": [int(n % 32) for n in targets],
        "free": {"blocks_reproduced_histogram": free_hist.tolist(),
                 "all_six": int(free_hist[-1]), "all_six_with_equal_widths_for_equal_channels": consistent_full,
                 "best": [dict(blocks=b, outer=asdict(outers[oi]), layer=asdict(layers[li]), d_per_block=ds)
                          for b, oi, li, ds in free_best[:20]]},
        "rule": {"k": list(rule_ks), "blocks_exact_histogram": rule_exact.tolist()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for mode, (worst, found) in closest_free.items():
        if found is not None:
            oi, li, ds, counts = found
            report["free"][f"closest_{mode}_d"] = dict(worst_relative_error=round(worst, 5), d_per_block=ds,
                                                       outer=asdict(outers[oi]), layer=asdict(layers[li]),
                                                       counts=counts, table=targets.tolist())
    if closest[1] is not None:
        oi, li, k, vals = closest[1]
        report["rule"]["closest"] = dict(worst_relative_error=round(closest[0], 4), k=k, outer=asdict(outers[oi]),
                                         layer=asdict(layers[li]), counts=vals, table=targets.tolist())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the full report to this file")
    parser.add_argument("--check", action="store_true",
                        help="verify the quadratic shortcut against direct counting, on the whole d grid, for a "
                             "sample of the readings")
    parser.add_argument("--d-step", type=int, default=8, choices=(4, 8, 16),
                        help="step of the free Transformer width d (default 8)")
    args = parser.parse_args(argv)
    report = run(check=args.check, d_step=args.d_step)
    print(f"{report['readings']:,} readings ({report['outer_readings']} outer x {report['layer_readings']:,} "
          f"Transformer), d in {report['d_grid'][0]}..{report['d_grid'][1]} step {report['d_grid'][2]}, "
          f"{report['seconds']} s")
    for pair in report["pairs"]:
        print(f"  {pair['channels']} channels: {pair['blocks'][0]} (Fold {pair['folds'][0]}) -> {pair['blocks'][1]} "
              f"(Fold {pair['folds'][1]}): {pair['difference']:+,} parameters")
    free = report["free"]
    print("free d per block: readings reproducing 0..6 of the six blocks:", free["blocks_reproduced_histogram"])
    print(f"  all six: {free['all_six']}; all six with equal d for equal channels: "
          f"{free['all_six_with_equal_widths_for_equal_channels']}")
    for mode, label in (("own", "its own d per block"), ("shared", "one d per channel width")):
        cl = free.get(f"closest_{mode}_d")
        if cl:
            print(f"  closest with {label}: worst relative error {cl['worst_relative_error']:.3%}, "
                  f"d {cl['d_per_block']}: {cl['counts']}\n    {cl['outer']}\n    {cl['layer']}")
    print("table counts mod 32:", report["table_mod_32"], "(with widths that are multiples of 8, every term but "
          "the DP scalars and the K/V convolution's bias is a multiple of 8)")
    rule = report["rule"]
    print(f"d = k*c (k in {rule['k']}): readings x k exact on 0..6 blocks:", rule["blocks_exact_histogram"])
    if "closest" in rule:
        cl = rule["closest"]
        print(f"  closest: worst relative error {cl['worst_relative_error']:.2%} at k={cl['k']}: {cl['counts']} "
              f"vs {cl['table']}")
        print(f"    {cl['outer']}\n    {cl['layer']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
