"""What a new user meets first: the README's Quick start runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _quick_start_blocks() -> list:
    """The ```python blocks under "## Quick start", in order."""
    text = README.read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "no python block under ## Quick start"
    return blocks


def _quick_start() -> str:
    return _quick_start_blocks()[0]


def test_readme_quick_start_runs_as_written(tmp_path, monkeypatch):
    """Random weights, no download: the block runs in an empty folder, and what it shows holds."""
    import torch

    code = _quick_start()
    assert "lsnet_t.pth" not in code  # a release file a new user does not have belongs in another block
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__quick_start__"}
    exec(compile(code, str(README) + ":Quick start", "exec"), namespace)
    assert namespace["logits"].shape == (1, 10)
    assert [f.shape[-1] for f in namespace["feats"]] == [80, 40, 20, 10]  # strides 8, 16, 32, 64 of 640
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = namespace["model"](x)
        torch.testing.assert_close(namespace["fast"](x), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(namespace["restored"].eval()(x), ref)
    assert (tmp_path / "my_lsnet_t.safetensors").is_file()


def test_readme_release_file_block_loads_a_file_of_the_release_format(tmp_path, monkeypatch):
    """The block after it, with a file of the release's layout standing in for the download."""
    import timm
    import torch

    import lsnet  # noqa: F401

    blocks = _quick_start_blocks()
    assert len(blocks) >= 2 and "lsnet_t.pth" in blocks[1]
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    release = timm.create_model("lsnet_t").eval()
    torch.save({"model": release.state_dict()}, tmp_path / "lsnet_t.pth")  # the release's {'model': ...} layout
    namespace = {"__name__": "__quick_start__"}
    exec(compile(_quick_start() + blocks[1], str(README) + ":Quick start", "exec"), namespace)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(namespace["model"].eval()(x), release(x))


# ----- the README is for users; the measurements live in BENCHMARKS.md --------------------------

BENCHMARKS = README.parent / "BENCHMARKS.md"


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_links_to_benchmarks_sections_that_exist():
    anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", BENCHMARKS.read_text(), re.M)}
    links = re.findall(r"BENCHMARKS\.md#([\w\-]+)", README.read_text())
    assert links and not [a for a in links if a not in anchors]


def test_every_picture_is_shown_somewhere():
    shown = README.read_text() + BENCHMARKS.read_text()
    pictures = sorted(p.name for p in (README.parent / "docs").glob("*.png"))
    assert pictures and not [p for p in pictures if f"docs/{p}" not in shown]


def test_readme_says_what_users_need_and_keeps_no_diary():
    text = README.read_text()
    assert "pip install -e . && lsnet train --output runs/digits" in text  # the main job
    assert 'pip install -e ".[dev]" && python -m pytest -q' in text  # the tests
    flat = " ".join(text.split())
    assert "Seeded runs repeat exactly on one machine and PyTorch build, but differ across machines and PyTorch " \
           "builds" in flat
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in text
    # dated runs, commit hashes and host calibrations belong to BENCHMARKS.md
    assert not re.findall(r"\b20\d\d-\d\d-\d\d\b", text)
    assert not re.findall(r"commit [0-9a-f]{7}\b", text) and "calibration" not in text
