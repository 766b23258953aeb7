"""Branching search: every tree the `branching` grammar allows, scored by task dissimilarity and by compute.

After "Branched Multi-Task Networks: Deciding What Layers To Share" (Vandenhende et al., BMVC 2020):
  dissimilarity of a tree = sum over its nodes (every copy of the backbone, and every copy of every neck block) of
  the mean over the node's tasks of each task's largest dissimilarity 1 - similarity (research/rsa.py) to another task
  of that node (a node of one task adds 0), times the node's weight: the layer's share of one model's GFLOPs
  (rsa_node_cost = "gflops", the default: the backbone, about half of the compute, weighs about as much as the neck's
  eight blocks together) or 1 for every node ("equal", the reference's sum over layers). Lower: the tasks that share a
  layer see the images alike there.
  compute of a tree = its GFLOPs for all tasks (shared copies run once) / the GFLOPs of one single-task model per
  task. Lower: cheaper than separate models.
The recommendation, as the reference's: the least dissimilar tree within a compute budget (rsa_budget, default 0.7 x the
single-task models); the ranking lists the trees within the budget first, least dissimilar first, then the others.

Besides the trees of one model, the ranking holds trees that split at the input: a first entry [-2, groups] makes each
group a separate model with its own backbone (a group of one task is that task's single-task model), the later entries
split the groups' necks as usual. They are not one checkpoint (the config refuses -2): each group is trained as its
own config (separate_models). Without them every tree shares the backbone, even among tasks RSA finds apart there.

GFLOPs are counted analytically from the parts of one model (ComputeModel), so ranking every tree builds no model per
tree: the 64,660 trees of 5 tasks rank in seconds. Only the trees a report names are built and timed (time_trees).
"""

import copy

import numpy as np
import torch

from ..branching import NECK_BLOCK_NAMES, neck_groups
from ..config import task_configs
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
    entries are left out: each tree appears once), then the splits at the input ([-2, groups] first). Each list of one
    model passes the config's validation (neck_groups); each model of a split at the input does (separate_models)."""
    return [branching for branching, _ in enumerate_trees(num_tasks, num_blocks)]


def enumerate_trees(num_tasks, num_blocks=len(NECK_BLOCK_NAMES)):
    """enumerate_branchings' trees as (branching, its neck groups) pairs. The groups are built here as neck_groups
    (one model) and tree_groups (separate models) build them (a test checks they are equal), not by calling them: 5
    tasks have 64,660 trees."""
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
    for partition in set_partitions(everyone):                     # split at the input: separate models
        if len(partition) > 1:
            tree_blocks = [sorted(partition)] * num_blocks
            found.append(([[-2, sorted(partition)]], tree_blocks))
            grow([[-2, sorted(partition)]], sorted(partition), tree_blocks, -2)
    return found


def _product(lists):
    """Cartesian product of a list of lists, as lists."""
    if not lists:
        return [[]]
    return [[head] + tail for head in lists[0] for tail in _product(lists[1:])]


def separate_models(branching, num_tasks):
    """[(tasks, branching of their model in the model's own task ids)]: one entry (every task, branching) for a tree
    of one model; one per group of a first entry [-2, groups] (split at the input), each with the later entries
    that split its tasks. Raises ValueError where the grammar is broken (neck_groups checks each model)."""
    branching = branching or []
    if not branching or branching[0][0] != -2:
        neck_groups(branching or None, num_tasks)
        return [(list(range(num_tasks)), branching or None)]
    groups = [sorted(g) for g in branching[0][1]]
    if sorted(t for g in groups for t in g) != list(range(num_tasks)) or len(groups) < 2:
        raise ValueError(f"branching {branching!r}: a split at the input (-2) lists every task once, in 2 or more "
                         f"groups")
    indices = [entry[0] for entry in branching]
    if any(b <= a for a, b in zip(indices, indices[1:])):
        raise ValueError(f"branching {branching!r}: layer indices must increase from one entry to the next")
    for index, split in branching[1:]:
        for g in split:
            if sum(set(g) <= set(group) for group in groups) != 1:
                raise ValueError(f"branching {branching!r}: group {sorted(g)} of entry [{index}, ...] is not inside "
                                 f"one of the separate models {groups}")
    models = []
    for group in groups:
        local = {t: k for k, t in enumerate(group)}
        entries = [[index, [[local[t] for t in g] for g in split if set(g) <= set(group)]]
                   for index, split in branching[1:]]
        entries = [e for e in entries if e[1]]
        neck_groups(entries or None, len(group))
        models.append((group, entries or None))
    return models


