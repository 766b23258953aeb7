"""Hyperparameter evolution: a genetic search over training fields, after YOLOv5's `--evolve` (Jocher et al.).

A *gene* is one number of the config: a field (`lr`), the zoom range as one number s for affine_scale = (1 - s,
1 + s) (`zoom`), warmup_momentum as a fraction of the child's momentum (`warmup_momentum_ratio`), or, in a multi-task
config, a per-task value (`box_weight.shapes`: the box gain of task "shapes", `task_weights.symbols`: that task's
loss weight). Each gene has a mutation gain and bounds in EVOLVE_SPACE.

    generation 1  : train the config as it is
    generation g  : parents = the best n = min(5, done) results; draw one with weights fitness - min + 1e-6
                    v = clip(gain * [u < 0.8] * N(0, 1) * U(0, 1) * 0.2 + 1, 0.3, 3.0) per gene
                    child = round(clamp(parent * v, low, high))        (drawn again until a gene changes)
    fitness       = 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95, the mean over tasks

The draws of generation g come from numpy's Generator seeded with (seed, g) and depend only on the results before
it, so the same command repeats the same search, and a search resumed from its evolve.csv continues exactly as
if it had not stopped. The mutation is multiplicative: a gene at 0 that mutates starts from its start value
(ZERO_START: mosaic_prob 0.2, ...), so fields that are off in the config can still be switched on.
Nothing here trains: `run_search` calls the trial function it is given (yolo/tasks/evolve.py trains one config).
"""
import copy
import csv
import functools
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config_checks import TASK_FIELDS

# field: (mutation gain, low, high), bounds around this project's defaults (yolo/config.py), e.g. box_weight 5.0
# evolves in [0.5, 20], lr 2e-3 (AdamW) in [1e-4, 2e-2]. A gain of 0 keeps the field fixed.
EVOLVE_SPACE = {
    "lr": (1.0, 1e-4, 2e-2),                # peak learning rate
    "final_lr_ratio": (1.0, 0.01, 0.5),     # last lr / lr
    "momentum": (0.3, 0.6, 0.98),           # SGD momentum / Adam beta1
    "weight_decay": (1.0, 0.0, 5e-3),
    "warmup_epochs": (1.0, 0.0, 3.0),
    "warmup_momentum_ratio": (0.3, 0.3, 1.0),  # warmup_momentum / momentum: 1 = no momentum warmup (None)
    "warmup_bias_lr": (1.0, 0.0, 0.1),      # biases' lr at the warmup's start (0: no bias warmup)
    "box_weight": (1.0, 0.5, 20.0),         # loss gains (default 5.0, 1.0, 0.5)
    "obj_weight": (1.0, 0.1, 5.0),
    "cls_weight": (1.0, 0.05, 5.0),
    "obj_iou_ratio": (1.0, 0.0, 1.0),       # objectness target of positives: 1 mixed with their box's IoU
    "box_size_gain": (1.0, 0.0, 2.0),       # small objects' box term up to 1 + this times a large one's
    "color_jitter": (1.0, 0.0, 0.9),        # augmentation strengths and probabilities
    "affine_translate": (1.0, 0.0, 0.45),
    "zoom": (1.0, 0.0, 0.9),                # s of affine_scale = (1 - s, 1 + s)
    "hflip_prob": (1.0, 0.0, 1.0),
    "mosaic_prob": (1.0, 0.0, 1.0),
    "mosaic_off_epochs": (1.0, 0.0, 10.0),  # whole epochs: the config gets the rounded value
    "augment_off_epochs": (1.0, 0.0, 10.0),  # whole epochs on the plain letterbox at the end, rounded too
    "min_box_size": (1.0, 0.0, 8.0),        # pixels: smaller boxes after augmentation are dropped
    "min_visibility": (1.0, 0.0, 0.9),      # boxes keeping less of their area after augmentation are dropped
    "ignore_iou_thres": (1.0, 0.3, 0.9),    # objectness: negatives overlapping a GT by more are ignored
    "match_iou_thres": (1.0, 0.1, 0.7),     # assignment: anchor-GT IoU of a positive
    "task_weights": (1.0, 0.1, 5.0),        # multi-task only: each task's loss weight
}
# evolved once per task in a multi-task config: every field a task dict may set that is a gene (through the task
# dicts), and task_weights (through cfg.task_weights)
PER_TASK = ("task_weights", *(f for f in TASK_FIELDS if f in EVOLVE_SPACE))
# a gene at 0 would stay there under a multiplicative mutation: when it mutates it starts from this value instead
# (this project's default where there is one; mosaic_prob 0.2, warmup_bias_lr 0.01 = 5x the AdamW default lr,
# mosaic_off_epochs and augment_off_epochs 1, box_size_gain 1 = YOLOv3's 2 - w h). A gene whose low bound is above 0
# starts from its low bound.
ZERO_START = {"weight_decay": 5e-4, "warmup_epochs": 1.0, "warmup_bias_lr": 0.01, "color_jitter": 0.3,
              "affine_translate": 0.1, "zoom": 0.25, "hflip_prob": 0.5, "mosaic_prob": 0.2, "mosaic_off_epochs": 1.0,
              "augment_off_epochs": 1.0, "min_box_size": 2.0, "min_visibility": 0.3, "obj_iou_ratio": 1.0,
              "box_size_gain": 1.0}
