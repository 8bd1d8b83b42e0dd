"""Run timm's own ``tests/test_models.py`` against the models this package registers.

    python benchmarks/timm_model_tests.py [--families lsnet,lolvit,lsknet] [--workdir output/timm-tests]
        [-- PYTEST ARGS]

Fetches the sdist of the installed timm version from the package registry (``pip download
--no-binary``), extracts its test files, adds a ``conftest.py`` that imports ``lsnet`` (which
registers the models) and puts the project's model modules on the test file's
forward-intermediates list, as timm does for its own families. Then runs pytest on the tests
parametrised by the project's model names (``-k``). Tests that need the model hub are skipped
by timm itself when its pretrained files cannot be fetched; no network besides the registry
is used. Prints pytest's summary and exits with its status.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from pathlib import Path


def fetch_tests(workdir: Path) -> Path:
    """The ``tests`` folder of the installed timm version's sdist, downloaded once."""
    import timm

    version = timm.__version__
    root = workdir / f"timm-{version}"
    if not (root / "tests" / "test_models.py").is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", f"timm=={version}", "--no-binary", ":all:",
                        "--no-deps", "-d", str(workdir)], check=True)
        with tarfile.open(workdir / f"timm-{version}.tar.gz") as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(f"timm-{version}/tests/")]
            archive.extractall(workdir, members=members, filter="data")
    return root / "tests"


def prepare(tests: Path, families: list) -> None:
    """Register the project's models for the suite and list them as forward-intermediates families."""
    source = (tests / "test_models.py").read_text()
    marker = "FEAT_INTER_FILTERS = ["
    if marker not in source:
        raise SystemExit(f"{tests / 'test_models.py'} has no {marker!r}: this timm version lays its tests out "
                         f"differently")
    added = "".join(f"'{f}', " for f in families)
    if added not in source:
        source = source.replace(marker, marker + added, 1)
        (tests / "test_models.py").write_text(source)
    conftest = tests / "conftest.py"
    text = conftest.read_text() if conftest.exists() else ""
    if "import lsnet" not in text:
        conftest.write_text(CONFTEST + text)


# Prepended to timm's conftest: register the models; skip the hub's tests when it is unreachable.
CONFTEST = '''import socket

import pytest

import lsnet  # noqa: F401  registers the project's models with timm


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


_OFFLINE = not _hub_reachable()


@pytest.fixture(autouse=True)
def _skip_hub_tests_offline(request):
    if _OFFLINE and "pretrained" in request.node.name:
        pytest.skip("needs the model hub (huggingface.co is unreachable from here)")


'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="lsnet,lolvit,lsknet",
                        help="model modules (and name prefixes) of the project to test (default lsnet,lolvit,lsknet)")
    parser.add_argument("--workdir", default="output/timm-tests", help="where the sdist is unpacked")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    tests = fetch_tests(Path(args.workdir).resolve())
    prepare(tests, families)
    selector = " or ".join(families)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests / "test_models.py"),
           "-k", selector, *args.pytest_args]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=tests.parent).returncode


if __name__ == "__main__":
    raise SystemExit(main())
