"""Noise-aware selection (evolve_confirm_seeds): generation 1 and the best results of a search are trained again with
other seeds, and the winner is the best mean of those retrainings. Checked on fake trials whose noise is known: a
config that won the search by seed luck loses after the confirmation, and over many noisy searches the confirmed
winner is the truly best config more often than the search's best."""
import csv

import numpy as np
import pytest

from yolo.config import BaseConfig
from yolo.research.confirm import (candidates, confirm_seeds, confirmed_winner, read_confirm, run_confirm,
                                   write_confirm_row)
from yolo.research.evolve import Result


def history_of(search_fitness):
    """Results of generations 1.. with the given fitness (their genes name them: {"g": generation})."""
    return [Result(g, {"g": float(g)}, {"map50": f, "map": f}, f, None if g == 1 else 1)
            for g, f in enumerate(search_fitness, start=1)]


def noisy(true_value, noise):
    """A retraining whose fitness is true_value[generation] + noise[(generation, seed)]."""
    def retrain(result, seed):
        value = true_value[result.generation] + noise.get((result.generation, seed), 0.0)
        return {"map50": value, "map": value}, {"time_s": 0.0}
    return retrain


def test_the_candidates_are_generation_1_and_the_best():
    history = history_of([0.10, 0.30, 0.05, 0.25, 0.40, 0.20])
    assert [r.generation for r in candidates(history, 3)] == [1, 5, 2, 4]
    assert [r.generation for r in candidates(history_of([0.5, 0.1, 0.3]), 3)] == [1, 3, 2]  # 1 is among the best
    assert confirm_seeds(0, 2) == [1, 2] and confirm_seeds(7, 3) == [8, 9, 10]


def test_a_lucky_winner_loses_after_confirmation():
    """Generation 2 is truly 0.50 but drew +0.08 in the search (0.58); generation 3 is truly 0.55 and drew -0.01."""
    true_value = {1: 0.45, 2: 0.50, 3: 0.55, 4: 0.40}
    history = history_of([0.45, 0.58, 0.54, 0.40])
    noise = {(2, 1): 0.01, (2, 2): -0.01, (3, 1): -0.005, (3, 2): 0.005, (1, 1): 0.002, (4, 1): 0.01}
    confirmed = run_confirm(candidates(history, 2), [1, 2], noisy(true_value, noise))
    winner = confirmed_winner(confirmed)
    assert max(history, key=lambda r: r.fitness).generation == 2  # the search's pick: the lucky one
    assert winner.generation == 3 and winner.mean == pytest.approx(0.55)
    by_generation = {c.generation: c for c in confirmed}
    assert by_generation[2].mean == pytest.approx(0.50) and by_generation[2].std == pytest.approx(0.01 * 2 ** 0.5)
    assert by_generation[2].search_fitness == 0.58 and set(by_generation) == {1, 2, 3}


def test_the_confirmed_winner_is_the_true_best_more_often():
    """200 searches of 12 configs whose true fitness is spread over 0.06, each scored with seed noise of sd 0.02:
    the search's best is the true best in about a quarter of them, the confirmed winner (top 3, 2 seeds) far more
    often, and the configs it picks are truly better on average."""
    rng = np.random.default_rng(0)
    search_right = confirmed_right = 0
    search_true, confirmed_true = [], []
    for case in range(200):
        true_value = dict(enumerate(rng.uniform(0.30, 0.36, 12), start=1))
        noise = {(g, s): rng.normal(0, 0.02) for g in true_value for s in (0, 1, 2)}
        history = history_of([true_value[g] + noise[(g, 0)] for g in true_value])
        best = max(true_value, key=true_value.get)
        search_pick = max(history, key=lambda r: r.fitness).generation
        winner = confirmed_winner(run_confirm(candidates(history, 3), [1, 2], noisy(true_value, noise))).generation
        search_right, confirmed_right = search_right + (search_pick == best), confirmed_right + (winner == best)
        search_true.append(true_value[search_pick])
        confirmed_true.append(true_value[winner])
    assert confirmed_right > search_right + 15, (search_right, confirmed_right)
    assert np.mean(confirmed_true) > np.mean(search_true), (np.mean(search_true), np.mean(confirmed_true))


