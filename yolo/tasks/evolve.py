"""`python main.py --task evolve`: search training hyperparameters (yolo/research/evolve.py), one training per trial.

    python main.py --task evolve --evolve_generations 20 --evolve_params lr,box_weight,zoom --epochs 3
    python main.py --task evolve ... --resume true          # continue a killed search from its evolve.csv
    python main.py --task evolve --evolve_backend ray       # Ray Tune: TPE + ASHA, trials in parallel

Everything goes to runs/<run_name>_evolve/: trials/gen<k>/ (a normal training run per trial), evolve.csv (one row
per trial: genes, mAP per task, fitness), best_config.py (the best trial's genes as config lines), evolve.png and
the best trial's best.pt. Each trial trains `epochs` epochs and is evaluated once, at its end. With mlflow_uri the
search is an MLflow run (fitness per generation; the summary files at the end) and every trial a run nested in it.
"""
import copy
import functools
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

from loguru import logger
from tqdm import tqdm

from ..config import config_from_dict, task_configs
from ..data.dataset import prepare_shapes
from ..engine.folders import numbered_dirs
from ..engine.logs import setup_logging
from ..engine.mlflow_log import RUN_ID_FILE, MLflowLog
from ..engine.setup import new_run_dir
from ..engine.trainer import train
from ..research.confirm import (candidates, confirm_seeds, confirm_table, confirmed_winner, read_confirm,
                                run_confirm, write_confirm_row)
from ..research.evolve import (ZERO_START, apply_genes, best_result, config_lines, read_history, run_search,
                               search_space, split_gene, start_genes, write_result)
from ..viz.evolve import plot_evolution


def run(cfg):
    """Run the search; returns the best Result (genes, metrics, fitness)."""
    space = search_space(cfg, cfg.evolve_params)
    tracking = MLflowLog(cfg.mlflow_uri)  # asked for but not installed: stops before the search folder is made
    out_dir = search_dir(cfg)
    setup_logging(out_dir)
    tracking.start(cfg, out_dir, id_file=out_dir / RUN_ID_FILE)  # a resumed search continues its run
    try:
        best = search(cfg, space, out_dir, tracking)
        tracking.finish(out_dir, SUMMARY_FILES)
        return best
    finally:
        tracking.end()  # still open: the search ended by an exception


def search(cfg, space, out_dir, tracking):
    start = start_genes(cfg, space)
    zeros = {g: ZERO_START.get(split_gene(g)[0], space[g][1]) for g, v in start.items() if v == 0 and space[g][0] > 0}
    if zeros:
        logger.info("genes at 0 in this config mutate from a start value: "
                    + ", ".join(f"{g} from {v:g}" for g, v in zeros.items()))
    base = trial_base(cfg, asha=cfg.evolve_backend == "ray" and cfg.evolve_asha)
    logger.info(f"evolving {len(space)} genes over {cfg.evolve_generations} trials of {cfg.epochs} epochs "
                f"({cfg.evolve_backend}) in {out_dir}: {', '.join(space)}")
    if cfg.evolve_backend == "ray":
        history = ray_search(cfg, base, space, start, out_dir, tracking)
    else:
        history = genetic_search(cfg, base, space, start, out_dir, tracking)
    confirmed = confirm_search(cfg, base, history, out_dir, tracking) if cfg.evolve_confirm_seeds else None
    write_summary(cfg, space, history, out_dir, confirmed)
    best = winner_result(history, confirmed)
    lines = "\n".join(config_lines(cfg, best.genes))
    how = (f"confirmed mean fitness {confirmed_winner(confirmed).mean:.4f} over {cfg.evolve_confirm_seeds} other "
           f"seeds" if confirmed else f"fitness {best.fitness:.4f}")
    logger.info(f"best generation {best.generation} of {len(history)}: {how} (generation 1: "
                f"{history[0].fitness:.4f} in the search); {out_dir / 'best_config.py'}:\n{lines}")
    return best


