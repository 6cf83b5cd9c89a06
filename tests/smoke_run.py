"""One `rlr reproduce --preset smoke` run per test session, shared by the tests that read it.

It runs from a plain (non-editable) install of rlr in a temporary folder, started from another
temporary folder, so it also shows that the shipped configs travel with the package and that
nothing reads the checkout. It starts in the background as soon as the session has collected
a test that reads it (tests/conftest.py), so it overlaps the rest of the suite. Under
pytest-xdist the workers of one run share the install and the results through file locks:
the first worker starts the run, every reader waits for its exit code.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
# Runs the reproduction, then writes its exit code beside the log (what readers wait for).
RUN = (
    "import pathlib, sys, rlr, rlr.cli\n"
    "print('rlr imported from', rlr.__file__, flush=True)\n"
    "code = 1\n"
    "try:\n"
    "    code = rlr.cli.main(sys.argv[2:])\n"
    "finally:\n"
    "    pathlib.Path(sys.argv[1]).write_text(str(code))\n"
    "sys.exit(code)\n"
)
TIMEOUT_S = 1800


def _session_root() -> pathlib.Path:
    """The folder every process of this test run shares, named by the run's id (which
    tests/conftest.py sets in the controlling process and pytest-xdist hands its workers)."""
    run_id = os.environ["PYTEST_XDIST_TESTRUNUID"]
    return pathlib.Path(tempfile.gettempdir()) / f"rlr_session_{run_id}"


@contextlib.contextmanager
def _locked(name: str):
    root = _session_root()
    root.mkdir(exist_ok=True)  # every use of the folder starts by taking a lock in it
    with open(root / f"{name}.lock", "w") as lock:
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


def _work() -> pathlib.Path:
    return _session_root() / "smoke"


def start_smoke_run() -> None:
    """Starts the smoke reproduction in the background, unless this run already did."""
    site = installed_rlr()
    work = _work()
    with _locked("smoke"):
        if (work / "started").exists():
            return
        work.mkdir(exist_ok=True)
        (work / "started").write_text(str(time.time()))
        log = open(work / "log.txt", "w")  # noqa: SIM115 - the child writes it until it exits
        child = subprocess.Popen(
            [sys.executable, "-c", RUN, str(work / "exit_code")]
            + ["reproduce", "--preset", "smoke", "--out", str(work / "reproduce")],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(site)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        (work / "pid").write_text(str(child.pid))


def smoke_results() -> pathlib.Path:
    """Waits for the session's smoke reproduction (starting it if nobody has) and returns its
    output directory; log.txt, the command's output, sits beside it."""
    start_smoke_run()
    work = _work()
    deadline = time.time() + TIMEOUT_S
    while not (work / "exit_code").exists():
        if time.time() > deadline:
            raise TimeoutError(f"the smoke reproduction ran over {TIMEOUT_S} s; see {work}")
        if not _alive(int((work / "pid").read_text())) and not (work / "exit_code").exists():
            log = (work / "log.txt").read_text()[-4000:]
            raise RuntimeError(f"the smoke reproduction died without an exit code:\n{log}")
        time.sleep(0.5)
    code = (work / "exit_code").read_text().strip()
    if code != "0":
        log = (work / "log.txt").read_text()[-4000:]
        raise RuntimeError(f"the smoke reproduction failed (exit {code}):\n{log}")
    return work / "reproduce"


def remove_session_root() -> None:
    """Stops a smoke run still going and removes the session's folder (the installed copy of
    rlr and the reproduction): called once, by the process that ends the test session."""
    root = _session_root()
    if not root.exists():
        return  # no test read the smoke run
    pid_file = root / "smoke" / "pid"
    if pid_file.exists() and _alive(pid := int(pid_file.read_text())):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, 15)
    shutil.rmtree(root, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
