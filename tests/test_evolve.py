"""Hyperparameter evolution: the genetic search against a fake trial whose fitness is a known function of the genes
(milliseconds each), then real searches through main.py on a tiny built-in dataset, the Ray backend, and the
per-task loss gains a multi-task search evolves."""
import copy
import csv
import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from yolo.config import BaseConfig, task_configs
from yolo.research.evolve import (EVOLVE_SPACE, Result, apply_genes, best_result, config_lines, fitness, read_history,
                         run_search, search_space, select_parent, start_genes, write_result)

SPACE = {k: EVOLVE_SPACE[k] for k in ("lr", "momentum", "box_weight", "cls_weight", "zoom", "hflip_prob")}
START = {"lr": 2e-3, "momentum": 0.937, "box_weight": 5.0, "cls_weight": 0.5, "zoom": 0.25, "hflip_prob": 0.5}
TARGET = {"lr": 4e-3, "momentum": 0.85, "box_weight": 8.0, "cls_weight": 1.0, "zoom": 0.4, "hflip_prob": 0.3}


def fake_trial(genes, generation):
    """Fitness 1 at TARGET, falling with the squared log-distance of every gene from it."""
    distance = sum(math.log(genes[k] / TARGET[k]) ** 2 for k in TARGET)
    value = math.exp(-distance)
    return {"map50": value, "map": value}, {}


def search(generations=30, seed=0, history=()):
    return run_search(SPACE, START, fake_trial, generations, seed, history)


def test_fitness_is_the_weighted_map_mean_over_tasks():
    assert fitness({"map50": 0.6, "map": 0.3}) == pytest.approx(0.1 * 0.6 + 0.9 * 0.3)
    two = {"map50_a": 0.6, "map_a": 0.3, "map50_b": 0.2, "map_b": 0.1}
    assert fitness(two) == pytest.approx(0.1 * 0.4 + 0.9 * 0.2)


def test_bounds_hold_and_gain_zero_keeps_a_gene():
    space = {**SPACE, "momentum": (0.0, 0.6, 0.98)}
    history = run_search(space, {**START, "box_weight": 19.9, "lr": 1.1e-4}, fake_trial, 60, 3)
    for result in history[1:]:
        for gene, (_, low, high) in space.items():
            assert low <= result.genes[gene] <= high, (result.generation, gene, result.genes[gene])
        assert result.genes["momentum"] == START["momentum"]
        assert any(result.genes[g] != history[result.parent - 1].genes[g] for g in space), "a child must change"


def test_parent_is_one_of_the_best_five():
    history = search(40)
    for result in history[1:]:
        earlier = sorted(history[:result.generation - 1], key=lambda r: -r.fitness)
        fifth_best = earlier[min(5, len(earlier)) - 1].fitness
        assert history[result.parent - 1].fitness >= fifth_best, result.generation


def test_parent_draw_weights_are_fitness_minus_min():
    """Frequencies of 20,000 draws against the hand-computed weights (f - min + 1e-6) / sum."""
    fits = [0.50, 0.10, 0.40, 0.05, 0.20, 0.30, 0.01]  # top 5: 0.5, 0.4, 0.3, 0.2, 0.1 -> weights .4 .3 .2 .1 0
    history = [Result(k + 1, {}, {}, f) for k, f in enumerate(fits)]
    rng = np.random.default_rng(0)
    counts = {}
    for _ in range(20000):
        g = select_parent(history, rng).generation
        counts[g] = counts.get(g, 0) + 1
    expected = {1: 0.4, 3: 0.3, 6: 0.2, 5: 0.1}
    assert set(counts) <= set(expected) | {2}
    for g, p in expected.items():
        assert counts[g] / 20000 == pytest.approx(p, abs=0.015)


def test_same_seed_repeats_the_search_another_seed_does_not():
    first, again, other = search(15, seed=1), search(15, seed=1), search(15, seed=2)
    assert [r.genes for r in first] == [r.genes for r in again]
    assert [r.genes for r in first] != [r.genes for r in other]


def test_fitness_improves_over_30_generations():
    for seed in range(5):
        history = search(30, seed)
        first, best = history[0].fitness, best_result(history).fitness
        assert best > first + 0.2, (seed, first, best)  # fitness 1 at TARGET, 0.19 at START


