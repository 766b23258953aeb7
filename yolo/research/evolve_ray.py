"""The search space of research/evolve.py handed to Ray Tune: a searcher (any of Ray Tune's that is installed, by name:
optuna's TPE, hyperopt, bayesopt, hebo, nevergrad, ax; or random) proposes the genes, an ASHA scheduler stops trials
that fall behind at an epoch, and the trials run in parallel on a Ray cluster.

    ray start --head                              # on the first machine (prints its address)
    ray start --address 10.0.0.1:6379             # on every other machine
    python main.py --task evolve --evolve_backend ray --evolve_ray_address auto

Ray and the searchers' packages are optional: they are imported only here, when a search asks for them. Each Ray
worker imports this project from the folder the search was started in and trains there, so on a cluster every
machine needs the project (and the data) at the same path, and runs_dir on a shared filesystem (trial folders,
best.pt).
TPE: Bergstra et al., "Algorithms for Hyper-Parameter Optimization" (2011); ASHA: Li et al., "A System for
Massively Parallel Hyperparameter Tuning" (2020).
"""
import importlib
import inspect
import os
from pathlib import Path

from loguru import logger

from ..config_checks import RAY_SEARCHERS
from .evolve import Result, fitness, round_value

# searcher: (module of its Ray Tune class, the class, the module its package installs (RAY_SEARCHERS names the
# package), its name in messages)
SEARCHERS = {
    "random": ("ray.tune.search", "BasicVariantGenerator", None, "random search"),
    "optuna": ("ray.tune.search.optuna", "OptunaSearch", "optuna", "Optuna"),
    "hyperopt": ("ray.tune.search.hyperopt", "HyperOptSearch", "hyperopt", "HyperOpt"),
    "bayesopt": ("ray.tune.search.bayesopt", "BayesOptSearch", "bayes_opt", "BayesOpt"),
    "hebo": ("ray.tune.search.hebo", "HEBOSearch", "hebo", "HEBO"),
    "nevergrad": ("ray.tune.search.nevergrad", "NevergradSearch", "nevergrad", "Nevergrad"),
    "ax": ("ray.tune.search.ax", "AxSearch", "ax", "Ax"),
}
NO_LOG_SCALE = ("bayesopt",)  # samples every gene uniformly (Ray would drop the log scale with a warning)


def import_ray(searcher):
    """(ray, ray.tune, the searcher's Ray Tune class) or a ValueError naming what to pip install."""
    module, class_name, package_module, label = SEARCHERS[searcher]
    package = RAY_SEARCHERS.get(searcher)
    try:
        import ray
        from ray import tune
    except ImportError as e:
        also = f" and {label}" if package else ""
        raise ValueError(f"config field 'evolve_backend' = 'ray' needs Ray Tune{also} ({e.name} is missing): "
                         f"pip install \"ray[tune]\"{' ' + package if package else ''}") from None
    if package_module is not None:
        try:
            importlib.import_module(package_module)
        except ImportError:
            raise ValueError(f"config field 'evolve_ray_searcher' = '{searcher}' needs {label} ({package_module} is "
                             f"missing): pip install {package}") from None
    return ray, tune, getattr(importlib.import_module(module), class_name)


def make_searcher(name, searcher_class, first, seed):
    """The searcher `name`, seeded where it takes a seed (nevergrad and ax do not), whose first trial is `first`."""
    kwargs = {"points_to_evaluate": [first]}
    if name == "optuna":
        import optuna

        kwargs["sampler"] = optuna.samplers.TPESampler(seed=seed)
    elif name == "nevergrad":
        import nevergrad

        kwargs["optimizer"] = nevergrad.optimizers.NGOpt  # nevergrad's own choice of optimizer for the problem
    else:
        accepted = inspect.signature(searcher_class).parameters
        kwargs.update({arg: seed for arg in ("random_state", "random_state_seed", "seed") if arg in accepted})
    return searcher_class(**kwargs)


def param_space(space, tune, log_scale=True):
    """Genes of gain > 0 as Tune distributions in their bounds (log-uniform across two decades or more)."""
    return {g: tune.loguniform(low, high) if log_scale and low > 0 and high / low >= 100 else tune.uniform(low, high)
            for g, (gain, low, high) in space.items() if gain > 0}


def clamp_to_space(genes, space):
    return {g: min(max(v, space[g][1]), space[g][2]) for g, v in genes.items()}