def tree_groups(branching, num_tasks):
    """(backbone groups, neck groups) of any ranked tree: neck_groups for a tree of one model; for separate models
    (-2) one backbone per model and each model's neck copies, in task ids of the whole tree."""
    backbone, blocks = [], [[] for _ in NECK_BLOCK_NAMES]
    for tasks, model_branching in separate_models(branching, num_tasks):
        backbone.append(tasks)
        for j, block in enumerate(neck_groups(model_branching, len(tasks))):
            blocks[j] += [[tasks[t] for t in g] for g in block]
    return backbone, blocks


def tree_key(groups):
    """A tree's identity whatever the order its copies were listed in: per block, the sorted tuple of its groups."""
    return tuple(tuple(sorted(tuple(sorted(g)) for g in block)) for block in groups)


# ------------------------------------------------------------------------------------------------- scores
def nodes(groups, backbone_groups):
    """(layer name, tasks of the node) for every copy of the backbone and every copy of every neck block."""
    found = [("backbone", tasks) for tasks in backbone_groups]
    found += [(NECK_BLOCK_NAMES[j], g) for j, block in enumerate(groups) for g in block]
    return found


def dissimilarity_score(groups, similarities, node_costs=None, backbone_groups=None, weights=None):
    """sum over nodes of weight[layer] x mean_{t in node} max_{u in node, u != t} (1 - similarities[layer][t, u]);
    0 for a node of one task. similarities: {layer name: (T, T) array} (research/rsa.py similarity_matrices).
    backbone_groups: the tasks of each backbone copy (None: one backbone, every task). weights: {layer: weight}
    (None: 1 each, the reference's sum). node_costs: a dict kept between calls of one ranking (the same node recurs
    in thousands of trees)."""
    num_tasks = len(next(iter(similarities.values())))
    node_costs = {} if node_costs is None else node_costs
    total = 0.0
    for layer, tasks in nodes(groups, backbone_groups or [list(range(num_tasks))]):
        if len(tasks) > 1:
            key = (layer, tuple(tasks))
            if key not in node_costs:
                s = similarities[layer]
                node_costs[key] = sum(max(1 - s[t][u] for u in tasks if u != t) for t in tasks) / len(tasks)
            total += node_costs[key] * (1.0 if weights is None else weights[layer])
    return total


class ComputeModel:
    """GFLOPs of any tree from the GFLOPs of the parts, counted once on the model with every block copied per task:
    tree = backbone + sum_j (copies of block j) x block_j + every head."""

    def __init__(self, cfg):
        num_tasks = len(cfg.task_num_classes)
        every_task_split = [[-1, [[t] for t in range(num_tasks)]]] if num_tasks > 1 else None
        split_cfg = model_config(cfg, range(num_tasks), every_task_split)
        model = build_model(split_cfg)
        parts = (["backbone"] + [f"neck.blocks.{j}.0" for j in range(len(NECK_BLOCK_NAMES))]
                 + [f"heads.{t}" for t in range(num_tasks)])
        flops = flops_under(model, (cfg.img_size, cfg.img_size), parts)
        self.backbone = flops["backbone"]
        self.blocks = [flops[f"neck.blocks.{j}.0"] for j in range(len(NECK_BLOCK_NAMES))]
        self.heads = [flops[f"heads.{t}"] for t in range(num_tasks)]

    def tree_gflops(self, groups, backbones=1):
        neck = sum(len(block) * f for block, f in zip(groups, self.blocks))
        return backbones * self.backbone + neck + sum(self.heads)

    def layer_weights(self, node_cost):
        """{layer: weight} of dissimilarity_score: None (1 each) for "equal"; for "gflops" each layer's share of the
        GFLOPs of one model's backbone and neck (the heads are never shared)."""
        if node_cost == "equal":
            return None
        total = self.backbone + sum(self.blocks)
        return {"backbone": self.backbone / total, **{n: f / total for n, f in zip(NECK_BLOCK_NAMES, self.blocks)}}

    def singles_gflops(self):
        """One single-task model per task: each runs the backbone and the whole neck, and its own head."""
        return len(self.heads) * (self.backbone + sum(self.blocks)) + sum(self.heads)


