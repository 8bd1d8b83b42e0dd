"""Shared test helpers: locating ../shared (the release's ground truth) next to the project."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_file(*parts: str) -> Path:
    """Path of a file under ../shared, skipping the test with a clear message when absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"ground-truth file {path} not found: clone the project next to its shared/ folder")
    return path


def load_fixture(name: str):
    """Load ``../shared/fixtures/<name>.pt`` (weights only)."""
    return torch.load(shared_file("fixtures", f"{name}.pt"), weights_only=True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of ``b``."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
