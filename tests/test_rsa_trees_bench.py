"""bench/rsa_trees.py without training: the trees it chooses from a ranking, and its rank correlation."""
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.rsa_trees import chosen_trees, rank_correlation, real_tasks  # noqa: E402
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


def test_real_tasks_split_the_card_photos_into_two_disjoint_halves_and_add_raccoon(tmp_path):
    """--data real: cards_a and cards_b list alternate photos of each split folder (together: all of them, none
    twice); a missing folder is a one-line exit naming it."""
    import argparse

    cards = tmp_path / "cards"
    for folder, count in (("train", 7), ("test", 4)):
        (cards / folder).mkdir(parents=True)
        for k in range(count):
            (cards / folder / f"IMG_{k:02d}.xml").write_text("<annotation/>")
    raccoon = tmp_path / "raccoon"
    (raccoon / "annotations").mkdir(parents=True)
    args = argparse.Namespace(cards_root=cards, raccoon_root=raccoon, out_dir=tmp_path / "out")
    a, b, r = real_tasks(args)
    assert [a["name"], b["name"], r["name"]] == ["cards_a", "cards_b", "raccoon"]
    for split, count in (("train", 7), ("val", 4)):
        first = (tmp_path / "out" / "splits" / f"cards_a_{split}.txt").read_text().split()
        second = (tmp_path / "out" / "splits" / f"cards_b_{split}.txt").read_text().split()
        assert not set(first) & set(second) and len(first) + len(second) == count
        assert abs(len(first) - len(second)) <= 1
    assert a["train_split_file"].endswith("cards_a_train.txt") and a["class_names"] == b["class_names"]
    with pytest.raises(SystemExit, match=r"no \.xml annotations in .*none"):
        real_tasks(argparse.Namespace(cards_root=tmp_path / "none", raccoon_root=raccoon, out_dir=tmp_path / "out"))


def test_the_card_tasks_read_a_one_class_copy_and_leave_the_photos_folder_alone(tmp_path):
    """--data real: every box of the cards becomes "card" in a copy under the bench's folder, images linked."""
    import argparse
    from xml.etree import ElementTree

    cards = tmp_path / "cards"
    xml = ("<annotation><filename>{0}.jpg</filename><size><width>40</width><height>30</height><depth>3</depth></size>"
           "<object><name>king</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>25</ymax></bndbox>"
           "</object><object><name>ace</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>30</xmax><ymax>28</ymax>"
           "</bndbox></object></annotation>")
    for folder in ("train", "test"):
        (cards / folder).mkdir(parents=True)
        for k in range(3):
            (cards / folder / f"IMG_{k}.xml").write_text(xml.format(f"IMG_{k}"))
            (cards / folder / f"IMG_{k}.jpg").write_bytes(b"not read here")
    before = {p: p.read_bytes() for p in cards.rglob("*") if p.is_file()}
    raccoon = tmp_path / "raccoon"
    (raccoon / "annotations").mkdir(parents=True)
    a, b, _ = real_tasks(argparse.Namespace(cards_root=cards, raccoon_root=raccoon, out_dir=tmp_path / "out"))
    assert a["class_names"] == b["class_names"] == ["card"] and a["data_root"] == b["data_root"]
    copy = tmp_path / "out" / "cards_one_class"
    assert a["data_root"] == str(copy.resolve())
    assert {p: p.read_bytes() for p in cards.rglob("*") if p.is_file()} == before  # the photos' folder untouched
    assert (copy / "train" / "IMG_1.jpg").resolve() == (cards / "train" / "IMG_1.jpg").resolve()
    names = [n.text for n in ElementTree.parse(copy / "test" / "IMG_2.xml").getroot().iter("name")]
    assert names == ["card", "card"]
