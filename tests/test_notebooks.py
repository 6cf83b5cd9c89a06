"""Executes every notebook in notebooks/ with nbclient; a failing cell fails the test.

The kernel is the interpreter running the tests (a kernelspec written to a temporary
JUPYTER_PATH), with rlr importable. A notebook that needs inputs gets them from a setup
callback in NOTEBOOK_SETUP, keyed by file name, which prepares the notebook's working folder.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from collections.abc import Callable

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def _link_smoke_results(work_dir: pathlib.Path) -> None:
    from smoke_run import smoke_results

    (work_dir / "runs").mkdir()
    (work_dir / "runs" / "reproduce").symlink_to(smoke_results())


# file name -> callback(work_dir) that prepares what the notebook reads, run before it starts.
NOTEBOOK_SETUP: dict[str, Callable[[pathlib.Path], None]] = {
    "reproduction.ipynb": _link_smoke_results,
}


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A python3 kernelspec pointing at sys.executable, and an environment that finds rlr."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (rlr tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {
        "JUPYTER_PATH": str(jupyter_path),
        "PYTHONPATH": python_path,
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
        "MPLBACKEND": "Agg",
    }


def test_notebooks_exist():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb file"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env, tmp_path, monkeypatch):
    for key, value in kernel_env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them before committing"
    )
    if path.name in NOTEBOOK_SETUP:
        NOTEBOOK_SETUP[path.name](tmp_path)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"
    ]
    assert not errors
