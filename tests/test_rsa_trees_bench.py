"""bench/rsa_trees.py without training: the trees it chooses from a ranking, and its rank correlation."""
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.rsa_trees import chosen_trees, rank_correlation  # noqa: E402
from yolo.research.tree_search import enumerate_branchings  # noqa: E402


def test_chosen_trees_are_the_pick_the_two_extremes_and_a_spread_of_the_ranking():
    branchings = enumerate_branchings(3)
    ranked = [dict(branching=b, dissimilarity=float(k), compute=1.0) for k, b in enumerate(reversed(branchings))]
    pick = [[2, [[0, 1], [2]]]]
    chosen = chosen_trees(ranked, pick, 3, 8)
    labels, trees = [c[0] for c in chosen], [c[1] for c in chosen]
    assert labels[:3] == ["pick", "all_shared", "split_backbone"] and len(chosen) == 8
    assert trees[:3] == [pick, None, [[-1, [[0], [1], [2]]]]]
    assert len({repr(t) for t in trees}) == 8  # each tree once
    order = [repr(r["branching"]) for r in ranked]
    spread = sorted(order.index(repr(t)) for t in trees[3:])
    assert spread[0] <= 1 and spread[-1] >= len(order) - 3  # from the least to the most dissimilar
    # the pick may be one of the fixed trees: it is listed once, as the pick
    chosen = chosen_trees(ranked, [[-1, [[0], [1], [2]]]], 3, 6)
    assert [c[0] for c in chosen][:2] == ["pick", "all_shared"] and len(chosen) == 6
    assert len({repr(c[1]) for c in chosen}) == 6


def test_rank_correlation_is_scipys_spearman():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=9), rng.normal(size=9)
    y[3] = y[5]  # a tie
    assert rank_correlation(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert rank_correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert np.isnan(rank_correlation([1, 2], [2, 1]))
