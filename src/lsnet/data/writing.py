"""What the dataset generators and converters share when they write files (the shapes and
aerial generators, the DOTA splitter): the output folder check, atomic text files, and a
process pool for per-image work."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from pathlib import Path

from ..errors import ConfigError

__all__ = ["output_folder", "worker_pool", "write_text_atomic"]


def output_folder(root) -> Path:
    """``root`` as a Path, with a clear error when it exists but is not a folder."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file, not a folder: choose a folder to write the dataset into")
    return root


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so that a reader (or an
    interrupted run) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def worker_pool(workers: int, jobs: int, auto_min_jobs: int = 2):
    """A process pool of ``workers`` processes for ``jobs`` independent jobs, or None when one
    process will do. ``workers <= 0`` means one per CPU (at most one per job), and only when
    there are at least ``auto_min_jobs`` jobs to repay starting them."""
    if workers <= 0:
        workers = min(os.cpu_count() or 1, jobs) if jobs >= auto_min_jobs else 1
    workers = min(workers, jobs)
    if workers <= 1:
        yield None
        return
    # fork starts in milliseconds; spawn (other platforms) re-imports torch in every worker
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield pool
