"""``lsnet robustness`` and :mod:`lsnet.studies.robustness`: corruption-error arithmetic on
hand-computed answers, the ImageNet-A/-R class lists, and the whole command on a tiny set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tiny_models  # noqa: F401 - registers lsnet_test
import torch
from PIL import Image
from torch import nn

from lsnet.cli.main import main
from lsnet.studies import robustness as rb


def test_mce_on_a_hand_computed_example():
    errors = {"a": [0.1, 0.2, 0.3], "b": [0.5, 0.5, 0.5]}
    ce, mce = rb.mean_corruption_error(errors, reference={"a": 0.4, "b": 0.25})
    # a: mean 0.2 / 0.4 = 0.5; b: 0.5 / 0.25 = 2.0; mCE = 100 * (0.5 + 2.0) / 2
    assert ce == pytest.approx({"a": 0.5, "b": 2.0})
    assert mce == pytest.approx(125.0)


def test_mce_of_alexnet_itself_is_100():
    errors = {c: [e] * 5 for c, e in rb.ALEXNET_ERRORS.items()}
    ce, mce = rb.mean_corruption_error(errors)
    assert len(ce) == 15 and mce == pytest.approx(100.0)
    assert rb.ALEXNET_ERRORS["gaussian_noise"] == 0.886428 and rb.ALEXNET_ERRORS["jpeg_compression"] == 0.6065
    assert rb.CORRUPTIONS[0] == "gaussian_noise" and rb.CORRUPTIONS[-1] == "jpeg_compression"


def test_relative_mce_on_a_hand_computed_example():
    errors = {"a": [0.3, 0.5], "b": [0.2, 0.2]}
    base = {"a": [0.6, 0.8], "b": [0.45, 0.55]}
    rel, rmce = rb.relative_mean_corruption_error(errors, 0.1, base, 0.2)
    # a: (0.4 - 0.1) / (0.7 - 0.2) = 0.6; b: (0.2 - 0.1) / (0.5 - 0.2) = 1/3
    assert rel == pytest.approx({"a": 0.6, "b": 1 / 3})
    assert rmce == pytest.approx(100 * (0.6 + 1 / 3) / 2)
    # the baseline against itself: 100
    assert rb.relative_mean_corruption_error(base, 0.2, base, 0.2)[1] == pytest.approx(100.0)
    # a corruption the baseline loses nothing on has no relative CE and is left out
    rel, rmce = rb.relative_mean_corruption_error(errors, 0.1, {"a": [0.6, 0.8], "b": [0.1, 0.2]}, 0.2)
    assert math.isnan(rel["b"]) and rmce == pytest.approx(60.0)


def test_imagenet_a_and_r_wnids_are_200_of_the_sorted_1000():
    wnids = rb.imagenet_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids) and len(set(wnids)) == 1000
    position = {w: i for i, w in enumerate(wnids)}
    for name, first in (("a", [6, 11, 13, 15, 17]), ("r", [1, 2, 4, 6, 8])):
        sub = rb.imagenet_subset_wnids(name)
        assert len(sub) == 200 and len(set(sub)) == 200 and sub == sorted(sub)
        assert set(sub) <= set(wnids)
        # the class indices the datasets' own evaluation code lists first
        assert [position[w] for w in sub[:5]] == first
    assert rb.imagenet_subset_wnids("r")[-1] == "n12267677" and position["n12267677"] == 988
    assert rb.imagenet_subset_wnids("a")[-1] == wnids[988]


class _FixedLogits(nn.Module):
    """Logits that prefer class ``top`` overall and, among the given ``inner`` classes, class ``best``."""

    def __init__(self, top: int, best: int):
        super().__init__()
        self.top, self.best = top, best

    def forward(self, x):
        out = torch.zeros(x.shape[0], 1000)
        out[:, self.top] = 10.0
        out[:, self.best] = 5.0
        return out


def test_imagenet_a_restricts_the_logits_to_its_200_classes(tmp_path):
    wnids = rb.imagenet_wnids()
    sub = rb.imagenet_subset_wnids("a")
    target = sub[3]
    (tmp_path / target).mkdir()
    Image.new("RGB", (40, 40), (90, 120, 30)).save(tmp_path / target / "x.jpg")
    outside = next(i for i, w in enumerate(wnids) if w not in sub)
    model = _FixedLogits(top=outside, best=wnids.index(target))
    tf = rb.resize_crop_transform(32, (0.5,) * 3, (0.5,) * 3)
    err, n = rb.evaluate_imagenet_variant(model, tmp_path, "a", tf)
    assert (err, n) == (0.0, 1)  # the overall winner is not an ImageNet-A class
    err, _ = rb.evaluate_imagenet_variant(model, tmp_path, "sketch", tf)
    assert err == 1.0  # over the 1000 classes it is


def _tiny_folder(root, size=32, per_class=2):
    rng = np.random.default_rng(0)
    for c, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        folder = root / "val" / c
        folder.mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.normal(colour, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i}.png")


def _checkpoint(path, seed):
    import timm

    from lsnet import save_checkpoint

    torch.manual_seed(seed)
    model = timm.create_model("lsnet_test", num_classes=2)
    save_checkpoint(model, path, extra={"arch": "lsnet_test", "class_names": ["cat", "dog"],
                                        "preprocessing": {"img_size": 64, "crop_pct": 0.875,
                                                          "interpolation": "bicubic"}})
    return path


def test_cli_two_checkpoints_table_json_plot_and_cache(tmp_path, capsys):
    pytest.importorskip("imagecorruptions")
    data = tmp_path / "data"
    _tiny_folder(data)
    a, b = _checkpoint(tmp_path / "a.pth", 0), _checkpoint(tmp_path / "b.pth", 1)
    argv = ["robustness", "--data", str(data), "--checkpoint", str(a), "--checkpoint", str(b),
            "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| corruption | a | b |"
    for c in rb.CORRUPTIONS:
        assert any(r.startswith(f"| {c} |") for r in rows)
    assert any(r.startswith("| mCE (AlexNet = 100) |") for r in rows)
    assert any(r.startswith("| mCE vs a | 100.0 |") for r in rows)
    # the ImageNet-C layout on disk: 15 x 5 folders of class folders, and the clean images
    cache = tmp_path / "cache"
    assert sorted(p.name for p in (cache / "frost").iterdir()) == ["1", "2", "3", "4", "5"]
    assert len(list((cache / "glass_blur" / "5" / "dog").glob("*.png"))) == 2
    assert len(list((cache / "clean").rglob("*.png"))) == 4
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["baseline"] == "a" and [m["label"] for m in report["models"]] == ["a", "b"]
    ma, mb = report["models"]
    assert len(ma["errors"]) == 15 and all(len(v) == 5 for v in ma["errors"].values())
    assert all(0.0 <= e <= 1.0 for v in mb["errors"].values() for e in v)
    _, mce = rb.mean_corruption_error(mb["errors"])
    assert mb["mce"] == pytest.approx(mce) and ma["mce_vs_baseline"] == pytest.approx(100.0)
    assert ma["fused"] is True and ma["img_size"] == 64
    with Image.open(tmp_path / "r.png") as im:
        assert im.size[0] > 500
    # a second run reuses the cache: same numbers
    before = {p: p.stat().st_mtime_ns for p in (cache / "fog" / "3").rglob("*.png")}
    assert main(argv[:-4]) == 0
    assert {p: p.stat().st_mtime_ns for p in (cache / "fog" / "3").rglob("*.png")} == before
    assert capsys.readouterr().out.splitlines()[2:] == out.splitlines()[2:]


def _fake_imagenet_c(root, leave_out):
    for c in rb.CORRUPTIONS:
        if c == leave_out:
            continue
        for s in rb.SEVERITIES:
            (root / c / str(s) / "n01440764").mkdir(parents=True)


@pytest.mark.parametrize("argv,message", [
    (["--imagenet-c", "{root}"], "corruption folder frost/ is missing"),
    (["--corruptions", "fog,smoke"], "unknown smoke"),
    (["--severities", "0,1"], "--severities must be in 1-5"),
    (["--baseline", "3"], "--baseline '3' is neither"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    root = tmp_path / "c"
    _fake_imagenet_c(root, "frost")
    argv = [a.replace("{root}", str(root)) for a in argv]
    assert main(["robustness", "--model", "lsnet_test", "--model", "lsnet_test", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("lsnet robustness: error:")]) == 1
    assert message in err[-1] and "Traceback" not in "\n".join(err)