def confirm_search(cfg, base, history, out_dir, tracking):
    """Generation 1 and the evolve_confirm_top best results trained again with evolve_confirm_seeds other seeds
    (yolo/research/confirm.py): confirm.csv (a row per retraining, resumed), confirm.md and the log show each
    candidate's mean and spread. Under ASHA only trials that trained every epoch are candidates."""
    path = out_dir / "confirm.csv"
    done = read_confirm(path) if path.exists() else {}
    complete = [r for r in history if not (cfg.evolve_backend == "ray" and cfg.evolve_asha)
                or int(r.extra.get("epochs") or 0) >= cfg.epochs]
    chosen = candidates(history, cfg.evolve_confirm_top, complete)
    seeds = confirm_seeds(cfg.seed, cfg.evolve_confirm_seeds)
    left = sum((r.generation, seed) not in done for r in chosen for seed in seeds)
    logger.info(f"confirming generations {[r.generation for r in chosen]} with seeds {seeds} ({left} trainings left)")

    def retrain(result, seed):
        seeded = copy.copy(base)
        seeded.seed = seed
        folder = out_dir / "confirm" / f"gen{result.generation}_seed{seed}"
        return guarded_trial(seeded, result.genes, folder, out_dir, tracking,
                             f"generation {result.generation} with seed {seed}")

    confirmed = run_confirm(chosen, seeds, retrain, done, on_row=lambda row: write_confirm_row(path, row))
    table = confirm_table(confirmed, seeds)
    (out_dir / "confirm.md").write_text(table + "\n")
    logger.info(f"confirmation (mean and spread of the fitness over seeds {seeds}; {out_dir / 'confirm.md'}):"
                f"\n{table}")
    return confirmed


def winner_result(history, confirmed):
    """The confirmed winner's Result, or without a confirmation the search's best."""
    return history[confirmed_winner(confirmed).generation - 1] if confirmed else best_result(history)


def guarded_trial(base, genes, trial_dir, out_dir, tracking, what):
    """train_trial into a fresh trial_dir (a killed one starts over); a diverged training scores 0 (a mutation can
    make training diverge: a poor result, not the search's end). The log goes back to the search's folder."""
    if trial_dir.exists():
        shutil.rmtree(trial_dir)
    tick = time.time()
    try:
        metrics, extra = train_trial(base, genes, trial_dir, mlflow_parent=tracking.run_id)
    except FloatingPointError as e:
        metrics = trial_metrics(defaultdict(float), base.task_names)  # every score 0
        extra = {"time_s": round(time.time() - tick, 1), "trial": str(trial_dir)}
        setup_logging(out_dir)
        logger.warning(f"{what} diverged ({e}): fitness 0")
    setup_logging(out_dir)  # the trial's training logged to its own folder
    return metrics, extra


def genetic_search(cfg, base, space, start, out_dir, tracking):
    """One trial at a time, each bred from the best so far; evolve.csv and the summary files after every trial."""
    csv_path = out_dir / "evolve.csv"
    history = read_history(csv_path, space) if csv_path.exists() else []
    if history:
        logger.info(f"resuming {csv_path}: {len(history)} generations done, best fitness "
                    f"{best_result(history).fitness:.4f}")
        if any(history[0].genes[g] != v for g, v in start.items()):
            logger.warning(f"this config's values differ from generation 1 of {csv_path}: the search continues "
                           f"from its own history")
    bar = tqdm(total=cfg.evolve_generations, initial=len(history), desc="evolve", unit="generation",
               dynamic_ncols=True)

    def trial(genes, generation):
        return guarded_trial(base, genes, out_dir / "trials" / f"gen{generation}", out_dir, tracking,
                             f"generation {generation}")

    def on_result(result):
        write_result(csv_path, result, space)
        history.append(result)
        write_summary(cfg, space, history, out_dir)
        tracking.log_metrics({"fitness": result.fitness, **result.metrics}, step=result.generation)
        best = best_result(history)
        bar.update(1)
        bar.set_postfix(fitness=f"{result.fitness:.4f}", best=f"{best.fitness:.4f}", best_gen=best.generation)
        logger.info(f"generation {result.generation} (parent {result.parent}): fitness {result.fitness:.4f}, "
                    f"best {best.fitness:.4f} (generation {best.generation})")

    run_search(space, start, trial, cfg.evolve_generations, cfg.seed, list(history), on_result)
    bar.close()
    return history


def ray_search(cfg, base, space, start, out_dir, tracking):
    from ..research.evolve_ray import tune_search  # imports ray and optuna, or says how to install them

    if cfg.resume:
        raise ValueError("config field 'resume': a Ray search cannot be resumed here; start a new one")
    trials_dir = (out_dir / "trials").resolve()
    # the config travels as a dict: a user's config class lives in a file Ray workers cannot import by name
    trial_fn = functools.partial(ray_trial, base.to_dict(), str(trials_dir), tracking.run_id)
    for task in task_configs(base):  # trials train at once: generate the built-in data here, not in two of them
        if task.dataset == "shapes":
            prepare_shapes(task)
    history = tune_search(space, start, trial_fn, cfg, out_dir)
    csv_path = out_dir / "evolve.csv"
    for result in history:
        result.extra["trial"] = str(trials_dir / result.extra["trial"])
        write_result(csv_path, result, space)
        tracking.log_metrics({"fitness": result.fitness, **result.metrics}, step=result.generation)
    write_summary(cfg, space, history, out_dir)
    return history


