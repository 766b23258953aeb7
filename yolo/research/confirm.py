"""Noise-aware selection for evolve: train generation 1 and the best results of a search again with other seeds, and
let the mean of those retrainings pick the winner.

A trial's fitness is one draw of a noisy score: another seed (initial weights, batch order, augmentation) moves it.
The best of many such draws is mostly the luckiest one (the winner's curse), so its search fitness overstates it.
Here the candidates (generation 1 as the reference, and the `top` best results) are trained again with `seeds`
(the config's seed + 1, + 2, ...). Their search fitness is left out of the mean: it is why a candidate was picked,
so it is biased upwards; the fresh retrainings are not.

    winner = argmax over candidates of mean(fitness of the retrainings)       (the earliest generation among equals)
    spread = standard deviation of those retrainings (sample, n - 1)

Nothing here trains: `run_confirm` calls the retrain function it is given (yolo/tasks/evolve.py trains a config).
confirm.csv holds one row per retraining, written as each finishes, so a killed confirmation resumes.
"""
import csv
import functools
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .evolve import append_csv_row, fitness, read_cell

METRIC_PREFIXES = ("map50", "map_")


@dataclass
class Retraining:
    """One candidate trained again with another seed."""
    generation: int
    seed: int
    metrics: dict
    fitness: float
    extra: dict = field(default_factory=dict)  # time_s, trial folder


@dataclass
class Confirmed:
    """A candidate, its fitness in the search and in every retraining."""
    generation: int
    search_fitness: float
    retrainings: list

    @property
    def mean(self):
        return statistics.fmean(r.fitness for r in self.retrainings)

    @property
    def std(self):
        values = [r.fitness for r in self.retrainings]
        return statistics.stdev(values) if len(values) > 1 else float("nan")


def confirm_seeds(seed, count):
    """The seeds of the retrainings: seed + 1, ..., seed + count (the search itself trained with `seed`)."""
    return [seed + k for k in range(1, count + 1)]


def candidates(history, top, eligible=None):
    """Generation 1 (the reference every gain is measured against), then the `top` best results of `eligible` (default:
    all) by search fitness, best first, each once."""
    ranked = sorted(eligible if eligible is not None else history, key=lambda r: (-r.fitness, r.generation))[:top]
    return [history[0], *(r for r in ranked if r.generation != history[0].generation)]


def run_confirm(chosen, seeds, retrain, done=None, on_row=None):
    """Retrain every chosen Result with every seed; retrain(result, seed) -> (metrics, extra). done: {(generation,
    seed): Retraining} already made (a resumed confirmation: not trained again). on_row(retraining) after each new
    one. Returns one Confirmed per chosen result, in their order."""
    done = dict(done or {})
    confirmed = []
    for result in chosen:
        for seed in seeds:
            if (result.generation, seed) not in done:
                metrics, extra = retrain(result, seed)
                row = Retraining(result.generation, seed, metrics, fitness(metrics), extra or {})
                done[(result.generation, seed)] = row
                if on_row is not None:
                    on_row(row)
        confirmed.append(Confirmed(result.generation, result.fitness,
                                   [done[(result.generation, seed)] for seed in seeds]))
    return confirmed


def confirmed_winner(confirmed):
    """The candidate of the highest mean over its retrainings (the earliest generation among equals)."""
    return max(confirmed, key=lambda c: (c.mean, -c.generation))


def confirm_table(confirmed, seeds):
    """A markdown table: every candidate's search fitness, each retraining, their mean and spread; winner in bold."""
    winner = confirmed_winner(confirmed)
    lines = ["| generation | search fitness | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean | spread (sd) | mAP@0.5 (mean) |",
             "| --- | --- | " + " | ".join("---" for _ in seeds) + " | --- | --- | --- |"]
    for c in confirmed:
        map50 = statistics.fmean(statistics.fmean(v for k, v in r.metrics.items() if k == "map50"
                                                  or k.startswith("map50_")) for r in c.retrainings)
        mean = f"**{c.mean:.4f}**" if c is winner else f"{c.mean:.4f}"
        lines.append(f"| {c.generation} | {c.search_fitness:.4f} | "
                     + " | ".join(f"{r.fitness:.4f}" for r in c.retrainings)
                     + f" | {mean} | {c.std:.4f} | {map50:.3f} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- confirm.csv
def write_confirm_row(path, row):
    """Append one retraining's row to confirm.csv (the header first); floats exactly (repr)."""
    append_csv_row(path, {"generation": row.generation, "seed": row.seed, "fitness": repr(row.fitness),
                          **{k: repr(float(v)) for k, v in row.metrics.items()}, **row.extra})


def read_confirm(path):
    """{(generation, seed): Retraining} of confirm.csv; a bad cell is a ValueError naming file, row and column."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames or [], list(reader)
    metric_columns = [c for c in columns if c == "map" or c.startswith(METRIC_PREFIXES)]
    done = {}
    for k, row in enumerate(rows):
        cell = functools.partial(read_cell, path, k + 1, row)
        if row.get(None):
            raise ValueError(f"{path}: row {k + 1} has {len(row[None])} cells more than the header")
        metrics = {c: cell(c, float) for c in metric_columns}
        retraining = Retraining(cell("generation", int), cell("seed", int), metrics, cell("fitness", float),
                                {c: row[c] for c in ("time_s", "trial") if row.get(c)})
        done[(retraining.generation, retraining.seed)] = retraining
    return done