def test_confirm_rows_are_written_as_they_finish_and_read_back(tmp_path):
    path = tmp_path / "confirm.csv"
    history = history_of([0.1, 0.3, 0.2])
    calls = []

    def retrain(result, seed):
        calls.append((result.generation, seed))
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed during the 4th retraining
        return {"map50": 0.1 * seed, "map": 0.05 * seed}, {"time_s": 1.5, "trial": f"gen{result.generation}"}

    with pytest.raises(KeyboardInterrupt):
        run_confirm(candidates(history, 2), [1, 2], retrain, on_row=lambda row: write_confirm_row(path, row))
    done = read_confirm(path)
    assert sorted(done) == [(1, 1), (1, 2), (2, 1)] and done[(1, 2)].fitness == pytest.approx(0.1 * 0.2 + 0.9 * 0.1)
    calls.clear()
    confirmed = run_confirm(candidates(history, 2), [1, 2], retrain, done)
    assert calls == [(2, 2), (3, 1), (3, 2)]  # only what was missing
    assert [c.generation for c in confirmed] == [1, 2, 3]
    with path.open(newline="") as f:
        assert [r["generation"] + "/" + r["seed"] for r in csv.DictReader(f)] == ["1/1", "1/2", "2/1"]


def test_a_bad_confirm_csv_cell_names_file_row_and_column(tmp_path):
    path = tmp_path / "confirm.csv"
    run_confirm(candidates(history_of([0.1, 0.3]), 1), [1], noisy({1: 0.1, 2: 0.3}, {}),
                on_row=lambda row: write_confirm_row(path, row))
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[lines[0].split(",").index("map")] = "nan"
    path.write_text("\n".join([*lines[:2], ",".join(cells)]) + "\n")
    with pytest.raises(ValueError, match=f"{path}: row 2, column 'map': 'nan' is not a finite number"):
        read_confirm(path)


def fake_train_trial(true_value, seen):
    """tasks/evolve.py's train_trial replaced: fitness from the genes, plus +0.1 for generation 2's search trial."""
    def train_trial(base, genes, trial_dir, report=None, mlflow_parent=None):
        trial_dir.mkdir(parents=True)
        seen.append((trial_dir.name, base.seed))
        value = true_value(genes) + (0.1 if trial_dir.name == "gen2" else 0.0)
        return {"map50": value, "map": value}, {"time_s": 0.0, "trial": str(trial_dir)}
    return train_trial


def test_the_search_confirms_its_winner_with_other_seeds(tmp_path, monkeypatch):
    from yolo.tasks import evolve as command

    seen = []
    monkeypatch.setattr(command, "train_trial", fake_train_trial(lambda genes: genes["lr"] * 10, seen))
    cfg = BaseConfig()
    cfg.runs_dir, cfg.run_name, cfg.evolve_generations, cfg.evolve_params = str(tmp_path), "c", 4, "lr"
    cfg.evolve_confirm_seeds, cfg.evolve_confirm_top, cfg.seed = 2, 2, 5
    best = command.run(cfg.finalize())
    out = tmp_path / "c_evolve"
    rows = list(csv.DictReader((out / "evolve.csv").open(newline="")))
    search_best = max(rows, key=lambda r: float(r["fitness"]))
    assert search_best["generation"] == "2"  # lucky: +0.1 in its search trial only
    chosen = [rows[0], *sorted(rows, key=lambda r: -float(r["fitness"]))[:2]]  # generation 1 and the best two
    confirm_dirs = [name for name, _ in seen if "_seed" in name]
    assert {s for name, s in seen if "_seed" in name} == {6, 7}  # the config's seed + 1, + 2
    assert len(confirm_dirs) == 2 * len({r["generation"] for r in chosen})
    assert all((out / "confirm" / d).is_dir() for d in confirm_dirs)
    assert best.generation == int(max(chosen, key=lambda r: float(r["lr"]))["generation"])  # the true best of them
    table = (out / "confirm.md").read_text()
    assert "mean" in table and "spread" in table
    pasted = type("Pasted", (), {})()
    exec((out / "best_config.py").read_text(), {}, {"self": pasted})
    assert pasted.lr == best.genes["lr"]
    assert "confirmed" in (out / "best_config.py").read_text() and "confirmation" in (out / "log.txt").read_text()


def test_no_confirm_seeds_keeps_the_search_winner(tmp_path, monkeypatch):
    from yolo.tasks import evolve as command

    seen = []
    monkeypatch.setattr(command, "train_trial", fake_train_trial(lambda genes: genes["lr"] * 10, seen))
    cfg = BaseConfig()
    cfg.runs_dir, cfg.run_name, cfg.evolve_generations, cfg.evolve_params = str(tmp_path), "n", 3, "lr"
    cfg.evolve_confirm_seeds = 0
    best = command.run(cfg.finalize())
    assert best.generation == 2 and not (tmp_path / "n_evolve" / "confirm.csv").exists()
    assert all("_seed" not in name for name, _ in seen)


def test_confirm_fields_are_checked():
    for field, value in [("evolve_confirm_seeds", -1), ("evolve_confirm_top", 0), ("evolve_confirm_seeds", 1.5)]:
        cfg = BaseConfig()
        setattr(cfg, field, value)
        with pytest.raises(ValueError, match=f"config field '{field}'"):
            cfg.finalize()
