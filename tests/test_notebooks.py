"""The teaching notebooks: committed with the outputs of a full run, and each runs top to bottom in fast mode.

Fast mode (YOLO_NB_FAST=1) makes the notebooks generate a tiny dataset and train for 2 epochs under
YOLO_NB_WORKDIR (a pytest temporary folder here), so nothing is written into the repository.
"""
import os
from pathlib import Path

import nbclient  # required (jupyterlab brings both): a missing one must fail the tests, not skip them
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_data_and_augmentations.ipynb", "02_anchors_and_label_assignment.ipynb", "03_model_and_loss.ipynb",
            "04_training_and_results.ipynb", "05_multitask.ipynb", "06_which_layers_to_share.ipynb",
            "07_head_search.ipynb"]
CELL_TIMEOUT_S = 300  # one cell; fast mode needs seconds, but a loaded CI machine can be slow


def execute(nb, workdir):
    """Run every cell in a fresh python3 kernel started in the repository root, in fast mode; raises
    nbclient's CellExecutionError (naming the cell and the error) when a cell fails."""
    env = {"YOLO_NB_FAST": "1", "YOLO_NB_WORKDIR": str(workdir),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}  # inline figures even where CI sets Agg
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                         resources={"metadata": {"path": str(ROOT)}})
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all notebooks: the tiny dataset is generated once and shared."""
    return tmp_path_factory.mktemp("notebooks")


def test_all_notebooks_present():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_outputs_of_one_run_top_to_bottom(path):
    """A reader sees every figure on the repository page: each notebook is committed executed (notebooks/execute.py),
    in one kernel from the first cell to the last, without an error, and small enough to open."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path}: execution counts {counts} are not 1..{len(counts)} in order; re-run python notebooks/execute.py "
        f"{path.relative_to(ROOT)}")
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path}: committed with an error output: {errors[0].ename}: {errors[0].evalue}"
    figures = sum("image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", []))
    assert figures >= 3, f"{path}: only {figures} figures in the committed outputs"
    assert path.stat().st_size < 2_000_000, f"{path} is {path.stat().st_size / 1e6:.1f} MB (keep it under 2 MB)"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, workdir):
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    nb = execute(nbformat.read(path, as_version=4), workdir)
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path}: {errors[0].ename}: {errors[0].evalue}"
    # fast mode really was on: the tiny dataset lives in the work folder, and nothing was written next to the notebooks
    assert (workdir / "shapes_fast" / "meta.json").is_file(), f"{path} did not use YOLO_NB_WORKDIR"
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, f"{path} wrote files into notebooks/"
    figures = sum("image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", []))
    assert figures >= 3, f"{path}: only {figures} figures were displayed (is the inline backend lost?)"


def test_training_notebook_wrote_its_run_in_the_work_folder(workdir):
    runs = list((workdir / "runs").glob("*/best.pt"))
    if not runs:
        pytest.skip("runs only after test_notebook_runs_in_fast_mode[04_training_and_results]")
    assert all(p.parent.joinpath("metrics.csv").is_file() for p in runs)


def test_a_failing_cell_fails_the_run(tmp_path):
    cells = [nbformat.v4.new_code_cell("import os\nassert os.environ['YOLO_NB_FAST'] == '1'"),
             nbformat.v4.new_code_cell("raise ValueError('broken cell')")]
    nb = nbformat.v4.new_notebook(cells=cells)
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="broken cell"):
        execute(nb, tmp_path)
