"""The teaching notebooks: committed with the outputs of a full run, and each runs top to bottom in fast mode.

Fast mode (YOLO_NB_FAST=1) makes the notebooks generate a tiny dataset and train for 2 epochs under
YOLO_NB_WORKDIR (a pytest temporary folder here), so nothing is written into the repository.

Each committed notebook records the config values it was executed with (notebooks/execute.py, RECORDED_FIELDS); a
value that is no longer today's default fails here with the command that re-executes the notebook.
"""
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
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


def load_execute_script():
    """notebooks/execute.py as a module (it is a script, not part of the yolo package)."""
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXECUTE = load_execute_script()


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_records_what_it_was_executed_with(path):
    record = nbformat.read(path, as_version=4).metadata.get(EXECUTE.RECORD_KEY)
    command = f"python notebooks/execute.py notebooks/{path.name}"
    assert record is not None, f"{path.name}: no metadata {EXECUTE.RECORD_KEY!r}: {command}"
    config_file, fields = EXECUTE.RECORDED_FIELDS[path.name]
    assert record["config_file"] == config_file and sorted(record["config"]) == sorted(fields), (
        f"{path.name}: records {record['config_file']} {sorted(record['config'])}, RECORDED_FIELDS names "
        f"{config_file} {sorted(fields)}: {command}")
    assert record["commit"], f"{path.name}: no commit recorded"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_come_from_todays_config(path):
    """A notebook whose recorded config value differs from today's default shows what the project no longer does."""
    stale = EXECUTE.stale_fields(path)
    assert stale == [], "\n".join(stale)


def test_a_stale_notebook_is_reported_with_its_command(tmp_path):
    """A hand-made record against values read straight from configs/my_config.py: equal values pass, a changed
    one is named with both values and the command; a notebook without a record is left alone."""
    from yolo.config import load_config

    today = load_config(ROOT / "configs" / "my_config.py")
    name = "01_data_and_augmentations.ipynb"
    nb = EXECUTE.record_execution(nbformat.v4.new_notebook(), name, commit="abc123")
    assert nb.metadata[EXECUTE.RECORD_KEY]["config"]["img_size"] == today.img_size
    assert nb.metadata[EXECUTE.RECORD_KEY]["config"]["affine_scale"] == list(today.affine_scale)
    path = tmp_path / name
    nbformat.write(nb, path)
    assert EXECUTE.stale_fields(path) == []

    nb.metadata[EXECUTE.RECORD_KEY]["config"]["img_size"] = today.img_size + 64
    nbformat.write(nb, path)
    assert EXECUTE.stale_fields(path) == [
        f"{name}: img_size was {today.img_size + 64} when it was executed, today's default is {today.img_size} "
        f"(configs/my_config.py): python notebooks/execute.py notebooks/{name}"]

    nbformat.write(nbformat.v4.new_notebook(), path)
    assert EXECUTE.stale_fields(path) == []


def test_a_committed_notebook_made_stale_is_caught(tmp_path):
    """The same on a copy of a committed notebook: change one recorded value, and only that one is reported."""
    source = NOTEBOOK_DIR / "07_head_search.ipynb"
    copy = shutil.copy(source, tmp_path / source.name)
    nb = nbformat.read(copy, as_version=4)
    nb.metadata[EXECUTE.RECORD_KEY]["config"]["head_channels"] = 64
    nbformat.write(nb, copy)
    stale = EXECUTE.stale_fields(copy)
    assert len(stale) == 1 and "head_channels was 64" in stale[0], stale
    assert stale[0].endswith("python notebooks/execute.py notebooks/07_head_search.ipynb")


BAR = ("from yolo.engine.logs import progress\n"
       "for _ in progress(range(3), show=True, desc='epoch 1/5', dynamic_ncols=True):\n"
       "    pass\n")


def bar_stderr(env):
    """What a bar made as yolo/engine/trainer.py makes it writes to stderr, in a fresh process with `env` added."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    return subprocess.run([sys.executable, "-c", BAR], cwd=ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=120, check=True).stderr


def test_execute_switches_the_progress_bars_off():
    assert "epoch 1/5" in bar_stderr({}), "no bar without the switch: this test would pass whatever it does"
    assert bar_stderr(EXECUTE.KERNEL_ENV) == ""


def test_no_bar_in_yolo_overrides_the_switch():
    """tqdm reads TQDM_DISABLE only as the default of `disable`: a tqdm(..., disable=not x) bar would draw its
    frames into the saved notebooks anyway. yolo.engine.logs.progress(show=x) leaves the argument out instead."""
    overriding = []
    for file in sorted((ROOT / "yolo").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            name = getattr(node, "func", None)
            name = getattr(name, "id", None) or getattr(name, "attr", None)
            if name == "tqdm" and any(k.arg == "disable" and not (isinstance(k.value, ast.Constant) and k.value.value
                                                                 is True) for k in node.keywords):
                overriding.append(f"{file.relative_to(ROOT)}:{node.lineno}")
    assert overriding == [], f"tqdm bars with a disable= argument (use yolo.engine.logs.progress): {overriding}"
