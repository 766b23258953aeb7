"""Branching search: every tree the `branching` grammar allows, scored by task dissimilarity and by compute.

After "Branched Multi-Task Networks: Deciding What Layers To Share" (Vandenhende et al., BMVC 2020):
  dissimilarity of a tree = sum over its nodes (the backbone, and every copy of every neck block) of the mean over
  the node's tasks of each task's largest dissimilarity 1 - similarity (research/rsa.py) to another task of that node
  (a node of one task adds 0). Lower: the tasks that share a layer see the images alike there.
  compute of a tree = its GFLOPs for all tasks (shared copies run once) / the GFLOPs of one single-task model per
  task. Lower: cheaper than separate models.
Trees are ranked by score = mean of (dissimilarity / the largest dissimilarity of any candidate, so both lie in
[0, 1]) and compute; best_within() picks the least dissimilar tree under a compute budget.
"""
import statistics
import time

import torch

from ..branching import NECK_BLOCK_NAMES, neck_groups
from ..models.detector import build_model
from ..models.flops import flops_under


# ------------------------------------------------------------------------------------------------- enumeration
def set_partitions(group):
    """Every way to cut the sorted list `group` into non-empty groups, each partition's groups ordered by their
    first task: [0, 1, 2] -> [[0, 1, 2]], [[0], [1, 2]], [[0, 1], [2]], [[0, 2], [1]], [[0], [1], [2]] (in some order)."""
    if len(group) == 1:
        return [[list(group)]]
    first, rest = group[0], group[1:]
    found = []
    for partition in set_partitions(rest):
        found.append([[first]] + partition)                      # the first task alone ...
        for k in range(len(partition)):                          # ... or joining one of the groups
            found.append(sorted(partition[:k] + [[first] + partition[k]] + partition[k + 1:]))
    return found


def enumerate_branchings(num_tasks, num_blocks=len(NECK_BLOCK_NAMES)):
    """Every distinct tree as the shortest `branching` list that makes it: None (whole neck shared) first, then
    lists whose every entry really splits at least one group (a group listed unsplit changes nothing, so such
    entries are left out: each tree appears once). Each list passes the config's validation (neck_groups)."""
    found = [None]

    def grow(branching, groups, last_index):
        for index in range(last_index + 1, num_blocks - 1):      # split after block index, -1 ... num_blocks - 2
            choices = [set_partitions(g) for g in groups]
            for pick in _product(choices):
                split = [part for part in pick if len(part) > 1]
                if not split:
                    continue
                entry = [index, [g for part in split for g in part]]
                tree = branching + [entry]
                neck_groups(tree, num_tasks)                      # the grammar's own check: raises if invalid
                found.append(tree)
                grow(tree, sorted(g for part in pick for g in part), index)

    grow([], [list(range(num_tasks))], -2)
    return found


def _product(lists):
    """Cartesian product of a list of lists, as lists."""
    if not lists:
        return [[]]
    return [[head] + tail for head in lists[0] for tail in _product(lists[1:])]


def tree_key(groups):
    """A tree's identity whatever the order its copies were listed in: per block, the sorted tuple of its groups."""
    return tuple(tuple(sorted(tuple(sorted(g)) for g in block)) for block in groups)


# ------------------------------------------------------------------------------------------------- scores
def nodes(groups, num_tasks):
    """(layer name, tasks of the node) for the backbone and every copy of every neck block."""
    found = [("backbone", list(range(num_tasks)))]
    found += [(NECK_BLOCK_NAMES[j], g) for j, block in enumerate(groups) for g in block]
    return found


def dissimilarity_score(groups, similarities):
    """sum over nodes of mean_{t in node} max_{u in node, u != t} (1 - similarities[layer][t, u]); 0 for a node of
    one task. similarities: {layer name: (T, T) array} (research/rsa.py similarity_matrices)."""
    num_tasks = len(next(iter(similarities.values())))
    total = 0.0
    for layer, tasks in nodes(groups, num_tasks):
        if len(tasks) > 1:
            s = similarities[layer]
            total += sum(max(1 - s[t][u] for u in tasks if u != t) for t in tasks) / len(tasks)
    return total


class ComputeModel:
    """GFLOPs of any tree from the GFLOPs of the parts, counted once on the model with every block copied per task:
    tree = backbone + sum_j (copies of block j) x block_j + every head."""

    def __init__(self, cfg):
        num_tasks = len(cfg.task_num_classes)
        split_cfg = _with_branching(cfg, [[-1, [[t] for t in range(num_tasks)]]] if num_tasks > 1 else None)
        model = build_model(split_cfg)
        parts = (["backbone"] + [f"neck.blocks.{j}.0" for j in range(len(NECK_BLOCK_NAMES))]
                 + [f"heads.{t}" for t in range(num_tasks)])
        flops = flops_under(model, (cfg.img_size, cfg.img_size), parts)
        self.backbone = flops["backbone"]
        self.blocks = [flops[f"neck.blocks.{j}.0"] for j in range(len(NECK_BLOCK_NAMES))]
        self.heads = [flops[f"heads.{t}"] for t in range(num_tasks)]

    def tree_gflops(self, groups):
        return self.backbone + sum(len(block) * f for block, f in zip(groups, self.blocks)) + sum(self.heads)

    def singles_gflops(self):
        """One single-task model per task: each runs the backbone and the whole neck, and its own head."""
        return len(self.heads) * (self.backbone + sum(self.blocks)) + sum(self.heads)


def _with_branching(cfg, branching):
    import copy
    tree_cfg = copy.copy(cfg)
    tree_cfg.branching = branching
    return tree_cfg.finalize()


@torch.inference_mode()
def inference_ms(model, img_size, batch=1, repeats=5):
    """Median CPU wall time (ms) of one forward of every task (task=None: shared copies run once)."""
    model.eval()
    images = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8)
    model(images, task=None)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(images, task=None)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def rank_trees(cfg, similarities, measure_ms=True):
    """Every tree of cfg's tasks, scored and ranked (best first). One dict per tree: branching, dissimilarity,
    dissimilarity_rel (/ the largest of the candidates), gflops, compute, ms (nan when not measured), score, rank."""
    num_tasks = len(cfg.task_num_classes)
    costs = ComputeModel(cfg)
    rows = []
    for branching in enumerate_branchings(num_tasks):
        groups = neck_groups(branching, num_tasks)
        gflops = costs.tree_gflops(groups)
        ms = inference_ms(build_model(_with_branching(cfg, branching)), cfg.img_size) if measure_ms else float("nan")
        rows.append(dict(branching=branching, dissimilarity=dissimilarity_score(groups, similarities),
                         gflops=gflops, compute=gflops / costs.singles_gflops(), ms=ms))
    worst = max(r["dissimilarity"] for r in rows) or 1.0
    for r in rows:
        r["dissimilarity_rel"] = r["dissimilarity"] / worst
        r["score"] = (r["dissimilarity_rel"] + r["compute"]) / 2
    rows.sort(key=lambda r: (r["score"], r["compute"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def best_within(rows, budget):
    """The least dissimilar tree whose compute is at most `budget` (a fraction of the single models'), ties to the
    cheaper one; None when no tree fits."""
    fitting = [r for r in rows if r["compute"] <= budget + 1e-9]
    return min(fitting, key=lambda r: (r["dissimilarity"], r["compute"])) if fitting else None
