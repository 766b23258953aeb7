"""State-dict surgery between single-task and multi-task detectors (the model layout is in detector.py / neck.py).

A single-task model's state dict holds backbone.*, neck.blocks.<j>.0.* (one copy of each neck block), heads.0.* and
anchors. A multi-task model's holds neck.blocks.<j>.<c>.* for every copy c of block j (one per group of tasks,
neck_groups order) and heads.<t>.* per task.

merge: one multi-task state from T single-task ones: every copy serving one task comes from that task's model, a
copy shared by a group from the first task of the group (or the mean of the group's models), the backbone from the
first task (or the mean of all), heads.<t> from task t's heads.0.
peel: one task's single-task state out of a multi-task one: the copies on its path and its head, renumbered 0.
"""
import torch

from ..branching import neck_routes


def split_key(key):
    """'backbone.x' -> ('backbone', None, None, 'x'); 'neck.blocks.3.1.y' -> ('neck', 3, 1, 'y');
    'heads.2.z' -> ('heads', 2, None, 'z'); 'anchors' -> ('anchors', None, None, '')."""
    parts = key.split(".")
    if parts[0] == "neck" and len(parts) > 4 and parts[1] == "blocks":
        return "neck", int(parts[2]), int(parts[3]), ".".join(parts[4:])
    if parts[0] == "heads" and len(parts) > 2:
        return "heads", int(parts[1]), None, ".".join(parts[2:])
    if parts[0] in ("backbone", "anchors"):
        return parts[0], None, None, ".".join(parts[1:])
    raise ValueError(f"state dict key {key!r} is not part of a detector (backbone / neck.blocks / heads / anchors)")


def combine(tensors, average):
    """The first tensor, or the mean of all of them for floating tensors when `average` (integer buffers such as
    BatchNorm's num_batches_tracked keep the first)."""
    if average and len(tensors) > 1 and tensors[0].is_floating_point():
        return torch.stack([t.float() for t in tensors]).mean(0).to(tensors[0].dtype)
    return tensors[0].clone()


def merge_states(states, groups, average=False):
    """states: one single-task state dict per task; groups: neck_groups(branching, T). Returns the state dict of the
    multi-task detector with that branching."""
    num_tasks = len(states)
    everyone = list(range(num_tasks))
    anchors = states[0]["anchors"]
    for t, state in enumerate(states):
        if not torch.equal(state["anchors"], anchors):
            raise ValueError(f"task {t}'s checkpoint has other anchors than task 0's; one model has one set of anchors")
    merged = {}
    for key in states[0]:
        part, j, _, rest = split_key(key)
        if part == "backbone":
            merged[key] = combine([states[t][key] for t in everyone], average)
        elif part == "neck":
            for c, group in enumerate(groups[j]):
                merged[f"neck.blocks.{j}.{c}.{rest}"] = combine([states[t][key] for t in group], average)
    for t, state in enumerate(states):  # each task's own head (its own number of classes)
        for key, value in state.items():
            part, j, _, rest = split_key(key)
            if part == "heads":
                if j != 0:
                    raise ValueError(f"task {t}'s state has a head {j}: merge takes single-task models")
                merged[f"heads.{t}.{rest}"] = value.clone()
    merged["anchors"] = anchors.clone()
    return merged


def peel_state(state, groups, task):
    """The single-task state dict of `task` out of a multi-task state dict whose branching gives `groups`."""
    route = neck_routes(groups)[task]
    peeled = {}
    for key, value in state.items():
        part, j, copy, rest = split_key(key)
        if part in ("backbone", "anchors"):
            peeled[key] = value.clone()
        elif part == "neck" and copy == route[j]:
            peeled[f"neck.blocks.{j}.0.{rest}"] = value.clone()
        elif part == "heads" and j == task:
            peeled[f"heads.0.{rest}"] = value.clone()
    return peeled
