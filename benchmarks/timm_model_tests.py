"""Run timm's own ``tests/test_models.py`` against the models this package registers.

    python benchmarks/timm_model_tests.py [--families lsnet,lolvit,lsknet] [--models PATTERNS] [--no-hub]
        [--workdir output/timm-tests] [-- PYTEST ARGS]

Fetches the sdist of the installed timm version from the package registry (``pip download
--no-binary``) into the work folder (by default ``output/timm-tests`` of this repository, which
git ignores), extracts its test files, and rewrites two of them from the sdist's copies: a
``conftest.py`` that first imports ``lsnet`` (which registers the models), and a ``test_models.py``
that lists the project's model modules among the forward-intermediates families, as timm does
for its own. Then runs pytest on the tests parametrised by the project's model names (``-k``),
with this repository's ``src`` first on the path, so that a clone tests its own code.

``--models`` keeps only the tests of the models matching the comma-separated name patterns
(fnmatch). Tests that need the model hub are skipped when huggingface.co is unreachable, and
always with ``--no-hub``; no network besides the registry is used then. Prints pytest's summary
and exits with its status, or with 3 when the sdist cannot be downloaded.
"""

import argparse
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = ROOT / "output" / "timm-tests"  # /output/ is in .gitignore
DEFAULT_FAMILIES = "lsnet,lolvit,lsknet"
DOWNLOAD_FAILED = 3  # exit status when the registry does not give the sdist

# Read by the conftest below (set by --models / --no-hub).
MODELS_ENV = "LSNET_TIMM_MODELS"
NO_HUB_ENV = "LSNET_TIMM_NO_HUB"


class DownloadError(RuntimeError):
    """The sdist of the installed timm version could not be fetched from the package registry."""


def _sdist(workdir: Path) -> Path:
    """The sdist of the installed timm version in ``workdir``, downloaded the first time."""
    import timm

    version = timm.__version__
    archive = workdir / f"timm-{version}.tar.gz"
    if not archive.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", f"timm=={version}", "--no-binary",
                               ":all:", "--no-deps", "-d", str(workdir)], capture_output=True, text=True)
        if proc.returncode != 0 or not archive.is_file():
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DownloadError(f"pip download timm=={version} --no-binary :all: failed (exit {proc.returncode}): "
                                + " | ".join(detail))
    return archive


def fetch_tests(workdir: Path) -> Path:
    """The ``tests`` folder of the installed timm version's sdist, extracted into ``workdir``."""
    archive = _sdist(workdir)
    top = archive.name.removesuffix(".tar.gz")
    tests = workdir / top / "tests"
    if not (tests / "test_models.py").is_file():
        with tarfile.open(archive) as sdist:
            members = [m for m in sdist.getmembers() if m.name.startswith(f"{top}/tests/")]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
            sdist.extractall(workdir, members=members, **safe)
    return tests


def _original(tests: Path, name: str) -> str:
    """timm's own text of ``tests/<name>``, read from the sdist (the extracted copy is rewritten)."""
    top = tests.parent.name
    with tarfile.open(tests.parent.parent / f"{top}.tar.gz") as sdist:
        member = sdist.extractfile(f"{top}/tests/{name}")
        return member.read().decode("utf-8")


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # another run may be reading it


def prepare(tests: Path, families: list) -> None:
    """Register the project's models for the suite and list them as forward-intermediates families
    (written from timm's files each time, so that any list of families can follow another)."""
    source = _original(tests, "test_models.py")
    marker = "FEAT_INTER_FILTERS = ["
    if marker not in source:
        raise SystemExit(f"{tests / 'test_models.py'} has no {marker!r}: this timm version lays its tests out "
                         f"differently")
    _write(tests / "test_models.py", source.replace(marker, marker + "".join(f"'{f}', " for f in families), 1))
    _write(tests / "conftest.py", CONFTEST + _original(tests, "conftest.py"))


# Put before timm's conftest: register the models; skip the hub's tests when it is unreachable
# (or not wanted); keep only the models asked for.
CONFTEST = '''import fnmatch
import os
import socket

import pytest

import lsnet  # noqa: F401  registers the project's models with timm

_NO_HUB = os.environ.get("LSNET_TIMM_NO_HUB") == "1"
_MODELS = [p for p in os.environ.get("LSNET_TIMM_MODELS", "").split(",") if p]


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


_OFFLINE = _NO_HUB or not _hub_reachable()


@pytest.fixture(autouse=True)
def _skip_hub_tests_offline(request):
    if _OFFLINE and "pretrained" in request.node.name:
        pytest.skip("needs the model hub (not used: --no-hub)" if _NO_HUB
                    else "needs the model hub (huggingface.co is unreachable from here)")


def pytest_collection_modifyitems(config, items):
    if not _MODELS:
        return
    keep, drop = [], []
    for item in items:
        name = getattr(getattr(item, "callspec", None), "params", {}).get("model_name")
        chosen = isinstance(name, str) and any(fnmatch.fnmatchcase(name, p) for p in _MODELS)
        (keep if chosen else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=DEFAULT_FAMILIES,
                        help=f"model modules (and name prefixes) of the project to test (default {DEFAULT_FAMILIES})")
    parser.add_argument("--models", default="",
                        help="comma-separated model name patterns (fnmatch) to keep, e.g. 'lsnet_t,lsnet_t_no_*' "
                             "(default: every model of the families)")
    parser.add_argument("--no-hub", action="store_true", help="skip the tests that need the model hub")
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR),
                        help="where the sdist is unpacked (default: output/timm-tests of this repository)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    try:
        tests = fetch_tests(Path(args.workdir).resolve())
    except DownloadError as err:
        print(f"timm_model_tests: {err}", file=sys.stderr)
        return DOWNLOAD_FAILED
    prepare(tests, families)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    env[MODELS_ENV] = args.models
    env[NO_HUB_ENV] = "1" if args.no_hub else ""
    selector = " or ".join(families)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests / "test_models.py"),
           "-k", selector, *args.pytest_args]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=tests.parent, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
