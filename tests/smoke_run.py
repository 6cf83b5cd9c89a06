"""One `rlr reproduce --preset smoke` run per test session, shared by the tests that read it.

It runs from a plain (non-editable) install of rlr in a temporary folder, started from another
temporary folder, so it also shows that the shipped configs travel with the package and that
nothing reads the checkout. Under pytest-xdist the workers of one run share the install and
the results: the first worker to ask builds them under a file lock, the others wait and read.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
RUN = (
    "import sys, rlr, rlr.cli\n"
    "print('rlr imported from', rlr.__file__, flush=True)\n"
    "sys.exit(rlr.cli.main(sys.argv[1:]))\n"
)


@functools.cache
def _session_root() -> pathlib.Path:
    """A folder shared by every worker of this test run (one per process without xdist)."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        return pathlib.Path(tempfile.mkdtemp(prefix="rlr_session_"))
    root = pathlib.Path(tempfile.gettempdir()) / f"rlr_session_{run_id}"
    root.mkdir(exist_ok=True)
    return root


@contextlib.contextmanager
def _locked(name: str):
    with open(_session_root() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def installed_rlr() -> pathlib.Path:
    """A folder holding rlr installed from a copy of this checkout (`pip install --target`)."""
    target = _session_root() / "installed" / "site"
    with _locked("installed"):
        if not (target / "rlr" / "__init__.py").is_file():
            source = target.parent / "source"
            shutil.rmtree(target.parent, ignore_errors=True)
            source.mkdir(parents=True)
            for name in ("setup.cfg", "pyproject.toml", "README.md"):
                shutil.copy2(REPO / name, source / name)
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(REPO / "rlr", source / "rlr", ignore=ignore)
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
                + ["--target", str(target), str(source)],
                check=True,
                capture_output=True,
                text=True,
            )
    return target


def smoke_results() -> pathlib.Path:
    """Runs the smoke preset once per test run and returns its output directory (log.txt, the
    command's output, sits beside it)."""
    site = installed_rlr()
    work = _session_root() / "smoke"
    out = work / "reproduce"
    with _locked("smoke"):
        if (out / "results.json").is_file():
            return out
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", RUN, "reproduce", "--preset", "smoke", "--out", str(out)],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        (work / "log.txt").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            log = (proc.stdout + proc.stderr)[-4000:]
            raise RuntimeError(f"the smoke reproduction failed:\n{log}")
    return out