INTEGER_GENES = ("mosaic_off_epochs", "augment_off_epochs")  # the gene evolves as a number, the config gets it rounded
MUTATION_PROB, SIGMA, PARENTS = 0.8, 0.2, 5
SIGNIFICANT_DIGITS = 5


@dataclass
class Result:
    """One generation: its genes, what its trial measured, and which generation it was bred from."""
    generation: int
    genes: dict
    metrics: dict                     # map50_<task>, map_<task> (single task: map50, map)
    fitness: float
    parent: int | None = None         # None for generation 1
    # written to evolve.csv after the genes: time_s and trial (the trial folder), which read_history reads back for a
    # resumed search; a Ray trial's epochs, which confirm reads (under ASHA only trials that trained every epoch are
    # candidates; a Ray search is never resumed, so read_history skips the column)
    extra: dict = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- the search space
def search_space(cfg, params=None):
    """{gene: (gain, low, high)} for the config: `params` (names of EVOLVE_SPACE; None = all of them) with the
    PER_TASK fields split into one gene per task when cfg.tasks is set (task_weights needs tasks). `params` may
    be one comma-separated string, as the command line gives it."""
    if isinstance(params, str):
        params = [p.strip() for p in params.split(",") if p.strip()]
    names = list(EVOLVE_SPACE) if params is None else list(params)
    if not names:  # a search without genes breeds no child: refused before generation 1 trains
        raise ValueError(f"config field 'evolve_params' = {params!r} names no field to evolve; name some of "
                         f"{list(EVOLVE_SPACE)} or leave it None (all of them)")
    unknown = [n for n in names if n not in EVOLVE_SPACE]
    if unknown:
        raise ValueError(f"config field 'evolve_params': {unknown} cannot be evolved; choose from {list(EVOLVE_SPACE)}")
    space = {}
    for name in names:
        if cfg.tasks and name in PER_TASK:
            space.update({f"{name}.{t['name']}": EVOLVE_SPACE[name] for t in cfg.tasks})
        elif name == "task_weights":
            if params is not None:
                raise ValueError("config field 'evolve_params': task_weights needs a multi-task config (tasks)")
        else:
            space[name] = EVOLVE_SPACE[name]
    return space


def split_gene(gene):
    """'box_weight.shapes' -> ('box_weight', 'shapes'); 'lr' -> ('lr', None)."""
    name, _, task = gene.partition(".")
    return name, task or None


def start_genes(cfg, space):
    """The config's own value of every gene: generation 1 trains exactly the config."""
    genes = {}
    for gene in space:
        name, task = split_gene(gene)
        if name == "zoom":
            low, high = cfg.affine_scale
            genes[gene] = (high - low) / 2
        elif name == "warmup_momentum_ratio":  # None: no momentum warmup, i.e. it starts at the momentum
            genes[gene] = 1.0 if cfg.warmup_momentum is None else warmup_ratio(cfg)
        elif task is None:
            genes[gene] = float(getattr(cfg, name))
        elif name == "task_weights":
            index = [t["name"] for t in cfg.tasks].index(task)
            genes[gene] = float(cfg.task_weights[index]) if cfg.task_weights else 1.0
        else:
            spec = next(t for t in cfg.tasks if t["name"] == task)
            genes[gene] = float(spec.get(name, getattr(cfg, name)))
    return genes


