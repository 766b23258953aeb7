"""Branching search (yolo/research/tree_search.py): the enumeration against a brute-force filter of candidate lists
through the config's own validation, the tree score against a hand-computed tree, and the compute of a tree against
the FLOPs counted on the model it builds."""
import itertools

import numpy as np
import pytest

from yolo.branching import NECK_BLOCK_NAMES, neck_groups
from yolo.research.tree_search import (ComputeModel, best_within, dissimilarity_score, enumerate_branchings,
                                       model_config, rank_trees, score_tree, separate_models, tree_groups, tree_key)
from yolo.config import BaseConfig
from yolo.models.detector import build_model
from yolo.models.flops import gflops
from yolo.research.rsa import LAYER_NAMES


def candidate_groups(num_tasks):
    """Every non-empty collection of disjoint non-empty task sets (in one canonical order: the order of the groups
    changes only the order of the copies, not the tree)."""
    subsets = [list(s) for k in range(1, num_tasks + 1) for s in itertools.combinations(range(num_tasks), k)]
    return [list(c) for k in range(1, num_tasks + 1) for c in itertools.combinations(subsets, k)
            if len({t for g in c for t in g}) == sum(len(g) for g in c)]


def brute_force_trees(num_tasks, max_entries):
    """The distinct trees of every list of up to max_entries entries [index, groups] that the grammar accepts.
    Indices -2 and 7 are candidates too (the grammar must reject them); lists whose indices do not increase are
    not generated (the grammar rejects them, and leaving them out keeps the product small)."""
    collections = candidate_groups(num_tasks)
    trees = {tree_key(neck_groups(None, num_tasks))}
    for length in range(1, max_entries + 1):
        for indices in itertools.combinations(range(-2, len(NECK_BLOCK_NAMES)), length):
            for picks in itertools.product(collections, repeat=length):
                try:
                    trees.add(tree_key(neck_groups([[i, g] for i, g in zip(indices, picks)], num_tasks)))
                except ValueError:
                    pass
    return trees


@pytest.mark.parametrize("num_tasks, max_entries, expected", [
    (2, 2, 1 + 8),            # whole neck shared, or split after one of 8 layers (-1 ... 6)
    # 3 tasks: shared; [0] [1] [2] after one of 8 layers; a pair and a single (3 ways) after layer position p of 8,
    # the pair then staying together or splitting at one of the 7 - p later positions: 3 * sum_p (8 - p) = 108
    (3, 2, 1 + 8 + 3 * sum(8 - p for p in range(8))),
])
def test_enumeration_is_every_tree_the_grammar_accepts_once(num_tasks, max_entries, expected):
    found = [b for b in enumerate_branchings(num_tasks) if not (b and b[0][0] == -2)]  # one model: the config's trees
    keys = [tree_key(neck_groups(b, num_tasks)) for b in found]
    assert len(found) == len(set(keys)) == expected
    # a tree of T tasks splits at most T - 1 times, so lists of T - 1 entries reach every tree (for 2 tasks also
    # lists of 2: an entry that splits nothing must not bring new trees)
    assert set(keys) == brute_force_trees(num_tasks, max_entries)


def test_dissimilarity_score_of_a_hand_computed_tree():
    # dissimilarity at layer k (0 = backbone ... 8 = out3): (k + 1) x d with d01 = 0.01, d02 = 0.05, d12 = 0.03
    d = np.array([[0, 0.01, 0.05], [0.01, 0, 0.03], [0.05, 0.03, 0]])
    sims = {name: 1 - (k + 1) * d for k, name in enumerate(LAYER_NAMES)}
    groups = neck_groups([[2, [[2], [0, 1]]], [4, [[0], [1]]]], 3)
    # nodes of all three tasks: backbone, top5, out5, up5 (k = 0..3); each task's largest dissimilarity there is
    # 0.05, 0.03, 0.05 (x (k + 1)): mean 0.13 / 3, times 1 + 2 + 3 + 4. Nodes [0, 1] at top4, out4 (k = 4, 5): 0.01 x
    # (5 + 6). Single-task nodes add nothing.
    expected = 0.13 / 3 * 10 + 0.01 * 11
    assert dissimilarity_score(groups, sims) == pytest.approx(expected, rel=1e-12)
    assert dissimilarity_score(neck_groups([[-1, [[0], [1], [2]]]], 3), sims) == pytest.approx(0.13 / 3)


