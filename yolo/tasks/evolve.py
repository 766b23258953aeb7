"""`python main.py --task evolve`: search training hyperparameters (yolo/research/evolve.py), one training per trial.

    python main.py --task evolve --evolve_generations 20 --evolve_params lr,box_weight,zoom --epochs 3
    python main.py --task evolve ... --resume true          # continue a killed search from its evolve.csv
    python main.py --task evolve --evolve_backend ray       # Ray Tune: TPE + ASHA, trials in parallel

Everything goes to runs/<run_name>_evolve/: trials/gen<k>/ (a normal training run per trial), evolve.csv (one row
per trial: genes, mAP per task, fitness), best_config.py (the best trial's genes as config lines), evolve.png and
the best trial's best.pt. Each trial trains `epochs` epochs and is evaluated once, at its end.
"""
import copy
import functools
import os
import re
import shutil
import time
from collections import defaultdict
from pathlib import Path

from loguru import logger
from tqdm import tqdm

from ..config import config_from_dict
from ..engine.logs import setup_logging
from ..engine.setup import new_run_dir
from ..engine.trainer import train
from ..research.evolve import (apply_genes, best_result, config_lines, read_history, run_search, search_space, start_genes,
                      write_result)
from ..viz.evolve import plot_evolution


def run(cfg):
    """Run the search; returns the best Result (genes, metrics, fitness)."""
    space = search_space(cfg, cfg.evolve_params)
    out_dir = search_dir(cfg)
    setup_logging(out_dir)
    start = start_genes(cfg, space)
    zeros = [g for g, v in start.items() if v == 0 and space[g][0] > 0]
    if zeros:
        logger.warning(f"{zeros} start at 0 and a multiplicative mutation keeps them there: give them a start value "
                       f"to evolve them")
    base = trial_base(cfg, asha=cfg.evolve_backend == "ray" and cfg.evolve_asha)
    logger.info(f"evolving {len(space)} genes over {cfg.evolve_generations} trials of {cfg.epochs} epochs "
                f"({cfg.evolve_backend}) in {out_dir}: {', '.join(space)}")
    if cfg.evolve_backend == "ray":
        history = ray_search(cfg, base, space, start, out_dir)
    else:
        history = genetic_search(cfg, base, space, start, out_dir)
    best = best_result(history)
    lines = "\n".join(config_lines(cfg, best.genes))
    logger.info(f"best generation {best.generation} of {len(history)}: fitness {best.fitness:.4f} (generation 1: "
                f"{history[0].fitness:.4f}); {out_dir / 'best_config.py'}:\n{lines}")
    return best


def genetic_search(cfg, base, space, start, out_dir):
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
        trial_dir = out_dir / "trials" / f"gen{generation}"
        if trial_dir.exists():  # a killed trial of this search: it starts over
            shutil.rmtree(trial_dir)
        tick = time.time()
        try:
            metrics, extra = train_trial(base, genes, trial_dir)
        except FloatingPointError as e:  # a mutation can make training diverge: a poor result, not the search's end
            metrics = trial_metrics(defaultdict(float), cfg.task_names)  # every score 0
            extra = {"time_s": round(time.time() - tick, 1), "trial": str(trial_dir)}
            setup_logging(out_dir)
            logger.warning(f"generation {generation} diverged ({e}): fitness 0")
        setup_logging(out_dir)  # the trial's training logged to its own folder
        return metrics, extra

    def on_result(result):
        write_result(csv_path, result, space)
        history.append(result)
        write_summary(cfg, space, history, out_dir)
        best = best_result(history)
        bar.update(1)
        bar.set_postfix(fitness=f"{result.fitness:.4f}", best=f"{best.fitness:.4f}", best_gen=best.generation)
        logger.info(f"generation {result.generation} (parent {result.parent}): fitness {result.fitness:.4f}, "
                    f"best {best.fitness:.4f} (generation {best.generation})")

    run_search(space, start, trial, cfg.evolve_generations, cfg.seed, list(history), on_result)
    bar.close()
    return history


def ray_search(cfg, base, space, start, out_dir):
    from ..research.evolve_ray import tune_search  # imports ray and optuna, or says how to install them

    if cfg.resume:
        raise ValueError("config field 'resume': a Ray search cannot be resumed here; start a new one")
    trials_dir = (out_dir / "trials").resolve()
    # the config travels as a dict: a user's config class lives in a file Ray workers cannot import by name
    trial_fn = functools.partial(ray_trial, base.to_dict(), str(trials_dir))
    history = tune_search(space, start, trial_fn, cfg, out_dir)
    csv_path = out_dir / "evolve.csv"
    for result in history:
        result.extra["trial"] = str(trials_dir / result.extra["trial"])
        write_result(csv_path, result, space)
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


def train_trial(base, genes, trial_dir, report=None):
    """Train the base config with the genes into trial_dir. Returns (metrics, extra): mAP per task of the final
    evaluation and the csv's bookkeeping. report(metrics, epoch) is called after every evaluated epoch."""
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
    _, run_dir = train(cfg, on_epoch=on_epoch)
    if not evaluated:
        raise ValueError(f"trial {run_dir} made no evaluation: check its log.txt")
    return evaluated[-1], {"time_s": round(time.time() - tick, 1), "trial": str(run_dir)}


def trial_metrics(row, task_names):
    """{map50, map} of one task, or {map50_<task>, map_<task>} per task (the means over tasks left out)."""
    if len(task_names) == 1:
        return {"map50": row["map50"], "map": row["map"]}
    return {f"{k}_{name}": row[f"{k}_{name}"] for name in task_names for k in ("map50", "map")}


def ray_trial(base, trials_dir, genes, trial_name, report):
    """A trial on a Ray worker: the base config's dict with the genes, in its own folder under trials_dir."""
    return train_trial(config_from_dict(base), genes, Path(trials_dir) / trial_name, report)


# ------------------------------------------------------------------------------------------------- files
def search_dir(cfg):
    """A new folder runs/<run_name>_evolve (then _evolve2, ...: new_run_dir never overwrites one); --resume true:
    the newest of them."""
    search = copy.copy(cfg)
    search.run_name = f"{cfg.run_name}_evolve"
    if not cfg.resume:
        return new_run_dir(search)
    base = Path(cfg.runs_dir) / search.run_name
    pattern = re.compile(re.escape(base.name) + r"(\d*)")
    found = sorted((int(m.group(1) or 1), p) for p in base.parent.glob(f"{base.name}*")
                   if (m := pattern.fullmatch(p.name)) and p.is_dir())
    if not found or not (found[-1][1] / "evolve.csv").exists():
        raise FileNotFoundError(f"--resume true: no {base}*/evolve.csv to continue; start without --resume")
    return found[-1][1]


def write_summary(cfg, space, history, out_dir):
    """best_config.py, evolve.png and a copy of the best trial's best.pt, for the results so far."""
    best = best_result(history)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in best.metrics.items())
    lines = [f"# best of {len(history)} trials: generation {best.generation}, fitness {best.fitness:.4f} "
             f"({metrics})", "# paste into your config's __init__ (configs/my_config.py)",
             *config_lines(cfg, best.genes)]
    (out_dir / "best_config.py").write_text("\n".join(lines) + "\n")
    plot_evolution(history, list(space), out_dir / "evolve.png")
    source = Path(best.extra["trial"]) / "best.pt" if "trial" in best.extra else None
    if source is not None and source.is_file():
        tmp = out_dir / f".best.pt.tmp{os.getpid()}"
        shutil.copyfile(source, tmp)
        os.replace(tmp, out_dir / "best.pt")
