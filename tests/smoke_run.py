"""One `rlr reproduce --preset smoke` run per test session, shared by the tests that read it."""

from __future__ import annotations

import functools
import pathlib
import tempfile


@functools.cache
def smoke_results() -> pathlib.Path:
    """Runs the smoke preset once (in a temporary folder) and returns its output directory."""
    from rlr.reproduce import Reproduction

    out = pathlib.Path(tempfile.mkdtemp(prefix="rlr_smoke_")) / "reproduce"
    Reproduction(out, preset="smoke").run()
    return out
