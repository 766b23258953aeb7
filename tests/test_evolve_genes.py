"""The genes evolve can move: every numeric field a task dict may set, per task; the warmup momentum and biases' lr;
every numeric augmentation field; genes that start at 0 mutate from a documented start value. Per-task genes come
back unchanged through best_config.py."""
import math

import pytest

from yolo.config import BaseConfig, task_configs
from yolo.config_checks import TASK_FIELDS
from yolo.research.evolve import (EVOLVE_SPACE, PER_TASK, ZERO_START, Result, apply_genes, run_search, search_space,
                                  start_genes)

AUGMENTATION = ("hflip_prob", "zoom", "affine_translate", "color_jitter", "mosaic_prob", "mosaic_off_epochs",
                "augment_off_epochs", "min_box_size", "min_visibility")


def two_task_config():
    cfg = BaseConfig()
    cfg.tasks = [{"name": "a", "box_weight": 2.0, "mosaic_prob": 0.1}, {"name": "b", "class_names": ["x"]}]
    return cfg


def numeric_task_fields():
    defaults = BaseConfig().to_dict()
    return [f for f in TASK_FIELDS if isinstance(defaults[f], (int, float)) and not isinstance(defaults[f], bool)
            and f in EVOLVE_SPACE]


def test_every_evolvable_task_field_is_a_gene_per_task():
    fields = numeric_task_fields()
    assert "mosaic_prob" in fields and set(fields) <= set(PER_TASK)
    cfg = two_task_config()
    for field in fields:
        assert list(search_space(cfg, [field])) == [f"{field}.a", f"{field}.b"], field
    start = start_genes(cfg, search_space(cfg, ["mosaic_prob", "box_weight"]))
    assert start == {"mosaic_prob.a": 0.1, "mosaic_prob.b": 0.0, "box_weight.a": 2.0, "box_weight.b": 5.0}


def test_per_task_genes_round_trip_through_best_config(tmp_path):
    from yolo.tasks.evolve import write_summary

    cfg = two_task_config()
    space = search_space(cfg, ["lr", "mosaic_prob", "cls_weight", "task_weights"])
    genes = {"lr": 0.0031, "mosaic_prob.a": 0.35, "mosaic_prob.b": 0.2, "cls_weight.a": 1.7, "cls_weight.b": 0.5,
             "task_weights.a": 1.0, "task_weights.b": 0.6}
    write_summary(cfg, space, [Result(1, genes, {"map50_a": 0.2, "map_a": 0.1, "map50_b": 0.3, "map_b": 0.1}, 0.1)],
                  tmp_path)
    pasted = two_task_config()
    exec((tmp_path / "best_config.py").read_text(), {}, {"self": pasted})
    assert start_genes(pasted, space) == genes
    tasks = {t.task_name: t for t in task_configs(pasted.finalize())}
    assert (tasks["a"].mosaic_prob, tasks["b"].mosaic_prob, tasks["a"].cls_weight) == (0.35, 0.2, 1.7)
    assert tasks["a"].box_weight == 2.0 and pasted.task_weights == [1.0, 0.6]


def test_warmup_genes_start_where_the_config_is():
    cfg = BaseConfig()
    space = search_space(cfg, ["warmup_momentum_ratio", "warmup_bias_lr"])
    assert start_genes(cfg, space) == {"warmup_momentum_ratio": 1.0, "warmup_bias_lr": 0.0}  # None: the momentum
    assert apply_genes(cfg, start_genes(cfg, space)).warmup_momentum is None
    child = apply_genes(cfg, {"warmup_momentum_ratio": 0.8, "warmup_bias_lr": 0.02}).finalize()
    assert (child.warmup_momentum, child.warmup_bias_lr) == (round(0.8 * 0.937, 10), 0.02)
    assert cfg.warmup_momentum is None


def test_every_numeric_augmentation_field_is_a_gene():
    assert set(AUGMENTATION) <= set(EVOLVE_SPACE)
    child = apply_genes(BaseConfig(), {"mosaic_off_epochs": 2.4, "min_box_size": 3.5, "min_visibility": 0.2})
    assert child.mosaic_off_epochs == 2 and isinstance(child.mosaic_off_epochs, int)  # whole epochs
    assert (child.min_box_size, child.min_visibility) == (3.5, 0.2)
    child.finalize()