def test_resumed_search_continues_exactly(tmp_path):
    """Kill a search after 7 generations; resuming from its evolve.csv gives the uninterrupted run's generations."""
    path = tmp_path / "evolve.csv"

    def dying_trial(genes, generation):
        if generation == 8:
            raise KeyboardInterrupt
        return fake_trial(genes, generation)

    with pytest.raises(KeyboardInterrupt):
        run_search(SPACE, START, dying_trial, 20, 5, on_result=lambda r: write_result(path, r, SPACE))
    done = read_history(path, SPACE)
    assert len(done) == 7
    resumed = run_search(SPACE, START, fake_trial, 20, 5, done)
    straight = run_search(SPACE, START, fake_trial, 20, 5)
    assert [(r.genes, r.parent) for r in resumed] == [(r.genes, r.parent) for r in straight]


def test_a_write_killed_before_its_rename_keeps_the_good_rows(tmp_path, monkeypatch):
    path = tmp_path / "evolve.csv"
    run_search(SPACE, START, fake_trial, 3, 0, on_result=lambda r: write_result(path, r, SPACE))
    good = path.read_bytes()

    def killed(*args):
        raise KeyboardInterrupt  # the process dies after writing the new file, before renaming it

    monkeypatch.setattr("yolo.research.evolve.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run_search(SPACE, START, fake_trial, 4, 0, read_history(path, SPACE),
                   on_result=lambda r: write_result(path, r, SPACE))
    assert path.read_bytes() == good and len(read_history(path, SPACE)) == 3


def test_csv_of_another_search_is_refused(tmp_path):
    path = tmp_path / "evolve.csv"
    run_search(SPACE, START, fake_trial, 2, 0, on_result=lambda r: write_result(path, r, SPACE))
    with pytest.raises(ValueError, match="evolves"):
        read_history(path, {"lr": EVOLVE_SPACE["lr"]})


# ------------------------------------------------------------------------------------------------- multi-task
def two_task_config():
    cfg = BaseConfig()
    cfg.tasks = [{"name": "a", "box_weight": 2.0}, {"name": "b", "class_names": ["x"]}]
    return cfg


def test_multitask_genes_are_per_task():
    cfg = two_task_config()
    space = search_space(cfg, "lr,box_weight,task_weights")
    assert list(space) == ["lr", "box_weight.a", "box_weight.b", "task_weights.a", "task_weights.b"]
    assert start_genes(cfg, space) == {"lr": 2e-3, "box_weight.a": 2.0, "box_weight.b": 5.0, "task_weights.a": 1.0,
                                       "task_weights.b": 1.0}
    child = apply_genes(cfg, {"box_weight.b": 7.5, "task_weights.a": 0.5})
    assert child.tasks[1]["box_weight"] == 7.5 and child.task_weights == [0.5, 1.0]
    assert "box_weight" not in cfg.tasks[1], "the parent config is left as it was"
    pasted = type("Pasted", (), {})()
    exec("\n".join(config_lines(cfg, {"lr": 0.01, "box_weight.b": 7.5, "task_weights.a": 0.5})), {}, {"self": pasted})
    assert pasted.lr == 0.01 and pasted.task_weights == [0.5, 1.0]
    assert pasted.tasks == [{"name": "a", "box_weight": 2.0}, {"name": "b", "class_names": ["x"], "box_weight": 7.5}]
    with pytest.raises(ValueError, match="task_weights needs a multi-task config"):
        search_space(BaseConfig(), ["task_weights"])
    with pytest.raises(ValueError, match="cannot be evolved"):
        search_space(cfg, ["lr", "epochs"])


def test_task_dict_loss_gain_reaches_that_tasks_loss():
    """Each task's YOLOLoss weighs its terms with its own gains: loss = box_w * box + obj_w * obj + cls_w * cls."""
    from yolo.loss import YOLOLoss
    from yolo.models.detector import build_model

    cfg = two_task_config()
    cfg.img_size, cfg.width, cfg.tasks[1]["obj_weight"] = 64, 0.25, 3.0
    cfg.finalize()
    model = build_model(cfg).eval()
    torch.manual_seed(0)
    images = [torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)] * 2
    targets = torch.tensor([[0, 0, 30.0, 30.0, 20.0, 16.0], [1, 0, 20.0, 40.0, 12.0, 24.0]])
    with torch.no_grad():
        outputs = model(images)
    for task, out, (box_w, obj_w) in zip(task_configs(cfg), outputs, [(2.0, 1.0), (5.0, 3.0)]):
        loss, items, _ = YOLOLoss(task)(out, targets, model.decoding)
        expected = box_w * items["box"] + obj_w * items["obj"] + 0.5 * items["cls"]
        assert float(items["box"]) > 0 and float(loss) == pytest.approx(float(expected), rel=1e-5)


