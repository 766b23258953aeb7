"""A search that cannot run, or a hand-edited evolve.csv that cannot be read back, stops with one line naming what
is wrong (the file, row and column of a bad cell), before any training."""
import csv

import pytest

from conftest import ROOT
from yolo.research.evolve import EVOLVE_SPACE, Result, read_history, search_space, write_result

SPACE = {k: EVOLVE_SPACE[k] for k in ("lr", "box_weight")}


def write_csv(path, generations=3):
    for g in range(1, generations + 1):
        genes = {"lr": 1e-3 * g, "box_weight": 5.0 + g}
        write_result(path, Result(g, genes, {"map50": 0.1 * g, "map": 0.05 * g}, 0.055 * g, None if g == 1 else 1,
                                  {"time_s": 1.0, "trial": f"gen{g}"}), SPACE)


def edit_cell(path, row, column, value):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    rows[row][rows[0].index(column)] = value
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize("params", ["", " , ", []])
def test_evolving_no_field_is_refused(params):
    from yolo.config import BaseConfig

    with pytest.raises(ValueError, match="config field 'evolve_params'.*no field"):
        search_space(BaseConfig(), params)


@pytest.mark.parametrize("column, value, message", [
    ("lr", "abc", "row 2, column 'lr': 'abc' is not a number"),
    ("fitness", "nan", "row 2, column 'fitness': 'nan' is not a finite number"),
    ("map", "", "row 2, column 'map' is empty"),
    ("generation", "two", "row 2, column 'generation': 'two' is not a whole number"),
    ("parent", "1.5", "row 2, column 'parent': '1.5' is not a whole number"),
])
def test_a_bad_cell_names_file_row_and_column(tmp_path, column, value, message):
    path = tmp_path / "evolve.csv"
    write_csv(path)
    edit_cell(path, 2, column, value)
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        read_history(path, SPACE)


def test_a_cut_off_row_names_file_row_and_column(tmp_path):
    path = tmp_path / "evolve.csv"
    write_csv(path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][:12] + "\n")  # row 3 cut off after its first cells
    with pytest.raises(ValueError, match=f"{path}.*row 3, column '[a-z_0-9]+' is missing"):
        read_history(path, SPACE)


def test_a_row_with_more_cells_than_the_header(tmp_path):
    path = tmp_path / "evolve.csv"
    write_csv(path)
    path.write_text(path.read_text().rstrip("\n") + ",7,8\n")
    with pytest.raises(ValueError, match=f"{path}.*row 3 has 2 cells more than the header"):
        read_history(path, SPACE)


def test_the_good_file_still_reads(tmp_path):
    path = tmp_path / "evolve.csv"
    write_csv(path)
    history = read_history(path, SPACE)
    assert [r.generation for r in history] == [1, 2, 3] and history[2].genes == {"lr": 3e-3, "box_weight": 8.0}


def test_main_resume_of_a_bad_csv_is_one_error_line(tmp_path, monkeypatch):
    import main

    monkeypatch.chdir(ROOT)
    path = tmp_path / "x_evolve" / "evolve.csv"
    path.parent.mkdir()
    write_csv(path)
    edit_cell(path, 3, "fitness", "nan")
    with pytest.raises(SystemExit) as e:
        main.main(["--task", "evolve", "--runs_dir", str(tmp_path), "--run_name", "x", "--resume", "true",
                   "--evolve_params", "lr,box_weight"])
    assert str(e.value.code).startswith("error: ") and f"{path}: row 3, column 'fitness'" in str(e.value.code)
    assert not (tmp_path / "x_evolve" / "trials").exists()


def test_main_refuses_an_empty_evolve_params_before_training(tmp_path, monkeypatch):
    import main

    monkeypatch.chdir(ROOT)
    tiny = ["--shapes_num_train", "8", "--shapes_num_val", "4", "--img_size", "64", "--width", "0.25", "--epochs",
            "1", "--num_workers", "0", "--evolve_generations", "2"]  # should the refusal fail, a short search
    with pytest.raises(SystemExit) as e:
        main.main(["--task", "evolve", "--runs_dir", str(tmp_path / "runs"), "--data_root", str(tmp_path / "data"),
                   "--run_name", "x", *tiny, "--evolve_params", ""])
    assert "config field 'evolve_params'" in str(e.value.code)
    assert list(tmp_path.iterdir()) == []


def test_resume_continues_the_newest_numbered_search_folder_only(tmp_path):
    from yolo.config import BaseConfig
    from yolo.tasks.evolve import search_dir

    cfg = BaseConfig()
    cfg.runs_dir, cfg.run_name, cfg.resume = str(tmp_path), "t", True
    for name in ("t_evolve", "t_evolve02", "t_evolve1"):  # _evolve02 and _evolve1 are no name next_free_dir makes
        (tmp_path / name).mkdir()
        (tmp_path / name / "evolve.csv").write_text("generation\n")
    assert search_dir(cfg) == tmp_path / "t_evolve"
    (tmp_path / "t_evolve2").mkdir()
    (tmp_path / "t_evolve2" / "evolve.csv").write_text("generation\n")
    assert search_dir(cfg) == tmp_path / "t_evolve2"