def test_every_gene_that_may_be_0_has_a_start_value_inside_its_bounds():
    for gene, (gain, low, high) in EVOLVE_SPACE.items():
        if low == 0:
            assert gene in ZERO_START, gene
    for gene, value in ZERO_START.items():
        assert EVOLVE_SPACE[gene][1] < value <= EVOLVE_SPACE[gene][2], gene


def test_a_gene_at_0_mutates_from_its_start_value():
    space = {k: EVOLVE_SPACE[k] for k in ("lr", "mosaic_prob", "warmup_bias_lr")}
    start = {"lr": 2e-3, "mosaic_prob": 0.0, "warmup_bias_lr": 0.0}

    def trial(genes, generation):
        value = math.exp(-(genes["mosaic_prob"] - 0.5) ** 2 - math.log(genes["lr"] / 4e-3) ** 2)
        return {"map50": value, "map": value}, {}

    history = run_search(space, start, trial, 30, 0)
    assert history[0].genes == start  # generation 1: the config as it is
    moved = [r.genes["mosaic_prob"] for r in history[1:] if history[r.parent - 1].genes["mosaic_prob"] == 0
             and r.genes["mosaic_prob"] > 0]
    assert moved and all(0.3 * ZERO_START["mosaic_prob"] <= v <= 3 * ZERO_START["mosaic_prob"] for v in moved)
    assert max(r.genes["warmup_bias_lr"] for r in history) > 0


def test_the_search_logs_the_start_value_of_a_zero_gene_instead_of_a_warning(tmp_path, monkeypatch):
    from yolo.tasks import evolve as command

    def fake_train_trial(base, genes, trial_dir, report=None, mlflow_parent=None):
        trial_dir.mkdir(parents=True)
        return {"map50": 0.1, "map": 0.05}, {"time_s": 0.0, "trial": str(trial_dir)}

    monkeypatch.setattr(command, "train_trial", fake_train_trial)
    cfg = BaseConfig()
    cfg.runs_dir, cfg.run_name, cfg.evolve_generations, cfg.evolve_params = str(tmp_path), "z", 2, "lr,mosaic_prob"
    cfg.evolve_confirm_seeds = 0
    command.run(cfg.finalize())
    text = (tmp_path / "z_evolve" / "log.txt").read_text()
    assert "multiplicative mutation keeps them there" not in text
    assert "mosaic_prob" in text and f"from {ZERO_START['mosaic_prob']}" in text


@pytest.mark.parametrize("field", ["mosaic_off_epochs", "min_box_size", "min_visibility", "warmup_bias_lr"])
def test_new_genes_keep_their_config_rule_inside_the_bounds(field):
    _, low, high = EVOLVE_SPACE[field]
    for value in (low, high):
        apply_genes(BaseConfig(), {field: value}).finalize()


def test_a_child_whose_momentum_mutates_gets_no_momentum_warmup():
    cfg = BaseConfig()  # warmup_momentum None: no momentum warmup
    space = search_space(cfg)
    child_genes = {**start_genes(cfg, space), "momentum": 0.8}  # only the momentum mutated
    child = apply_genes(cfg, child_genes).finalize()
    assert child.momentum == 0.8 and child.warmup_momentum in (None, 0.8)


def test_the_warmup_momentum_gene_is_a_ratio_of_the_childs_momentum():
    cfg = BaseConfig()
    cfg.warmup_momentum = 0.8  # 0.8 / 0.937 of the momentum
    space = search_space(cfg, ["momentum", "warmup_momentum_ratio"])
    genes = start_genes(cfg, space)
    assert genes["warmup_momentum_ratio"] == pytest.approx(0.8 / 0.937, abs=1e-5)
    assert apply_genes(cfg, genes).warmup_momentum == pytest.approx(0.8, abs=1e-5)
    child = apply_genes(cfg, {**genes, "momentum": 0.9}).finalize()
    assert child.warmup_momentum == pytest.approx(0.9 * 0.8 / 0.937, abs=1e-5) and child.warmup_momentum < 0.9


def test_a_warmup_momentum_ratio_of_momentum_0_is_refused():
    cfg = BaseConfig()
    cfg.momentum, cfg.warmup_momentum = 0.0, 0.5
    with pytest.raises(ValueError, match="warmup_momentum_ratio"):
        start_genes(cfg, search_space(cfg, ["warmup_momentum_ratio"]))
