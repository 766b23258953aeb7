"""The search space of research/evolve.py handed to Ray Tune: a searcher (Optuna's TPE, or random) proposes the genes,
an ASHA scheduler stops trials that fall behind at an epoch, and the trials run in parallel on a Ray cluster.

    ray start --head                              # on the first machine (prints its address)
    ray start --address 10.0.0.1:6379             # on every other machine
    python main.py --task evolve --evolve_backend ray --evolve_ray_address auto

Ray and Optuna are optional: they are imported only here, when a search asks for them. Each Ray worker imports
this project from the folder the search was started in and trains there, so on a cluster every machine needs the
project (and the data) at the same path, and runs_dir on a shared filesystem (trial folders, best.pt).
TPE: Bergstra et al., "Algorithms for Hyper-Parameter Optimization" (2011); ASHA: Li et al., "A System for
Massively Parallel Hyperparameter Tuning" (2020).
"""
import os
from pathlib import Path

from loguru import logger

from .evolve import Result, fitness, round_value

INSTALL = 'pip install "ray[tune]" optuna'


def import_ray(searcher):
    """(ray, ray.tune, the searcher's module) or a ValueError saying what to install."""
    try:
        import ray
        from ray import tune
        if searcher == "optuna":
            import optuna  # noqa: F401  (OptunaSearch needs it)
            from ray.tune.search.optuna import OptunaSearch
            return ray, tune, OptunaSearch
        from ray.tune.search import BasicVariantGenerator
        return ray, tune, BasicVariantGenerator
    except ImportError as e:
        raise ValueError(f"config field 'evolve_backend' = 'ray' needs Ray Tune and Optuna ({e.name} is missing): "
                         f"{INSTALL}") from None


def param_space(space, tune):
    """Genes of gain > 0 as Tune distributions in their bounds (log-uniform across two decades or more)."""
    return {g: tune.loguniform(low, high) if low > 0 and high / low >= 100 else tune.uniform(low, high)
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
    if cfg.evolve_ray_searcher == "optuna":
        import optuna

        searcher = searcher_class(points_to_evaluate=[first], sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    else:
        searcher = searcher_class(points_to_evaluate=[first], random_state=cfg.seed)
    scheduler = None
    if cfg.evolve_asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(max_t=cfg.epochs, grace_period=1, reduction_factor=2)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    trainable = tune.with_resources(
        tune.with_parameters(ray_trainable, trial_fn=trial_fn, root=root, fixed=fixed, per_epoch=cfg.evolve_asha),
        {"cpu": cfg.evolve_ray_cpus, "gpu": gpus})
    tuner = tune.Tuner(
        trainable, param_space=param_space(space, tune),
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


def grid_results(grid, fixed):
    """Results of the finished trials, in the grid's order (the order Tune created the trials); trials that failed are
    logged and left out."""
    results = []
    for r in grid:
        if r.error is not None or not r.metrics or "fitness" not in r.metrics:
            logger.warning(f"a Ray trial failed and is left out: {r.error}")
            continue
        results.append(r)
    if not results:
        raise RuntimeError(f"every Ray trial failed; see {grid.experiment_path}")
    history = []
    for k, r in enumerate(results):
        genes = {**fixed, **{g: round_value(v) for g, v in r.config.items()}}  # as the trial trained them
        metrics = {m: v for m, v in r.metrics.items() if m == "map" or m.startswith(("map50", "map_"))}
        history.append(Result(k + 1, genes, metrics, fitness(metrics), None,
                              {"epochs": r.metrics.get("training_iteration"), "trial": r.metrics["trial_id"]}))
    return history
