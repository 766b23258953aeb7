"""The project as a package: pyproject.toml installs `yolo` and the `yolo-lab` command (main.py's code, in
yolo/cli.py) with the dependencies of requirements.txt, which installs the package itself (-e .); the command runs
the package's defaults outside a clone; the notebooks import the installed package without patching sys.path."""
import json
import re
import shutil
import subprocess
import tomllib

import pytest

import main
from conftest import ROOT
from yolo import cli
from yolo.config import BaseConfig

# requirements.txt lines that are for working on the project (notebooks, tests), not for using it
DEV_ONLY = {"jupyterlab", "nbclient", "ipykernel", "pytest"}


def requirement_names(lines):
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.lstrip().startswith(("#", "-"))}


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_builds_the_package_with_the_requirements(pyproject):
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    project = pyproject["project"]
    assert project["scripts"] == {"yolo-lab": "yolo.cli:command"}  # not `yolo`: Ultralytics' command
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"] == ["yolo", "yolo.*"]
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert requirement_names(project["dependencies"]) == requirement_names(requirements) - DEV_ONLY
    assert "pyyaml" in requirement_names(project["dependencies"])
    pinned = {line.split(";")[0].strip() for line in requirements if line.strip() and not line.startswith(("#", "-"))}
    assert pinned - {d for d in project["dependencies"]} == {p for p in pinned if requirement_names([p]) <= DEV_ONLY}
    extras = project["optional-dependencies"]
    assert {"search", "mlflow", "notebooks", "dev"} <= set(extras)
    assert requirement_names(extras["search"]) == {"optuna", "ray"} and "mlflow" in requirement_names(extras["mlflow"])
    assert requirement_names(extras["notebooks"]) | {"pytest"} == DEV_ONLY
    assert "pytest" in requirement_names(extras["dev"]) and any("[notebooks]" in d for d in extras["dev"])
    assert "-e ." in [line.strip() for line in requirements]  # pip install -r requirements.txt installs the package


def test_every_package_folder_is_a_package():
    """setuptools' find includes folders with an __init__.py only: a subpackage without one would be left out of
    the installed package (and work in the clone)."""
    for folder in (ROOT / "yolo").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), folder


def test_main_py_is_the_package_command():
    assert main.main is cli.main and main.parse_args is cli.parse_args


def test_the_command_outside_a_clone_runs_the_package_defaults(tmp_path, monkeypatch, log_lines):
    """In a folder without configs/my_config.py the command runs BaseConfig and says so in one line; its data and
    runs go to the working folder."""
    monkeypatch.chdir(tmp_path)
    small = ["--task", "schedule", "--epochs", "2", "--shapes_num_train", "8", "--shapes_num_val", "2"]
    cli.main(small)
    said = [line for line in log_lines if "running the package's defaults" in line]
    assert len(said) == 1 and f"no configs/my_config.py in {tmp_path}" in said[0]
    assert (tmp_path / "data" / "shapes").is_dir() and (tmp_path / "runs" / "exp_lr_schedule.png").is_file()
    assert type(cli.load_command_config()) is BaseConfig  # said once: the API's next calls do not repeat it
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "my_config.py", tmp_path / "configs")
    assert type(cli.load_command_config()).__name__ == "MyConfig"
    assert len([line for line in log_lines if "running the package's defaults" in line]) == 1


def test_the_console_command_exits_0_after_a_command_that_returns_a_result(monkeypatch):
    """A console script passes the entry's return value to sys.exit, which turns a result (train's (fitness,
    folder)) into exit status 1: the entry returns nothing."""
    monkeypatch.setattr(cli, "main", lambda argv=None: (0.5, "runs/x"))
    assert cli.command() is None


def test_an_explicit_config_that_is_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="error: config file configs/my_config.py does not exist"):
        cli.main(["--config", "configs/my_config.py", "--task", "schedule"])


def test_the_installed_command_runs():
    command = shutil.which("yolo-lab")
    if command is None:
        pytest.skip("the package is not installed (pip install -e . or pip install -r requirements.txt)")
    out = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "yolo-lab" in out.stdout and "  train " in out.stdout


def test_the_notebooks_do_not_patch_sys_path():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert "sys.path" not in "".join(cell["source"]), path.name