def apply_genes(cfg, genes):
    """A copy of the (not yet finalized) config with the genes set; task dicts are copied, never changed."""
    cfg = copy.deepcopy(cfg)
    for gene, value in genes.items():
        name, task = split_gene(gene)
        value = round(value) if name in INTEGER_GENES else value  # round() of a float: an int
        if name == "zoom":
            # 10 decimals, not 5 digits: 1 + 0.20583 must stay 1.20583 (and 1 - 0.25 print as 0.75)
            cfg.affine_scale = (round(1 - value, 10), round(1 + value, 10))
        elif name == "warmup_momentum_ratio":
            ratio = value  # a ratio of the child's momentum, set below once every gene is
        elif task is None:
            setattr(cfg, name, value)
        elif name == "task_weights":
            names = [t["name"] for t in cfg.tasks]
            weights = list(cfg.task_weights or [1.0] * len(names))
            weights[names.index(task)] = value
            cfg.task_weights = weights
        else:
            next(t for t in cfg.tasks if t["name"] == task)[name] = value
    if "warmup_momentum_ratio" in genes:
        # a ratio, not the momentum itself: a child whose momentum mutates keeps its parent's warmup shape (none at
        # 1) instead of ramping from generation 1's momentum, possibly downward
        cfg.warmup_momentum = None if ratio == 1 else round(ratio * cfg.momentum, 10)  # 10 decimals: as zoom
    return cfg


def warmup_ratio(cfg):
    """warmup_momentum / momentum of a config that sets warmup_momentum (a ValueError when the momentum is 0)."""
    if cfg.momentum == 0:
        raise ValueError(f"config field 'warmup_momentum' = {cfg.warmup_momentum!r} with momentum 0: the gene "
                         f"warmup_momentum_ratio (warmup_momentum / momentum) cannot evolve; leave it out of "
                         f"evolve_params")
    return cfg.warmup_momentum / cfg.momentum


def config_lines(cfg, genes):
    """The genes as `self.<field> = value` lines to paste into a config's __init__ (multi-task: the task list)."""
    new = apply_genes(cfg, genes)
    names = []
    for gene in genes:
        name, task = split_gene(gene)
        name = "affine_scale" if name == "zoom" else "tasks" if task and name in TASK_FIELDS else name
        name = "warmup_momentum" if name == "warmup_momentum_ratio" else name
        if name not in names:
            names.append(name)
    return [f"self.{name} = {getattr(new, name)!r}" for name in names]


# -------------------------------------------------------------------------------------------- one generation
def fitness(metrics):
    """0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95, averaged over the tasks (keys map50[_task] and map[_task])."""
    map50 = [v for k, v in metrics.items() if k == "map50" or k.startswith("map50_")]
    map5095 = [v for k, v in metrics.items() if k == "map" or k.startswith("map_")]
    return 0.1 * float(np.mean(map50)) + 0.9 * float(np.mean(map5095))


def round_value(x):
    """Genes keep 5 significant digits (not 5 decimals, which would flatten an lr of 1e-4)."""
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


def select_parent(history, rng):
    """One of the best n = min(5, done) results, drawn with weights fitness - min + 1e-6 (ties: earlier first)."""
    ranked = sorted(history, key=lambda r: -r.fitness)[:min(PARENTS, len(history))]
    weights = np.array([r.fitness for r in ranked]) - min(r.fitness for r in ranked) + 1e-6
    return ranked[rng.choice(len(ranked), p=weights / weights.sum())]


def mutate(genes, space, rng, max_tries=1000):
    """child = round(clamp(parent * v)) with v = clip(gain * [u < 0.8] * N(0,1) * U(0,1) * 0.2 + 1, 0.3, 3);
    drawn again until the child differs from the parent (after clamping and rounding). A parent gene at 0 that
    mutates (v != 1) is replaced by its start value first (ZERO_START, else its low bound)."""
    keys = list(space)
    gains = np.array([space[k][0] for k in keys])
    parent = np.array([genes[k] for k in keys])
    starts = np.array([ZERO_START.get(split_gene(k)[0], space[k][1]) for k in keys])
    for _ in range(max_tries):
        u, normal, scale = rng.random(len(keys)), rng.standard_normal(len(keys)), rng.random()
        step = gains * (u < MUTATION_PROB) * normal * scale * SIGMA
        v = np.clip(step + 1, 0.3, 3.0)
        base = np.where((parent == 0) & (step != 0), starts, parent)
        child = {k: min(max(round_value(p * f), space[k][1]), space[k][2]) for k, p, f in zip(keys, base, v)}
        if any(child[k] != genes[k] for k in keys):
            return child
    raise ValueError(f"no mutation of {genes} changes a gene in {max_tries} draws: every evolved gene has gain 0; "
                     f"evolve other fields")