# ------------------------------------------------------------------------------------------------- main.py
TINY = ["--shapes_num_train", "16", "--shapes_num_val", "8", "--img_size", "128", "--width", "0.25", "--batch_size",
        "8", "--num_workers", "0", "--epochs", "1", "--cache_images", "true", "--evolve_params", "lr,box_weight,zoom",
        "--evolve_confirm_seeds", "0"]  # the confirmation's own tests: tests/test_evolve_confirm.py


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("evolve_data") / "shapes")


def evolve_cli(runs, data_root, *args):
    """main.py in this process (its default config path is relative to the repository)."""
    import main

    os.chdir(ROOT)
    return main.main(["--task", "evolve", "--runs_dir", str(runs), "--data_root", data_root, "--run_name", "t",
                      *TINY, *args])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_search_writes_the_best_row_as_config_and_resumes(tmp_path, data_root):
    evolve_cli(tmp_path / "a", data_root, "--evolve_generations", "2")
    out = tmp_path / "a" / "t_evolve"
    rows = read_rows(out / "evolve.csv")
    assert [r["generation"] for r in rows] == ["1", "2"]
    for name in ("best_config.py", "evolve.png", "best.pt", "trials/gen1/best.pt", "trials/gen2/best.pt"):
        assert (out / name).is_file(), name
    best = max(rows, key=lambda r: float(r["fitness"]))
    lines = (out / "best_config.py").read_text()
    pasted = type("Pasted", (), {})()
    exec(lines, {}, {"self": pasted})
    assert pasted.lr == float(best["lr"]) and pasted.box_weight == float(best["box_weight"])
    zoom = float(best["zoom"])
    assert pasted.affine_scale == pytest.approx((1 - zoom, 1 + zoom), abs=1e-9)
    assert float(best["fitness"]) == pytest.approx(0.1 * float(best["map50"]) + 0.9 * float(best["map"]))

    # the same search killed during generation 2 (its row missing, its trial folder half-written), then resumed,
    # trains generation 2 again and breeds the same child
    killed = tmp_path / "b" / "t_evolve"
    shutil.copytree(out, killed)
    text = (killed / "evolve.csv").read_text().splitlines(keepends=True)
    (killed / "evolve.csv").write_text("".join(text[:2]))
    (killed / "trials" / "gen2" / "best.pt").unlink()
    evolve_cli(tmp_path / "b", data_root, "--evolve_generations", "2", "--resume", "true")
    resumed = read_rows(killed / "evolve.csv")
    genes = ("generation", "parent", "lr", "box_weight", "zoom")
    assert [[r[g] for g in genes] for r in resumed] == [[r[g] for g in genes] for r in rows]
    assert (killed / "trials" / "gen2" / "best.pt").is_file() and not (tmp_path / "b" / "t_evolve2").exists()


def test_ray_backend_says_what_to_install(monkeypatch):
    from yolo.research.evolve_ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r'needs Ray Tune and Optuna .*pip install "ray\[tune\]" optuna'):
        import_ray("optuna")


@pytest.mark.slow  # starting Ray takes 10-60 s
def test_ray_backend_runs_two_trials(tmp_path, data_root, monkeypatch):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    pytest.importorskip("optuna")
    monkeypatch.chdir(ROOT)
    try:  # the workers import this project like the search would make them (research/evolve_ray.py)
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    except Exception as e:  # an overloaded machine: Ray's agents take longer to start than the raylet waits
        if "timed out during startup" in str(e):
            pytest.skip(f"Ray could not start on this machine: {e}")
        raise
    try:
        evolve_cli(tmp_path, data_root, "--evolve_generations", "2", "--evolve_backend", "ray")
    finally:
        ray.shutdown()
    out = tmp_path / "t_evolve"
    rows = read_rows(out / "evolve.csv")
    assert len(rows) == 2 and all(float(r["fitness"]) >= 0 for r in rows)
    space = search_space(BaseConfig(), "lr,box_weight,zoom")
    for row in rows:
        for gene, (_, low, high) in space.items():
            assert low <= float(row[gene]) <= high
    assert (out / "best_config.py").is_file() and (out / "evolve.png").is_file() and (out / "best.pt").is_file()