def small_cfg(num_tasks, branching=None):
    cfg = BaseConfig()
    cfg.width, cfg.img_size = 0.25, 64
    cfg.tasks = [dict(name="a"), dict(name="b", class_names=["x", "y"]), dict(name="c", class_names=["z"])][:num_tasks]
    cfg.branching = branching
    return cfg.finalize()


def test_tree_gflops_match_the_flops_counted_on_the_built_model():
    costs = ComputeModel(small_cfg(3))
    for branching in (None, [[2, [[2], [0, 1]]], [4, [[0], [1]]]], [[-1, [[0], [1], [2]]]]):
        counted = gflops(build_model(small_cfg(3, branching)), (64, 64))
        assert costs.tree_gflops(neck_groups(branching, 3)) == pytest.approx(counted, rel=1e-9)
    singles = 0.0
    for classes in (["circle", "square", "triangle"], ["x", "y"], ["z"]):
        single = BaseConfig()
        single.width, single.img_size, single.class_names = 0.25, 64, classes
        singles += gflops(build_model(single.finalize()), (64, 64))
    assert costs.singles_gflops() == pytest.approx(singles, rel=1e-9)


def test_ranking_and_budgets():
    cfg = small_cfg(2)
    alike = {name: np.ones((2, 2)) for name in LAYER_NAMES}
    rows = rank_trees(cfg, alike)
    assert rows[0]["branching"] is None and rows[0]["rank"] == 1  # identical tasks: share everything
    # tasks alike up to up5, then completely different: split right after up5 (index 2) costs nothing
    apart = {name: np.ones((2, 2)) if k <= 3 else np.eye(2) for k, name in enumerate(LAYER_NAMES)}
    rows = rank_trees(cfg, apart, node_cost="equal")
    assert best_within(rows, 1.0)["branching"] == [[2, [[0], [1]]]]
    by_branching = {str(r["branching"]): r for r in rows}
    assert by_branching["[[2, [[0], [1]]]]"]["dissimilarity"] == 0
    assert by_branching["None"]["dissimilarity"] == pytest.approx(5.0)  # 5 layers at dissimilarity 1
    tight = best_within(rows, by_branching["[[4, [[0], [1]]]]"]["compute"])
    assert tight["branching"] == [[4, [[0], [1]]]]  # cheapest budget: only splits at 4 .. 6 and None fit
    assert best_within(rows, 0.01) is None
    assert [r["rank"] for r in rows] == list(range(1, 11))  # 9 trees of one model and the two single models
    assert all((a["dissimilarity"], a["compute"]) <= (b["dissimilarity"], b["compute"])  # within 0.7 x, then over
               for a, b in zip(rows, rows[1:]) if a["fits"] == b["fits"])


@pytest.mark.parametrize("num_tasks", [2, pytest.param(3, marks=pytest.mark.slow)])  # 10 and 145 trees
def test_tree_gflops_of_every_tree_match_the_flops_counted_on_its_model(num_tasks):
    cfg = small_cfg(num_tasks)
    costs = ComputeModel(cfg)
    for branching in enumerate_branchings(num_tasks):  # separate models (-2): the sum of the models built alone
        counted = sum(gflops(build_model(model_config(cfg, tasks, b)), (64, 64))
                      for tasks, b in separate_models(branching, num_tasks))
        backbone, groups = tree_groups(branching, num_tasks)
        assert costs.tree_gflops(groups, len(backbone)) == pytest.approx(counted, rel=1e-9), branching


