"""Branching search: every tree the `branching` grammar allows, scored by task dissimilarity and by compute.

After "Branched Multi-Task Networks: Deciding What Layers To Share" (Vandenhende et al., BMVC 2020):
  dissimilarity of a tree = sum over its nodes (the backbone, and every copy of every neck block) of the mean over
  the node's tasks of each task's largest dissimilarity 1 - similarity (research/rsa.py) to another task of that node
  (a node of one task adds 0). Lower: the tasks that share a layer see the images alike there.
  compute of a tree = its GFLOPs for all tasks (shared copies run once) / the GFLOPs of one single-task model per
  task. Lower: cheaper than separate models.
The recommendation, as the reference's: the least dissimilar tree within a compute budget (rsa_budget, default 0.7 x the
single-task models); the ranking lists the trees within the budget first, least dissimilar first, then the others.

GFLOPs are counted analytically from the parts of one model (ComputeModel), so ranking every tree builds no model per
tree: 41,709 trees of 5 tasks rank in seconds. Only the trees a report names are built and timed (time_trees).
"""

import numpy as np
import torch

from ..branching import NECK_BLOCK_NAMES
from ..models.detector import build_model
from ..models.flops import flops_under, ms_per_image


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
    return [branching for branching, _ in enumerate_trees(num_tasks, num_blocks)]


def enumerate_trees(num_tasks, num_blocks=len(NECK_BLOCK_NAMES)):
    """enumerate_branchings' trees as (branching, its neck_groups) pairs. The groups are built here as neck_groups
    builds them (a test checks they are equal), not by calling it: 5 tasks have 41,709 trees."""
    everyone = list(range(num_tasks))
    found = [(None, [[everyone]] * num_blocks)]

    def grow(branching, groups, blocks, last_index):
        # groups: the groups after the last split, sorted (the order partitions are drawn in); blocks: the tree so far
        picks = _product([set_partitions(g) for g in groups])
        for index in range(last_index + 1, num_blocks - 1):      # split after block index, -1 ... num_blocks - 2
            for pick in picks:
                split = [g for part in pick if len(part) > 1 for g in part]
                if not split:
                    continue
                tree = branching + [[index, split]]
                # neck_groups: each group of the last block stays, or becomes its parts in the order listed
                copies = [[g for g in split if set(g) <= set(parent)] or [parent] for parent in blocks[-1]]
                tree_blocks = blocks[:index + 1] + [[g for c in copies for g in c]] * (num_blocks - index - 1)
                found.append((tree, tree_blocks))
                grow(tree, sorted(g for part in pick for g in part), tree_blocks, index)

    grow([], [everyone], found[0][1], -2)
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


def dissimilarity_score(groups, similarities, node_costs=None):
    """sum over nodes of mean_{t in node} max_{u in node, u != t} (1 - similarities[layer][t, u]); 0 for a node of
    one task. similarities: {layer name: (T, T) array} (research/rsa.py similarity_matrices).
    node_costs: a dict kept between calls of one ranking (the same node recurs in thousands of trees)."""
    num_tasks = len(next(iter(similarities.values())))
    node_costs = {} if node_costs is None else node_costs
    total = 0.0
    for layer, tasks in nodes(groups, num_tasks):
        if len(tasks) > 1:
            key = (layer, tuple(tasks))
            if key not in node_costs:
                s = similarities[layer]
                node_costs[key] = sum(max(1 - s[t][u] for u in tasks if u != t) for t in tasks) / len(tasks)
            total += node_costs[key]
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


def time_trees(cfg, rows):
    """Fill in "ms" of each row: the tree is built and one image timed through all its tasks (inference_ms)."""
    for row in rows:
        row["ms"] = inference_ms(build_model(_with_branching(cfg, row["branching"])), cfg.img_size)
    return rows


def inference_ms(model, img_size, batch=1, repeats=5):
    """Median CPU wall time (ms) of one forward of every task (task=None: shared copies run once)."""
    images = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8)
    return ms_per_image([model], images, repeats, task=None)[0] * batch


def rank_trees(cfg, similarities, budget=0.7):
    """Every tree of cfg's tasks, ranked by order_by_budget (rank 1: the least dissimilar tree within `budget`, when
    one fits). One dict per tree: branching, dissimilarity, gflops, compute, fits, rank, and ms = nan (time_trees
    measures the trees a report names). Builds one model, whatever the number of trees."""
    num_tasks = len(cfg.task_num_classes)
    costs = ComputeModel(cfg)
    singles = costs.singles_gflops()
    sims = {layer: np.asarray(s, dtype=float).tolist() for layer, s in similarities.items()}  # fast indexing
    node_costs = {}
    rows = []
    for branching, groups in enumerate_trees(num_tasks):
        gflops = costs.tree_gflops(groups)
        rows.append(dict(branching=branching, dissimilarity=dissimilarity_score(groups, sims, node_costs),
                         gflops=gflops, compute=gflops / singles, ms=float("nan")))
    return order_by_budget(rows, budget)


def order_by_budget(rows, budget):
    """Sort rows (dicts with dissimilarity and compute) in place: the trees whose compute is at most `budget` first,
    then the others, each part least dissimilar first (ties: the cheaper first); set "fits" and "rank" (1 = the
    recommendation). Returns rows."""
    for r in rows:
        r["fits"] = r["compute"] <= budget + 1e-9
    # rounded: equal sums added in another order may differ in the last bits, and a tie must go to the cheaper tree
    rows.sort(key=lambda r: (not r["fits"], round(r["dissimilarity"], 9), r["compute"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def best_within(rows, budget):
    """The least dissimilar tree whose compute is at most `budget` (a fraction of the single models'), ties to the
    cheaper one; None when no tree fits."""
    fitting = [r for r in rows if r["compute"] <= budget + 1e-9]
    return min(fitting, key=lambda r: (round(r["dissimilarity"], 9), r["compute"])) if fitting else None
