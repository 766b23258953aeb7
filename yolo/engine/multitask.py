"""The multi-task pieces of the training loop: one batch of every task per step, the weighted sum of the task
losses, and the metrics.csv columns of a per-task evaluation. (The shared-gradient averaging is in
trainer.optimizer_update; the model side -- shared and copied neck blocks -- in yolo/models/neck.py.)"""
from .distributed import unwrap


def task_batches(loaders, steps):
    """`steps` lists holding one batch of every loader; a loader that runs out starts a new pass (reshuffled)."""
    iterators = [iter(loader) for loader in loaders]
    for _ in range(steps):
        batches = []
        for k, loader in enumerate(loaders):
            batch = next(iterators[k], None)
            if batch is None:
                iterators[k] = iter(loader)
                batch = next(iterators[k])
            batches.append(batch)
        yield batches


def tasks_loss(t, outputs, targets):
    """sum_k task_weights[k] * loss_k. Returns (loss, floats to log: the weighted sums of the box / obj / cls terms
    and, with several tasks, each task's loss as loss_<name>; the assignment statistics averaged over the tasks)."""
    decoding = unwrap(t.model).decoding
    total, values, stats = 0.0, {}, {}
    for loss_fn, out, tgt, weight, name in zip(t.loss_fns, outputs, targets, t.task_weights, t.task_names):
        loss, items, task_stats = loss_fn(out, tgt, decoding)
        total = total + weight * loss
        for k, v in items.items():
            values[k] = values.get(k, 0.0) + weight * v.item()
        for k, v in task_stats.items():
            stats[k] = stats.get(k, 0.0) + v / len(t.loss_fns)
        if len(t.loss_fns) > 1:
            values[f"loss_{name}"] = loss.item()
    return total, values, stats


def score_names(task_names):
    """The metrics.csv columns of an evaluation."""
    per_task = [f"{k}_{name}" for name in task_names for k in ("map50", "map")] if len(task_names) > 1 else []
    return ["map50", "map", *per_task]
