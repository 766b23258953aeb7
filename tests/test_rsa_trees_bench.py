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


def bench_args(tmp_path):
    import argparse
    return argparse.Namespace(out_dir=tmp_path, data="shapes", reuse=None)


def three_task_cfg(tmp_path):
    from yolo.config import BaseConfig
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.runs_dir = 0.25, 64, str(tmp_path / "runs")
    cfg.tasks = [dict(name="a"), dict(name="b"), dict(name="c", class_names=["z"])]
    return cfg.finalize()


def test_a_split_at_the_input_trains_one_model_per_group_and_reuses_the_single_model_at_seed_0(tmp_path, monkeypatch):
    """[[-2, [[0, 2], [1]]], [4, [[0], [2]]]]: tasks a and c in one model (branching in their own ids), b alone:
    at seed 0 b's single-task model of --stage singles is taken, at seed 1 b is trained as a single-task model."""
    import bench.rsa_trees as bench
    cfg = three_task_cfg(tmp_path)
    for name, score in (("a", 0.5), ("b", 0.6), ("c", 0.7)):
        bench.append_row(tmp_path / "results.csv", dict(kind="single", label=name, seed=0, compute=1.0,
                                                       **{f"map50_{name}": score + 0.2, f"map_{name}": score},
                                                       train_s=100.0, run_dir=f"singles/{name}"), cfg.task_names)
    trained = []

    def fake_train(model_cfg):
        trained.append(model_cfg)
        return tmp_path / model_cfg.run_name

    monkeypatch.setattr(bench, "trained", fake_train)
    monkeypatch.setattr(bench, "last_scores", lambda run_dir, names: [(0.9, 0.1 * (k + 1)) for k in range(len(names))])
    monkeypatch.setattr(bench, "last_row", lambda run_dir: {"time_s": 10.0})
    branching = [[-2, [[0, 2], [1]]], [4, [[0], [2]]]]
    scores, seconds, run_dirs = bench.train_tree(cfg, bench_args(tmp_path), "pick", branching, 0)
    assert len(trained) == 1 and trained[0].task_names == ("a", "c") and trained[0].branching == [[4, [[0], [1]]]]
    assert trained[0].run_name == "pick_seed0_a-c" and trained[0].seed == 0
    assert scores == {"a": (0.9, 0.1), "c": (0.9, 0.2), "b": (0.8, 0.6)} and seconds == 110.0
    assert run_dirs[1] == "singles/b"
    trained.clear()
    scores, _, _ = bench.train_tree(cfg, bench_args(tmp_path), "pick", branching, 1)
    assert [m.run_name for m in trained] == ["pick_seed1_a-c", "pick_seed1_b"] and trained[1].tasks is None
    assert all(m.seed == 1 for m in trained) and scores["b"] == (0.9, 0.1)


def test_reused_trees_take_this_rankings_labels_and_scores(tmp_path):
    """--reuse: every tree row of another results.csv whose tree this ranking holds is copied with this ranking's
    rank, dissimilarity and compute; a chosen tree takes its label here, another keeps its own unless that label
    names another tree here."""
    import bench.rsa_trees as bench
    names = ("a", "b", "c")
    other = tmp_path / "other.csv"
    for label, branching, seed in (("pick", "[[-1, [[0], [1], [2]]]]", 0), ("pick", "[[-1, [[0], [1], [2]]]]", 1),
                                   ("spread_3", "[[4, [[0], [1], [2]]]]", 0), ("all_shared", "None", 0)):
        bench.append_row(other, dict(kind="tree", label=label, branching=branching, seed=seed, rsa_rank=9,
                                     dissimilarity=9.0, compute=0.5, map_mean=0.4), names)
    ranking = [dict(branching=[[-2, [[0, 1], [2]]]], rank=1, dissimilarity=0.2, compute=0.67),
               dict(branching=[[-1, [[0], [1], [2]]]], rank=2, dissimilarity=0.3, compute=0.68),
               dict(branching=None, rank=50, dissimilarity=2.0, compute=0.34),
               dict(branching=[[4, [[0], [1], [2]]]], rank=60, dissimilarity=3.0, compute=0.45)]
    plan = dict(chosen=[("pick", [[-2, [[0, 1], [2]]]]), ("all_shared", None),
                        ("split_backbone", [[-1, [[0], [1], [2]]]]), ("spread_3", [[5, [[0, 1], [2]]]])])
    results = tmp_path / "results.csv"
    bench.reuse_trees(other, results, plan, {repr(r["branching"]): r for r in ranking}, names)
    rows = bench.read_rows(results)
    assert [(r["label"], r["seed"], r["rsa_rank"]) for r in rows] == [
        ("split_backbone", "0", "2"), ("split_backbone", "1", "2"), ("other_spread_3", "0", "60"),
        ("all_shared", "0", "50")]
    assert rows[0]["dissimilarity"] == "0.3" and rows[0]["map_mean"] == "0.4"
    bench.reuse_trees(other, results, plan, {repr(r["branching"]): r for r in ranking}, names)
    assert len(bench.read_rows(results)) == 4  # a second call copies nothing twice
