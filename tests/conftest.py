"""Shared test fixtures: the real public data committed in tests/data; and the session's smoke
reproduction, started in the background as soon as a collected test reads it."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiling is most of the suite's time, and the test models are tiny: at XLA's backend
# optimisation level 0 they compile about 40 % faster and run about as fast (the smoke
# reproduction too: 75 s against 79 s). Subprocesses inherit the flag (tests add theirs after
# it). RLR_TEST_XLA_OPT=1 keeps XLA's default level, the one rlr runs at.
XLA_TEST_FLAG = "--xla_backend_optimization_level=0"
flags = os.environ.get("XLA_FLAGS", "")
if os.environ.get("RLR_TEST_XLA_OPT") != "1" and XLA_TEST_FLAG not in flags:
    flags = f"{flags} {XLA_TEST_FLAG}".strip()
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
