"""Shared test fixtures: the real public data committed in tests/data; and the session's smoke
reproduction, started in the background as soon as a collected test reads it."""

from __future__ import annotations

import os
import pathlib
import uuid

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiling is most of the suite's time, and the test models are tiny. Three XLA settings
# make their compiles cheaper and leave them about as fast to run: backend optimisation level
# 0 (about 40 % less compile time; the smoke reproduction 75 s against 79 s), the classic
# fusion emitters instead of the MLIR ones (about 40 % less backend compile time again on the
# PPO update of tests/ppo_fixtures.py) and one LLVM module instead of a split for parallel
# codegen (the suite's workers already use every core). Subprocesses inherit the flags (tests
# add theirs after them). RLR_TEST_XLA_OPT=1 keeps XLA's defaults, the ones rlr runs at.
XLA_TEST_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_parallel_codegen_split_count=1",
)
flags = os.environ.get("XLA_FLAGS", "")
if os.environ.get("RLR_TEST_XLA_OPT") != "1":
    for flag in XLA_TEST_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
os.environ["XLA_FLAGS"] = flags  # set even when empty: subprocess tests append to it

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
REAL_DATA = REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def real_data() -> pathlib.Path:
    """tests/data: GSM8K test split, GSM8K model solutions and MATH500 (see its README)."""
    return REAL_DATA


# Tests that read the session's smoke reproduction (tests/smoke_run.py).
SMOKE_READERS = (
    "tests/test_reproduce.py::",
    "tests/test_notebooks.py::test_notebook_runs[reproduction",
)


def pytest_configure(config: pytest.Config) -> None:
    """The controlling process picks the run's id and hands it to pytest-xdist's workers, so
    that the folder they share (tests/smoke_run.py) is one it can find and remove at the end."""
    if hasattr(config, "workerinput"):
        return  # a worker: PYTEST_XDIST_TESTRUNUID holds the controller's id
    run_id = getattr(config.option, "testrunuid", None) or uuid.uuid4().hex
    if hasattr(config.option, "testrunuid"):  # pytest-xdist's --testrunuid
        config.option.testrunuid = run_id
    os.environ["PYTEST_XDIST_TESTRUNUID"] = run_id


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.nodeid.startswith(SMOKE_READERS) for item in session.items):
        from smoke_run import start_smoke_run

        start_smoke_run()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controlling process (not an xdist worker) removes the session's shared folder."""
    if hasattr(session.config, "workerinput"):
        return
    import smoke_run

    smoke_run.remove_session_root()
