"""One `rlr reproduce --preset smoke` run per test session, shared by the tests that read it.

It runs from a plain (non-editable) install of rlr in a temporary folder, started from another
temporary folder, so it also shows that the shipped configs travel with the package and that
nothing reads the checkout.
"""

from __future__ import annotations

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
def installed_rlr() -> pathlib.Path:
    """A folder holding rlr installed from a copy of this checkout (`pip install --target`)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="rlr_installed_"))
    source = root / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "rlr", source / "rlr", ignore=shutil.ignore_patterns("__pycache__"))
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


@functools.cache
def smoke_results() -> pathlib.Path:
    """Runs the smoke preset once and returns its output directory (with log.txt, the output)."""
    site = installed_rlr()
    work = pathlib.Path(tempfile.mkdtemp(prefix="rlr_smoke_"))
    out = work / "reproduce"
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", RUN, "reproduce", "--preset", "smoke", "--out", str(out)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    (work / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"the smoke reproduction failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return out
