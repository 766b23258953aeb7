"""Ray Tune searchers by name (evolve_ray_searcher): every installed one is built and runs a 2-trial search; one that
is not installed is a message naming the pip package; a search whose every trial fails ends with one message."""
import importlib.util
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT
from yolo.config import BaseConfig
from yolo.config_checks import ALLOWED, RAY_SEARCHERS
from yolo.research.evolve import EVOLVE_SPACE

SPACE = {k: EVOLVE_SPACE[k] for k in ("lr", "box_weight", "zoom")}
START = {"lr": 2e-3, "box_weight": 5.0, "zoom": 0.25}
PACKAGE_MODULES = {"optuna": "optuna", "hyperopt": "hyperopt", "bayesopt": "bayes_opt", "hebo": "hebo",
                   "nevergrad": "nevergrad", "ax": "ax"}


def installed(name):
    return name == "random" or importlib.util.find_spec(PACKAGE_MODULES[name]) is not None


INSTALLED = [name for name in ALLOWED["evolve_ray_searcher"] if installed(name)]


def test_every_searcher_is_a_config_choice_with_its_package():
    assert set(ALLOWED["evolve_ray_searcher"]) == {"random", *RAY_SEARCHERS}
    assert {"optuna", "hyperopt", "bayesopt", "hebo", "nevergrad"} <= set(RAY_SEARCHERS)
    assert set(PACKAGE_MODULES) == set(RAY_SEARCHERS)
    cfg = BaseConfig()
    cfg.evolve_ray_searcher = "smac"
    with pytest.raises(ValueError, match="config field 'evolve_ray_searcher'"):
        cfg.finalize()


@pytest.mark.parametrize("name", sorted(RAY_SEARCHERS))
def test_a_missing_searcher_package_is_named(monkeypatch, name):
    pytest.importorskip("ray.tune")
    from yolo.research.evolve_ray import import_ray

    monkeypatch.setitem(sys.modules, PACKAGE_MODULES[name], None)  # as if it were not installed
    package = RAY_SEARCHERS[name]
    with pytest.raises(ValueError, match=rf"'evolve_ray_searcher' = '{name}' needs .*pip install {package}"):
        import_ray(name)


def test_missing_ray_is_named(monkeypatch):
    from yolo.research.evolve_ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ValueError, match=r'needs Ray Tune .*pip install "ray\[tune\]" hyperopt'):
        import_ray("hyperopt")
    with pytest.raises(ValueError, match=r'needs Ray Tune .*pip install "ray\[tune\]"$'):
        import_ray("random")


@pytest.mark.parametrize("name", INSTALLED)
def test_the_factory_builds_each_installed_searcher(name):
    tune = pytest.importorskip("ray.tune")
    from yolo.research.evolve_ray import import_ray, make_searcher, param_space

    _, _, searcher_class = import_ray(name)
    searcher = make_searcher(name, searcher_class, dict(START), seed=3)
    assert type(searcher).__name__ == searcher_class.__name__
    assert param_space(SPACE, tune)  # the space it will be given


def test_a_search_whose_every_trial_failed_is_one_message():
    from yolo.research.evolve_ray import grid_results

    def failed(k):
        return SimpleNamespace(error=RuntimeError(f"Traceback ...\n  File x\nFloatingPointError: loss is nan {k}"),
                               metrics={}, config={})

    with pytest.raises(ValueError) as e:
        grid_results([failed(1), failed(2)], {}, experiment_path="/runs/x_evolve/ray")
    message = str(e.value)
    assert "\n" not in message and "every one of the 2 Ray trials failed" in message
    assert "FloatingPointError: loss is nan 1" in message and "/runs/x_evolve/ray" in message


# ------------------------------------------------------------------------------------------------- with Ray
def fake_trial(genes, trial_name, report):
    value = 1 / (1 + abs(genes["lr"] - 4e-3) * 100 + abs(genes["box_weight"] - 8) / 10)
    return {"map50": value, "map": value / 2}, {}


def failing_trial(genes, trial_name, report):
    raise FloatingPointError("loss is not finite")


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    # the fake trials live in this test module, which the workers cannot import: Ray ships them by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    except Exception as e:  # an overloaded machine: Ray's agents take longer to start than the raylet waits
        if "timed out during startup" in str(e):
            pytest.skip(f"Ray could not start on this machine: {e}")
        raise
    yield ray
    ray.shutdown()


def search_config(tmp_path, searcher):
    cfg = BaseConfig()
    cfg.evolve_ray_searcher, cfg.evolve_generations, cfg.evolve_asha = searcher, 2, False
    cfg.evolve_ray_concurrency, cfg.epochs = 1, 1
    return cfg.finalize()


@pytest.mark.slow  # starts Ray (10-60 s)
@pytest.mark.parametrize("name", INSTALLED)
def test_each_installed_searcher_runs_a_two_trial_search(local_ray, tmp_path, name, monkeypatch):
    from yolo.research.evolve_ray import tune_search

    monkeypatch.chdir(ROOT)
    history = tune_search(SPACE, START, fake_trial, search_config(tmp_path, name), tmp_path)
    assert len(history) == 2 and history[0].genes == START  # the config's own values first
    for result in history:
        assert result.fitness > 0
        for gene, (_, low, high) in SPACE.items():
            assert low <= result.genes[gene] <= high


@pytest.mark.slow
def test_a_ray_search_whose_trials_all_fail_ends_with_one_message(local_ray, tmp_path, monkeypatch):
    from yolo.research.evolve_ray import tune_search

    monkeypatch.chdir(ROOT)
    with pytest.raises(ValueError, match="every one of the 2 Ray trials failed.*loss is not finite"):
        tune_search(SPACE, START, failing_trial, search_config(tmp_path, "random"), tmp_path)
