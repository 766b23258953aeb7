"""Branching search (yolo/research/tree_search.py): the enumeration against a brute-force filter of candidate lists
through the config's own validation, the tree score against a hand-computed tree, and the compute of a tree against
the FLOPs counted on the model it builds."""
import itertools

import numpy as np
import pytest

from yolo.branching import NECK_BLOCK_NAMES, neck_groups
from yolo.research.tree_search import (ComputeModel, best_within, dissimilarity_score, enumerate_branchings, rank_trees,
                                   tree_key)
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
    found = enumerate_branchings(num_tasks)
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
    rows = rank_trees(cfg, apart)
    assert best_within(rows, 1.0)["branching"] == [[2, [[0], [1]]]]
    by_branching = {str(r["branching"]): r for r in rows}
    assert by_branching["[[2, [[0], [1]]]]"]["dissimilarity"] == 0
    assert by_branching["None"]["dissimilarity"] == pytest.approx(5.0)  # 5 layers at dissimilarity 1
    tight = best_within(rows, by_branching["[[4, [[0], [1]]]]"]["compute"])
    assert tight["branching"] == [[4, [[0], [1]]]]  # cheapest budget: only splits at 4 .. 6 and None fit
    assert best_within(rows, 0.01) is None
    assert [r["rank"] for r in rows] == list(range(1, 10))
    assert all((a["dissimilarity"], a["compute"]) <= (b["dissimilarity"], b["compute"])  # within 0.7 x, then over
               for a, b in zip(rows, rows[1:]) if a["fits"] == b["fits"])


@pytest.mark.parametrize("num_tasks", [2, pytest.param(3, marks=pytest.mark.slow)])  # 9 and 117 trees
def test_tree_gflops_of_every_tree_match_the_flops_counted_on_its_model(num_tasks):
    costs = ComputeModel(small_cfg(num_tasks))
    for branching in enumerate_branchings(num_tasks):
        counted = gflops(build_model(small_cfg(num_tasks, branching)), (64, 64))
        assert costs.tree_gflops(neck_groups(branching, num_tasks)) == pytest.approx(counted, rel=1e-9), branching


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
    assert len(rows) == 41709 and len(built) <= 1  # the GFLOPs of every tree from the parts of one model
    # dissimilarity 0 in the neck only when the groups never share a block; the cheapest such tree
    assert rows[0]["branching"] == [[-1, [[0, 1], [2, 3, 4]]]] and rows[0]["fits"]
    assert all(r["ms"] != r["ms"] for r in rows)  # nothing timed yet
    tree_search.time_trees(cfg, rows[:2])
    assert len(built) <= 3 and rows[0]["ms"] > 0 and rows[2]["ms"] != rows[2]["ms"]


def test_enumerated_groups_are_the_grammars():
    from yolo.research.tree_search import enumerate_trees
    for num_tasks in (2, 3, 4):
        for branching, groups in enumerate_trees(num_tasks):
            assert groups == neck_groups(branching, num_tasks), branching
