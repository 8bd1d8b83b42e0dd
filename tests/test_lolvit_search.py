"""tools/lolvit_block_search.py (issue 20): its parameter shapes are those of the real modules,
and its quadratic shortcut is exact."""

import dataclasses
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

from lsnet.models.lolvit import LOLVIT_CFGS, LOLViTBlock

_PATH = Path(__file__).resolve().parents[1] / "tools" / "lolvit_block_search.py"
_spec = importlib.util.spec_from_file_location("lolvit_block_search", _PATH)
search = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = search  # dataclasses look their module up there
_spec.loader.exec_module(search)

# the reading lsnet.models.lolvit implements (its widths are fitted, given explicitly below)
OURS_OUTER = search.OuterReading(local="none", up_bn=True, fusion="feature", fusion_width="c")
OURS_LAYER = search.LayerReading(final_norm=False, qt_bias=False, head_dim=0, kv_scope="head", kv_bias=True,
                                 dp_per_head=False, proj="bias", mlp_ratio=2, depths=(1, 1, 1), cache=True)


def _shapes(module):
    return Counter(tuple(p.shape) for p in module.parameters())


@pytest.mark.parametrize("model,stage,c,n", search.TABLE_BLOCKS)
def test_shapes_match_the_model(model, stage, c, n):
    d, m, e = LOLVIT_CFGS[model]["vit"][stage]
    block = LOLViTBlock(c, d, m, e, depth=1, num_heads=search.HEADS, fold=search.FOLDS[stage])
    shapes = search.outer_shapes(OURS_OUTER, c, d, fusion_width=e) + search.layer_shapes(OURS_LAYER, d, stage, m)
    assert Counter(shapes) == _shapes(block)
    assert search.count(shapes) == n  # the fitted widths reproduce the table


@pytest.mark.parametrize("cache", [True, False])
def test_shapes_match_deeper_blocks(cache):
    reading = dataclasses.replace(OURS_LAYER, depths=(3, 3, 3), cache=cache)
    block = LOLViTBlock(64, 96, 160, 48, depth=3, num_heads=4, fold=2, cache=cache)
    shapes = search.outer_shapes(OURS_OUTER, 64, 96, fusion_width=48) + search.layer_shapes(reading, 96, 1, 160)
    assert Counter(shapes) == _shapes(block)


def test_search_report():
    report = search.run(check=True)  # check=True: the quadratics equal direct counts on the grid
    assert report["readings"] == report["outer_readings"] * report["layer_readings"] > 100_000
    assert [p["difference"] for p in report["pairs"]] == [25_760, 4_096]
    assert report["table_mod_32"] == [23] * 6
    hist = report["free"]["blocks_reproduced_histogram"]
    assert sum(hist) == report["readings"] and report["free"]["all_six"] == hist[-1]
    # what the model docstring and the README say of the search
    assert report["readings"] == 752_640 and hist[2:] == [0] * 5
    assert report["rule"]["blocks_exact_histogram"][1:] == [0] * 6
    closest = report["rule"]["closest"]
    assert closest["worst_relative_error"] > 0 and len(closest["counts"]) == 6
    own, shared = report["free"]["closest_own_d"], report["free"]["closest_shared_d"]
    # sharing one d between equal-channel blocks can only be further from the table
    assert 0 < own["worst_relative_error"] <= shared["worst_relative_error"]
    assert shared["d_per_block"][1] == shared["d_per_block"][3] and shared["d_per_block"][2] == shared["d_per_block"][4]
    errors = [abs(n - t) / t for n, t in zip(own["counts"], own["table"])]
    assert max(errors) == pytest.approx(own["worst_relative_error"], abs=1e-5)


@pytest.mark.parametrize("step", [6, 12])
def test_bad_step(step):
    """Steps that miss a multiple of the heads (6) or a width of the d = k*c rule (12: 1.5 x 96)."""
    with pytest.raises(ValueError, match="--d-step"):
        search.run(d_step=step)