def test_budgeted_pick_on_a_hand_made_table():
    from yolo.research.tree_search import order_by_budget
    table = [dict(branching="all split", dissimilarity=0.0, compute=1.0),
             dict(branching="backbone shared", dissimilarity=0.2, compute=0.75),
             dict(branching="split late", dissimilarity=0.5, compute=0.68),
             dict(branching="split later, same dissimilarity", dissimilarity=0.5, compute=0.62),
             dict(branching="all shared", dissimilarity=2.0, compute=0.5)]
    rows = order_by_budget([dict(r) for r in table], 0.7)
    # within 0.7 x: the least dissimilar, ties to the cheaper; then the trees over the budget, least dissimilar first
    assert [r["branching"] for r in rows] == ["split later, same dissimilarity", "split late", "all shared",
                                              "all split", "backbone shared"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and [r["fits"] for r in rows] == [True] * 3 + [False] * 2
    assert best_within(rows, 0.7)["branching"] == "split later, same dissimilarity"
    assert best_within(rows, 0.8)["branching"] == "backbone shared"
    assert order_by_budget([dict(r) for r in table], 0.8)[0]["branching"] == "backbone shared"
    # a mean of dissimilarity / its largest value and compute would pick "backbone shared" (0.425) at any budget
    assert best_within(rows, 0.4) is None
    assert [r["branching"] for r in order_by_budget([dict(r) for r in table], 0.4)][:2] == ["all split",
                                                                                           "backbone shared"]


def test_five_tasks_rank_without_building_a_model_per_tree(monkeypatch):
    import yolo.research.tree_search as tree_search
    built = []

    def counting_build(cfg):
        built.append(cfg.branching)
        return build_model(cfg)

    monkeypatch.setattr(tree_search, "build_model", counting_build)
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.tasks = 0.25, 64, [dict(name=f"t{k}") for k in range(5)]
    cfg = cfg.finalize()
    # tasks 0 and 1 see the images alike at every layer, so do 2, 3 and 4; the two groups differ (0.4)
    alike = np.full((5, 5), 0.4)
    alike[:2, :2] = alike[2:, 2:] = 1.0
    rows = tree_search.rank_trees(cfg, {name: alike for name in LAYER_NAMES}, budget=0.7)
    assert len(rows) == 64660 and len(built) <= 1  # the GFLOPs of every tree from the parts of one model
    # dissimilarity 0 only when the two groups share nothing, not even the backbone: two models, 2 / 5 of the compute
    assert rows[0]["branching"] == [[-2, [[0, 1], [2, 3, 4]]]] and rows[0]["fits"] and rows[0]["dissimilarity"] == 0
    # within one model the pick is the cheapest tree that splits the groups right after the backbone
    one_model = [r for r in rows if r["models"] == 1]
    assert one_model[0]["branching"] == [[-1, [[0, 1], [2, 3, 4]]]]
    assert all(r["ms"] != r["ms"] for r in rows)  # nothing timed yet
    tree_search.time_trees(cfg, rows[:2])
    # one model built per model of the two trees timed (separate models: each of them)
    assert len(built) <= 1 + rows[0]["models"] + rows[1]["models"]
    assert rows[0]["ms"] > 0 and rows[2]["ms"] != rows[2]["ms"]


def test_enumerated_groups_are_the_grammars():
    from yolo.research.tree_search import enumerate_trees
    for num_tasks in (2, 3, 4):
        for branching, groups in enumerate_trees(num_tasks):
            if branching and branching[0][0] == -2:
                assert groups == tree_groups(branching, num_tasks)[1], branching
            else:
                assert groups == neck_groups(branching, num_tasks), branching


@pytest.mark.parametrize("num_tasks", [2, 3, 4])
def test_splits_at_the_input_are_every_partition_of_trees_of_one_model_once(num_tasks):
    """Separate models: each partition of the tasks into 2 or more groups, each group any tree of its own tasks (a
    group of one: its single model): sum over partitions of the product of the groups' tree counts."""
    from yolo.research.tree_search import set_partitions
    one_model = {n: sum(1 for b in enumerate_branchings(n) if not (b and b[0][0] == -2)) for n in range(1, 5)}
    assert one_model[1] == 1 and one_model[2] == 9 and one_model[3] == 117
    forests = [b for b in enumerate_branchings(num_tasks) if b and b[0][0] == -2]
    expected = sum(int(np.prod([one_model[len(g)] for g in p])) for p in set_partitions(list(range(num_tasks)))
                   if len(p) > 1)
    assert len(forests) == expected == {2: 1, 3: 28, 4: 766}[num_tasks]
    seen = set()
    for branching in forests:
        models = separate_models(branching, num_tasks)
        assert sorted(t for tasks, _ in models for t in tasks) == list(range(num_tasks)) and len(models) > 1
        for tasks, model_branching in models:
            neck_groups(model_branching, len(tasks))  # each model is a tree the config accepts
        backbone, groups = tree_groups(branching, num_tasks)
        seen.add((tuple(sorted(tuple(g) for g in backbone)), tree_key(groups)))
    assert len(seen) == len(forests)  # each once


def test_a_split_at_the_input_is_refused_as_a_config_with_what_to_do():
    with pytest.raises(ValueError, match=r"-2 .*separate models.*its own config"):
        neck_groups([[-2, [[0, 1], [2]]]], 3)
    with pytest.raises(ValueError, match="every task once"):
        separate_models([[-2, [[0, 1]]]], 3)
    with pytest.raises(ValueError, match=r"group \[0, 1, 2\] .* not inside one of the separate models"):
        separate_models([[-2, [[0], [1, 2]]], [3, [[0, 1, 2]]]], 3)  # a later group across two models
    with pytest.raises(ValueError, match="must increase"):
        separate_models([[-2, [[0, 1], [2]]], [3, [[0], [1]]], [1, [[0], [1]]]], 3)


def test_separate_models_score_and_compute_by_hand():
    """[[-2, [[0, 2], [1]]], [3, [[0], [2]]]]: tasks 0 and 2 share a backbone and blocks 0-3, task 1 is alone.
    Equal node cost: backbone node {0, 2} 1 x d02, blocks 0-3 (k = 1..4) (k + 1) x d02; the GFLOPs are the sum of
    the two models built alone (task 1's single model and a two-task model)."""
    d = np.array([[0, 0.01, 0.05], [0.01, 0, 0.03], [0.05, 0.03, 0]])
    sims = {name: 1 - (k + 1) * d for k, name in enumerate(LAYER_NAMES)}
    branching = [[-2, [[0, 2], [1]]], [3, [[0], [2]]]]
    backbone, groups = tree_groups(branching, 3)
    assert backbone == [[0, 2], [1]] and groups[3] == [[0, 2], [1]] and groups[4] == [[0], [2], [1]]
    assert dissimilarity_score(groups, sims, backbone_groups=backbone) == pytest.approx(0.05 * (1 + 2 + 3 + 4 + 5))
    cfg = small_cfg(3)
    costs = ComputeModel(cfg)
    models = separate_models(branching, 3)
    assert models == [([0, 2], [[3, [[0], [1]]]]), ([1], None)]
    counted = sum(gflops(build_model(model_config(cfg, tasks, b)), (64, 64)) for tasks, b in models)
    dissimilarity, compute = score_tree(costs, sims, branching, "equal")
    assert dissimilarity == pytest.approx(0.05 * 15)
    assert compute * costs.singles_gflops() == pytest.approx(counted, rel=1e-9)
    # task 1's model is its single-task model: its classes, no tasks list
    single = model_config(cfg, [1], None)
    assert single.tasks is None and single.num_classes == 2


def test_gflops_node_cost_weighs_each_layer_by_its_share_of_the_compute():
    """rsa_node_cost gflops: weight of a layer = its GFLOPs / (backbone + neck) of one model; the weights sum to 1,
    and a tree's score is the sum of its nodes' costs times those weights (hand-computed on all shared)."""
    costs = ComputeModel(small_cfg(3))
    weights = costs.layer_weights("gflops")
    assert costs.layer_weights("equal") is None
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["backbone"] > max(weights[n] for n in NECK_BLOCK_NAMES)
    rng = np.random.default_rng(0)
    sims = {}
    for name in LAYER_NAMES:
        s = rng.uniform(0, 1, (3, 3))
        s = (s + s.T) / 2
        np.fill_diagonal(s, 1)
        sims[name] = s
    by_hand = sum(weights[name] * np.mean([max(1 - sims[name][t][u] for u in range(3) if u != t) for t in range(3)])
                  for name in LAYER_NAMES)
    assert score_tree(costs, sims, None, "gflops")[0] == pytest.approx(by_hand, rel=1e-12)
    assert score_tree(costs, sims, None, "equal")[0] == pytest.approx(
        sum(np.mean([max(1 - sims[n][t][u] for u in range(3) if u != t) for t in range(3)]) for n in LAYER_NAMES))


def test_gflops_node_cost_puts_a_task_apart_from_the_input_when_rsa_finds_it_far_everywhere():
    """Tasks 0 and 1 alike everywhere (0.84 at the backbone, 0.73 in the neck), task 2 far (0.36, 0.3): summed with
    equal weights, eight shared neck blocks of the close pair cost more than the one backbone of all three, so the
    pick shares the backbone; weighted by compute, the pick is task 2 alone and the pair in one model."""
    cfg = small_cfg(3)
    sims = {}
    for k, name in enumerate(LAYER_NAMES):
        s = np.full((3, 3), 0.36 if k == 0 else 0.3)
        s[0, 1] = s[1, 0] = 0.84 if k == 0 else 0.73
        np.fill_diagonal(s, 1)
        sims[name] = s
    assert rank_trees(cfg, sims, 0.7, "equal")[0]["branching"] == [[-1, [[0], [1], [2]]]]
    pick = rank_trees(cfg, sims, 0.7, "gflops")[0]
    assert pick["branching"][0] == [-2, [[0, 1], [2]]] and pick["models"] == 2 and pick["fits"]
