"""Every notebook in notebooks/ runs top to bottom without a cell error.

Each is executed with nbclient on the `python3` kernel, in its own folder (as
Jupyter would), on a small slice: `KERASBERT_NOTEBOOK_EXAMPLES` is set small
(override it in the environment) and `KERASBERT_DATA` points at the test data.
Committed notebooks must have their outputs cleared.
"""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# Small enough for CI: with batch 32 that is 2 steps per epoch.
CI_EXAMPLES = os.environ.get("KERASBERT_NOTEBOOK_EXAMPLES", "64")
CELL_TIMEOUT_S = 1800  # the first XLA compile of MiniLM is slow on a loaded 2-core machine


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_outputs_are_cleared(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, data_dir, monkeypatch):
    # The kernel is a child process: it inherits this environment.
    monkeypatch.setenv("KERASBERT_NOTEBOOK_EXAMPLES", CI_EXAMPLES)
    monkeypatch.setenv("KERASBERT_DATA", str(data_dir))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name}: a cell failed:\n{error}", pytrace=False)
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {errors}"