def tune_search(space, start, trial_fn, cfg, out_dir):
    """Run cfg.evolve_generations trials; the first trains the config's own values (clamped to the bounds). trial_fn
    (genes, trial name, report or None) -> (metrics, extra) trains one trial; report(metrics, epoch) per evaluated
    epoch feeds ASHA. Returns the results in the order the trials were created."""
    ray, tune, searcher_class = import_ray(cfg.evolve_ray_searcher)
    root = str(Path.cwd().resolve())
    started = not ray.is_initialized()
    if started:  # workers import this project from the folder the search runs in
        ray.init(address=cfg.evolve_ray_address, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root, "NO_ALBUMENTATIONS_UPDATE": "1"}})
    try:
        return run_tuner(ray, tune, searcher_class, space, start, trial_fn, cfg, Path(out_dir).resolve(), root)
    finally:
        if started:
            ray.shutdown()


def run_tuner(ray, tune, searcher_class, space, start, trial_fn, cfg, out_dir, root):
    first = clamp_to_space({g: v for g, v in start.items() if space[g][0] > 0}, space)
    fixed = {g: v for g, v in start.items() if space[g][0] == 0}
    searcher = make_searcher(cfg.evolve_ray_searcher, searcher_class, first, cfg.seed)
    scheduler = None
    if cfg.evolve_asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(max_t=cfg.epochs, grace_period=1, reduction_factor=2)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    trainable = tune.with_resources(
        tune.with_parameters(ray_trainable, trial_fn=trial_fn, root=root, fixed=fixed, per_epoch=cfg.evolve_asha),
        {"cpu": cfg.evolve_ray_cpus, "gpu": gpus})
    tuner = tune.Tuner(
        trainable, param_space=param_space(space, tune, cfg.evolve_ray_searcher not in NO_LOG_SCALE),
        tune_config=tune.TuneConfig(metric="fitness", mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=cfg.evolve_generations,
                                    max_concurrent_trials=cfg.evolve_ray_concurrency),
        run_config=tune.RunConfig(name="ray", storage_path=str(out_dir), verbose=1))
    logger.info(f"Ray Tune: {cfg.evolve_generations} trials, {cfg.evolve_ray_concurrency} at a time, "
                f"{cfg.evolve_ray_searcher} searcher, ASHA {'on' if cfg.evolve_asha else 'off'}, "
                f"{cfg.evolve_ray_cpus} CPU and {gpus} GPU per trial; Ray's files in {out_dir / 'ray'}")
    grid = tuner.fit()
    return grid_results(grid, fixed)


def ray_trainable(params, trial_fn, root, fixed, per_epoch):
    """One trial on a Ray worker: train the genes, report the fitness (every evaluated epoch under ASHA)."""
    from ray import tune

    os.chdir(root)  # Tune starts each trial in its own folder; the config's relative paths mean the project's
    genes = {**fixed, **{g: round_value(v) for g, v in params.items()}}
    name = tune.get_context().get_trial_id()

    def report(metrics, epoch):
        tune.report({"fitness": fitness(metrics), "epoch": epoch, **metrics})

    metrics, extra = trial_fn(genes, name, report if per_epoch else None)
    if not per_epoch:
        report(metrics, None)


def grid_results(grid, fixed, experiment_path=None):
    """Results of the finished trials, in the grid's order (the order Tune created the trials); trials that failed are
    logged and left out. When every trial failed: one ValueError with the count and the first trial's error."""
    results, errors = [], []
    for r in grid:
        if r.error is not None or not r.metrics or "fitness" not in r.metrics:
            errors.append(last_line(r.error))
            logger.warning(f"a Ray trial failed and is left out: {errors[-1]}")
            continue
        results.append(r)
    if not results:
        where = experiment_path or getattr(grid, "experiment_path", None)
        raise ValueError(f"every one of the {len(errors)} Ray trials failed; the first: {errors[0] if errors else '?'}"
                         f"; their logs are in {where}")
    history = []
    for k, r in enumerate(results):
        genes = {**fixed, **{g: round_value(v) for g, v in r.config.items()}}  # as the trial trained them
        metrics = {m: v for m, v in r.metrics.items() if m == "map" or m.startswith(("map50", "map_"))}
        history.append(Result(k + 1, genes, metrics, fitness(metrics), None,
                              {"epochs": r.metrics.get("training_iteration"), "trial": r.metrics["trial_id"]}))
    return history


def last_line(error):
    """The last non-empty line of a trial's error (a Ray error is a whole traceback: its last line says what)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else "no result reported"