# ------------------------------------------------------------------------------------------------- one trial
def trial_base(cfg, asha=False):
    """The config every trial starts from: a training run, evaluated once at its end (every epoch under ASHA,
    which compares trials epoch by epoch), without TensorBoard or evaluation pictures."""
    base = copy.deepcopy(cfg)
    base.task, base.resume, base.resume_path, base.tensorboard = "train", False, None, False
    base.eval_artifacts = False
    base.val_interval = 1 if asha else cfg.epochs
    return base


def train_trial(base, genes, trial_dir, report=None, mlflow_parent=None):
    """Train the base config with the genes into trial_dir. Returns (metrics, extra): mAP per task of the final
    evaluation and the csv's bookkeeping. report(metrics, epoch) is called after every evaluated epoch.
    mlflow_parent: the search's MLflow run, which the trial's run nests in."""
    cfg = apply_genes(base, genes)
    cfg.runs_dir, cfg.run_name = str(Path(trial_dir).parent), Path(trial_dir).name
    cfg.finalize()
    evaluated = []

    def on_epoch(row):
        if row["map50"] == row["map50"]:  # not NaN: this epoch was evaluated
            evaluated.append(trial_metrics(row, cfg.task_names))
            if report is not None:
                report(evaluated[-1], int(row["epoch"]))

    tick = time.time()
    _, run_dir = train(cfg, on_epoch=on_epoch, mlflow_parent=mlflow_parent)
    if not evaluated:
        raise ValueError(f"trial {run_dir} made no evaluation: check its log.txt")
    return evaluated[-1], {"time_s": round(time.time() - tick, 1), "trial": str(run_dir)}


def trial_metrics(row, task_names):
    """{map50, map} of one task, or {map50_<task>, map_<task>} per task (the means over tasks left out)."""
    if len(task_names) == 1:
        return {"map50": row["map50"], "map": row["map"]}
    return {f"{k}_{name}": row[f"{k}_{name}"] for name in task_names for k in ("map50", "map")}


def ray_trial(base, trials_dir, mlflow_parent, genes, trial_name, report):
    """A trial on a Ray worker: the base config's dict with the genes, in its own folder under trials_dir (its MLflow
    run, if any, nested in mlflow_parent: the worker has no run of its own to nest in)."""
    return train_trial(config_from_dict(base), genes, Path(trials_dir) / trial_name, report, mlflow_parent)


# ------------------------------------------------------------------------------------------------- files
# the search's MLflow artifacts (those that exist: confirm.* only with evolve_confirm_seeds)
SUMMARY_FILES = ("evolve.csv", "evolve.png", "best_config.py", "best.pt", "confirm.csv", "confirm.md", "log.txt")


def search_dir(cfg):
    """A new folder runs/<run_name>_evolve (then _evolve2, ...: new_run_dir never overwrites one); --resume true:
    the newest of them."""
    search = copy.copy(cfg)
    search.run_name = f"{cfg.run_name}_evolve"
    if not cfg.resume:
        return new_run_dir(search)
    base = Path(cfg.runs_dir) / search.run_name
    found = numbered_dirs(base)  # the folders new_run_dir made: base, base2, base3 ...
    if not found or not (found[-1] / "evolve.csv").exists():
        raise FileNotFoundError(f"--resume true: no {base}*/evolve.csv to continue; start without --resume")
    return found[-1]


def write_summary(cfg, space, history, out_dir, confirmed=None):
    """best_config.py, evolve.png and a copy of the best trial's best.pt, for the results so far (the confirmed
    winner once there is a confirmation)."""
    best = winner_result(history, confirmed)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in best.metrics.items())
    header = f"# best of {len(history)} trials: generation {best.generation}, fitness {best.fitness:.4f} ({metrics})"
    if confirmed:
        c = confirmed_winner(confirmed)
        header = (f"# confirmed winner of {len(history)} trials: generation {c.generation}, mean fitness "
                  f"{c.mean:.4f} (spread {c.std:.4f}) over seeds {[r.seed for r in c.retrainings]}; "
                  f"fitness {c.search_fitness:.4f} in the search (confirm.md)")
    lines = [header, "# paste into your config's __init__ (configs/my_config.py)", *config_lines(cfg, best.genes)]
    (out_dir / "best_config.py").write_text("\n".join(lines) + "\n")
    plot_evolution(history, list(space), out_dir / "evolve.png")
    source = Path(best.extra["trial"]) / "best.pt" if "trial" in best.extra else None
    if source is not None and source.is_file():
        tmp = out_dir / f".best.pt.tmp{os.getpid()}"
        shutil.copyfile(source, tmp)
        os.replace(tmp, out_dir / "best.pt")