def test_apply_genes_does_not_touch_the_config():
    cfg = BaseConfig()
    before = copy.deepcopy(cfg.to_dict())
    child = apply_genes(cfg, {"lr": 0.01, "zoom": 0.4})
    assert cfg.to_dict() == before and child.affine_scale == (0.6, 1.4) and child.lr == 0.01


def test_ray_trainable_reports_fitness_and_results_come_back_in_grid_order(monkeypatch, tmp_path):
    """The Ray side without a cluster: what a trial reports to Tune, and the rows built from Tune's results."""
    tune = pytest.importorskip("ray.tune")
    from types import SimpleNamespace

    from yolo.research import evolve_ray as backend

    reports = []
    monkeypatch.setattr(tune, "report", lambda metrics: reports.append(metrics))
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "abc_00003"))
    seen = {}

    def trial_fn(genes, name, report):
        seen.update(genes=genes, name=name)
        for epoch, m in enumerate([0.1, 0.3], start=1):
            report({"map50": m, "map": m / 2}, epoch)
        return {"map50": 0.3, "map": 0.15}, {}

    backend.ray_trainable({"lr": 0.0123456789}, trial_fn, str(tmp_path), {"zoom": 0.25}, per_epoch=True)
    assert seen == {"genes": {"zoom": 0.25, "lr": 0.012346}, "name": "abc_00003"}
    assert [r["fitness"] for r in reports] == pytest.approx([0.1 * 0.1 + 0.9 * 0.05, 0.1 * 0.3 + 0.9 * 0.15])

    def result(trial, fit, error=None):
        metrics = {**reports[-1], "trial_id": trial, "training_iteration": 2, "map50": fit, "map": fit}
        return SimpleNamespace(error=error, metrics=metrics, config={"lr": 0.0123456789})

    grid = [result("3b5d70d5", 0.2), result("0a1f9c2e", 0.5), result("9e8d7c6b", 0.1, error="died")]
    history = backend.grid_results(grid, {"zoom": 0.25})
    assert [(r.generation, r.extra["trial"]) for r in history] == [(1, "3b5d70d5"), (2, "0a1f9c2e")]
    assert [r.fitness for r in history] == pytest.approx([0.2, 0.5]) and history[0].genes["lr"] == 0.012346
    space = {"lr": EVOLVE_SPACE["lr"], "zoom": EVOLVE_SPACE["zoom"]}
    domains = backend.param_space({**space, "momentum": (0.0, 0.6, 0.98)}, tune)  # gain 0: not searched
    assert set(domains) == {"lr", "zoom"}
    bounds = [(domains[g].lower, domains[g].upper) for g in ("lr", "zoom")]
    assert bounds == [(1e-4, 2e-2), (0, 0.9)]
    assert "LogUniform" in type(domains["lr"].sampler).__name__ and "Log" not in type(domains["zoom"].sampler).__name__


def test_a_diverged_trial_scores_zero_and_the_search_goes_on(tmp_path, monkeypatch):
    """The search's command with the training replaced: generation 2 diverges (the trainer's FloatingPointError)."""
    from yolo.tasks import evolve as command

    def fake_train_trial(base, genes, trial_dir, report=None, mlflow_parent=None):
        if trial_dir.name == "gen2":
            raise FloatingPointError("loss is not finite")
        trial_dir.mkdir(parents=True)
        metrics, _ = fake_trial({**TARGET, **genes}, 0)
        return metrics, {"time_s": 0.0, "trial": str(trial_dir)}

    monkeypatch.setattr(command, "train_trial", fake_train_trial)
    cfg = BaseConfig()
    cfg.runs_dir, cfg.run_name, cfg.evolve_generations, cfg.evolve_params = str(tmp_path), "x", 4, "lr,box_weight"
    best = command.run(cfg.finalize())
    rows = read_rows(tmp_path / "x_evolve" / "evolve.csv")
    assert [float(r["fitness"]) == 0 for r in rows] == [False, True, False, False]
    assert best.fitness == max(float(r["fitness"]) for r in rows) > 0