def time_trees(cfg, rows):
    """Fill in "ms" of each row: the tree is built and one image timed through all its tasks (inference_ms); for
    separate models (-2) the sum over the models."""
    for row in rows:
        row["ms"] = sum(inference_ms(build_model(model_config(cfg, tasks, branching)), cfg.img_size)
                        for tasks, branching in separate_models(row["branching"], len(cfg.task_num_classes)))
    return rows


def model_config(cfg, tasks, branching):
    """The finalized config of one model of a tree: `tasks` (ids into cfg.tasks, in that order) with `branching` in
    their own ids; a model of one task of several is that task's single-task config (task_configs)."""
    if len(tasks) == 1 and len(cfg.task_num_classes) > 1:
        return task_configs(cfg)[tasks[0]]
    part = copy.copy(cfg)
    if list(tasks) != list(range(len(cfg.task_num_classes))):
        part.tasks = [cfg.tasks[t] for t in tasks]
        part.task_weights = None if cfg.task_weights is None else [cfg.task_weights[t] for t in tasks]
    part.branching = branching
    return part.finalize()


def inference_ms(model, img_size, batch=1, repeats=5):
    """Median CPU wall time (ms) of one forward of every task (task=None: shared copies run once)."""
    images = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8)
    return ms_per_image([model], images, repeats, task=None)[0] * batch


def rank_trees(cfg, similarities, budget=0.7, node_cost="gflops"):
    """Every tree of cfg's tasks, ranked by order_by_budget (rank 1: the least dissimilar tree within `budget`, when
    one fits). One dict per tree: branching, models (1, or the separate models of a split at the input),
    dissimilarity (weighted by node_cost, see the module's docstring), gflops, compute, fits, rank, and ms = nan
    (time_trees measures the trees a report names). Builds one model, whatever the number of trees."""
    num_tasks = len(cfg.task_num_classes)
    costs = ComputeModel(cfg)
    singles, weights = costs.singles_gflops(), costs.layer_weights(node_cost)
    sims = {layer: np.asarray(s, dtype=float).tolist() for layer, s in similarities.items()}  # fast indexing
    node_costs = {}
    rows = []
    for branching, groups in enumerate_trees(num_tasks):
        backbone = branching[0][1] if branching and branching[0][0] == -2 else [list(range(num_tasks))]
        gflops = costs.tree_gflops(groups, len(backbone))
        rows.append(dict(branching=branching, models=len(backbone), gflops=gflops, compute=gflops / singles,
                         dissimilarity=dissimilarity_score(groups, sims, node_costs, backbone_groups=backbone,
                                                           weights=weights),
                         ms=float("nan")))
    return order_by_budget(rows, budget)


def score_tree(costs, similarities, branching, node_cost="gflops"):
    """(dissimilarity, compute) of one tree as rank_trees scores it; costs: the ComputeModel of the tasks' config (a
    report re-scores trained trees with it)."""
    backbone, groups = tree_groups(branching, len(costs.heads))
    return (dissimilarity_score(groups, similarities, backbone_groups=backbone, weights=costs.layer_weights(node_cost)),
            costs.tree_gflops(groups, len(backbone)) / costs.singles_gflops())


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