def next_child(history, space, seed, generation):
    """(genes, parent generation) of generation `generation` (>= 2), from the results of the earlier ones."""
    rng = np.random.default_rng([seed, generation])
    parent = select_parent(history, rng)
    return mutate(parent.genes, space, rng), parent.generation


def run_search(space, start, trial, generations, seed, history=(), on_result=None, progress=None):
    """Evolve until `generations` results exist. trial(genes, generation) -> metrics dict; on_result(result) is
    called after each trial (writes evolve.csv), progress(result) too. Continues `history` (a resumed search)."""
    history = list(history)
    for generation in range(len(history) + 1, generations + 1):
        genes, parent = (dict(start), None) if generation == 1 else next_child(history, space, seed, generation)
        metrics, extra = trial(genes, generation)
        result = Result(generation, genes, metrics, fitness(metrics), parent, extra or {})
        history.append(result)
        for callback in (on_result, progress):
            if callback is not None:
                callback(result)
    return history


# -------------------------------------------------------------------------------------------- evolve.csv
def write_result(path, result, space):
    """Append one generation's row (the header first); floats are written exactly (repr), so a resumed search
    reads back the numbers the parent draw of an uninterrupted one used."""
    row = {"generation": result.generation, "parent": "" if result.parent is None else result.parent,
           "fitness": repr(result.fitness), **{k: repr(float(v)) for k, v in result.metrics.items()},
           **{g: repr(result.genes[g]) for g in space}, **result.extra}
    append_csv_row(path, row)


def append_csv_row(path, row):
    """Append a dict as one CSV row (the header first, from its keys)."""
    path = Path(path)
    lines = io.StringIO(newline="")
    writer = csv.DictWriter(lines, fieldnames=list(row))
    if not path.exists():
        writer.writeheader()
    writer.writerow(row)
    # the whole file is rewritten and renamed over the old one: a search killed mid-write keeps its last good rows
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes((path.read_bytes() if path.exists() else b"") + lines.getvalue().encode())
    os.replace(tmp, path)


def read_history(path, space):
    """The results of evolve.csv. Raises ValueError when its genes are not those of `space` (another search)."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames or [], list(reader)
    metric_columns = [c for c in columns if re.fullmatch(r"map(50)?(_.+)?", c)]
    bookkeeping = ("generation", "parent", "fitness", "time_s", "trial", "epochs")
    gene_columns = [c for c in columns if c not in metric_columns and c not in bookkeeping]
    if gene_columns != list(space):
        raise ValueError(f"{path} evolves {gene_columns}, this search {list(space)}: use the same evolve_params "
                         f"(and tasks), or start a new search without --resume")
    history = []
    for k, row in enumerate(rows):
        cell = functools.partial(read_cell, path, k + 1, row)
        if row.get(None):  # csv puts the cells beyond the header under None
            raise ValueError(f"{path}: row {k + 1} has {len(row[None])} cells more than the header")
        if cell("generation", int) != k + 1:
            raise ValueError(f"{path}: row {k + 1} is generation {row['generation']}, expected {k + 1}")
        metrics = {c: cell(c, float) for c in metric_columns}
        extra = {c: row[c] for c in ("time_s", "trial") if row.get(c)}
        parent = cell("parent", int) if row.get("parent") else None
        history.append(Result(k + 1, {g: cell(g, float) for g in space}, metrics, cell("fitness", float), parent,
                              extra))
    return history


def read_cell(path, row_number, row, column, kind):
    """One cell of evolve.csv as an int or a finite float; a ValueError naming file, row and column otherwise (a
    cut-off row, a hand-edited word or NaN would break the parent draw of every later generation)."""
    text = row.get(column)
    where = f"{path}: row {row_number}, column '{column}'"
    if text is None:
        raise ValueError(f"{where} is missing (a cut-off row?)")
    if not text.strip():
        raise ValueError(f"{where} is empty")
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{where}: {text!r} is not {what}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {text!r} is not a finite number")
    return value


def best_result(history):
    """The result of the highest fitness (the earliest among equals)."""
    return max(history, key=lambda r: (r.fitness, -r.generation))
