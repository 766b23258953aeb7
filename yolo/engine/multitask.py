"""The multi-task pieces of the training loop: which tasks each step trains (config task_sampling), their batches,
the weighted sum of the task losses, and the metrics.csv columns of the epoch and of a per-task evaluation. (The
shared-gradient averaging is in trainer.optimizer_update; the model side -- shared and copied neck blocks -- in
yolo/models/neck.py.)

task_sampling:
    all           every step one batch of every task; an epoch lasts as long as the longest task's pass
    proportional  every step one task's batch, the task drawn with probability proportional to its batches per pass
                  (its images / its batch size), so each task makes about one pass per epoch; an epoch is the sum
                  of all tasks' passes
    balanced      the same with every task equally likely (a small task is seen as often as a large one)
A task whose loader runs out starts a new pass. The draw of step s of epoch e comes from (seed, e, s) alone: every
DDP process trains the same task at every step (DDP needs the same parameters used everywhere), and a resumed run
repeats it.
"""
import math

import numpy as np

from .distributed import unwrap

DRAW_STREAM = 7       # keeps the task draws' generator apart from the other (seed, epoch, ...) streams
PASS_STRIDE = 100_003  # a later pass p of one epoch reseeds a seeded sampler with epoch + p * PASS_STRIDE


def steps_per_epoch(batches_per_pass, sampling):
    """Steps of one epoch: the longest task's pass for "all", the sum of the tasks' passes when each step trains one
    task. batches_per_pass: len() of each task's training loader."""
    if sampling == "all" or len(batches_per_pass) == 1:
        return max(batches_per_pass)
    return sum(batches_per_pass)


def task_schedule(batches_per_pass, sampling, seed, epoch):
    """The tasks each step of epoch `epoch` trains: a list of tuples of task indices, one per step (module doc)."""
    steps, num_tasks = steps_per_epoch(batches_per_pass, sampling), len(batches_per_pass)
    if sampling == "all" or num_tasks == 1:
        return [tuple(range(num_tasks))] * steps
    weights = np.asarray(batches_per_pass if sampling == "proportional" else [1] * num_tasks, np.float64)
    p = weights / weights.sum()
    return [(int(np.random.default_rng([seed, epoch, step, DRAW_STREAM]).choice(num_tasks, p=p)),)
            for step in range(steps)]


def task_batches(loaders, steps, epoch=0):
    """For each of `steps` (task_schedule's tuples of task indices), the list of the batches of its tasks. A loader
    that runs out starts a new pass, reshuffled (a seeded sampler -- DDP shards, class-balanced draws -- gets its own
    seed for every pass of the epoch: it would repeat its order otherwise). With every task in every step ("all")
    every loader starts before the first step: a shuffled loader draws its order from torch's global generator when
    it starts, so the order of the starts is part of what a seed reproduces; a drawn task's loader starts at its
    first batch."""
    every_task = all(len(tasks) == len(loaders) for tasks in steps)
    iterators = [iter(loader) for loader in loaders] if every_task else [None] * len(loaders)
    passes = [0] * len(loaders)
    for tasks in steps:
        batches = []
        for k in tasks:
            batch = next(iterators[k], None) if iterators[k] is not None else None
            if batch is None:
                if iterators[k] is not None:
                    passes[k] += 1
                    sampler = getattr(loaders[k], "sampler", None)
                    if hasattr(sampler, "set_epoch"):
                        sampler.set_epoch(epoch + passes[k] * PASS_STRIDE)
                iterators[k] = iter(loaders[k])
                batch = next(iterators[k])
            batches.append(batch)
        yield batches


def forward_tasks(model, images, tasks):
    """The raw outputs of the step's tasks, one per task of `tasks` (images: one batch per task). Every task: one
    forward call with a batch per task, so DDP sees every parameter used; one drawn task: only its path runs (a
    model's default task is 0, so a single-task model is called as it always is)."""
    if len(images) > 1:
        return model(images)
    return [model(images[0], task=tasks[0]) if tasks[0] else model(images[0])]


def tasks_loss(t, outputs, targets, tasks=None):
    """sum_k task_weights[k] * loss_k over the step's tasks (all tasks when None), outputs and targets one per task
    of `tasks`. Returns (loss, floats to log: the weighted sums of the box / obj / cls terms, the weighted means of
    the per-scale box terms and, with several tasks, each of the step's tasks' loss as loss_<name>; the assignment
    statistics averaged over the step's tasks)."""
    decoding = unwrap(t.model).decoding
    tasks = range(len(t.loss_fns)) if tasks is None else tasks
    total, values, stats = 0.0, {}, {}
    scale_weights = {}  # box_s<stride>: the summed task weights of the tasks with positives at that scale
    for k, out, tgt in zip(tasks, outputs, targets):
        loss, items, task_stats = t.loss_fns[k](out, tgt, decoding)
        total = total + t.task_weights[k] * loss
        for name, v in items.items():  # a NaN (a scale without positives) adds nothing, unless all are NaN
            values[name] = nan_sum(values.get(name, math.nan), t.task_weights[k] * v.item())
            if name.startswith("box_s") and not math.isnan(v.item()):
                scale_weights[name] = scale_weights.get(name, 0.0) + t.task_weights[k]
        for name, v in task_stats.items():
            stats[name] = stats.get(name, 0.0) + v / len(tasks)
        if len(t.loss_fns) > 1:
            values[f"loss_{t.task_names[k]}"] = loss.item()
    for name, weight in scale_weights.items():  # a weighted mean over the tasks that had positives there, so a
        if weight > 0:                           # step's value does not depend on how many tasks had them
            values[name] /= weight
    return total, values, stats


def nan_sum(a, b):
    """a + b, where a NaN counts as missing: NaN only when both are."""
    return b if math.isnan(a) else a if math.isnan(b) else a + b


def epoch_means(sums, counts, task_names):
    """The epoch's mean of every logged value over the steps that logged it (a task's loss: over the steps that
    trained it, a scale's box term over the steps with positives there; NaN when none did), in the same column
    order every epoch: metrics.csv has one header."""
    per_task = [f"loss_{name}" for name in task_names] if len(task_names) > 1 else []
    order = ["loss", "box", "obj", "cls", *per_task, "pos_per_gt", "unmatched_pct"]
    names = order + [k for k in sums if k not in order]
    return {k: sums[k] / counts[k] if counts.get(k) else math.nan for k in names}


def score_names(task_names):
    """The metrics.csv columns of an evaluation."""
    per_task = [f"{k}_{name}" for name in task_names for k in ("map50", "map")] if len(task_names) > 1 else []
    return ["map50", "map", *per_task]
