"""--task merge, --task peel and --task rsa on small random models: merge then peel gives each task's own weights
back exactly, a peeled task detects exactly what the multi-task model detects for it, and rsa writes its outputs."""
import csv

import pytest
import torch

from yolo.branching import neck_groups
from yolo.config import BaseConfig, config_from_dict, task_configs
from yolo.data.dataset import read_records
from yolo.engine.checkpoint import load_checkpoint, save_checkpoint
from yolo.models.detector import build_model
from yolo.branching import neck_routes
from yolo.models.merge import merge_states, peel_state
from yolo.models.weights import load_matching_state
from yolo.postprocess import postprocess
from yolo.tasks import merge, peel, rsa

SYMBOLS = ["star", "cross", "ring"]


def single_cfg(tmp_path, name, classes, shapes_seed):
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.class_names, cfg.shapes_seed = 0.25, 64, classes, shapes_seed
    cfg.data_root, cfg.shapes_num_train, cfg.shapes_num_val = str(tmp_path / name), 4, 6
    cfg.num_workers, cfg.runs_dir = 0, str(tmp_path / "runs")
    return cfg.finalize()


def multi_cfg(tmp_path, branching, **fields):
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.shapes_num_train, cfg.shapes_num_val, cfg.num_workers = 0.25, 64, 4, 6, 0
    cfg.tasks = [dict(name="shapes", data_root=str(tmp_path / "shapes")),
                 dict(name="symbols", data_root=str(tmp_path / "symbols"), class_names=SYMBOLS, shapes_seed=1)]
    cfg.branching, cfg.runs_dir, cfg.run_name = branching, str(tmp_path / "runs"), "mt"
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def randomised(model, seed):
    """Random weights and BN statistics, so no two tasks' tensors are equal by chance."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point() and value.dim() != 3:  # not the anchors
                value.copy_(torch.rand(value.shape, generator=g) * 0.5 + 0.5 if value.dim() == 1
                            else torch.randn(value.shape, generator=g) * 0.1)
    return model


def save_single(tmp_path, name, classes, shapes_seed, seed):
    cfg = single_cfg(tmp_path, name, classes, shapes_seed)
    path = tmp_path / f"{name}.pt"
    save_checkpoint({"model": randomised(build_model(cfg), seed).state_dict(), "config": cfg.to_dict()}, path)
    return path


THREE_TASK_BRANCHING = [[2, [[2], [0, 1]]], [4, [[0], [1]]]]


def test_merge_then_peel_round_trips_each_tasks_weights():
    torch.manual_seed(0)
    cfg = BaseConfig()
    cfg.width, cfg.img_size = 0.25, 64
    states = [randomised(build_model(cfg.finalize()), seed).state_dict() for seed in range(3)]
    groups = neck_groups(THREE_TASK_BRANCHING, 3)
    merged = merge_states(states, groups)
    multi = BaseConfig()
    multi.width, multi.img_size, multi.tasks, multi.branching = 0.25, 64, [dict(name=n) for n in "abc"], \
        THREE_TASK_BRANCHING
    build_model(multi.finalize()).load_state_dict(merged)  # strict: every key, every shape
    routes = neck_routes(groups)
    for t in range(3):
        peeled = peel_state(merged, groups, t)
        assert peeled.keys() == states[t].keys()
        for key, value in peeled.items():
            if key.startswith("neck.blocks."):
                j = int(key.split(".")[2])
                owner = groups[j][routes[t][j]][0]  # the copy's first task gave it its weights
            else:
                owner = 0 if key.startswith("backbone.") else t  # backbone: the first task; head: its own
            assert torch.equal(value, states[owner][key]), (t, key)
        own = [k for k in peeled if k.startswith("heads.") or k.startswith("neck.blocks.7.")]
        assert all(torch.equal(peeled[k], states[t][k]) for k in own)  # own layers: exactly the task's weights
    # peel every task, merge them again: the multi-task state comes back exactly
    again = merge_states([peel_state(merged, groups, t) for t in range(3)], groups)
    assert again.keys() == merged.keys() and all(torch.equal(again[k], merged[k]) for k in merged)
    averaged = merge_states(states, groups, average=True)
    key = "neck.blocks.3.1.0.0.weight"  # block 3's copy for tasks 0 and 1
    torch.testing.assert_close(averaged[key], (states[0]["neck.blocks.3.0.0.0.weight"]
                                               + states[1]["neck.blocks.3.0.0.0.weight"]) / 2)


def test_peeled_task_gives_exactly_the_multitask_detections(tmp_path):
    cfg = multi_cfg(tmp_path, [[3, [[0], [1]]]])
    model = randomised(build_model(cfg), 5).eval()
    path = tmp_path / "multi.pt"
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 3}, path)
    cfg.peel_task, cfg.ckpt_path = "symbols", str(path)
    out = peel.run(cfg)
    ckpt = load_checkpoint(out)
    saved = config_from_dict(ckpt["config"])
    assert saved.tasks is None and saved.class_names == SYMBOLS and saved.shapes_seed == 1
    single = build_model(saved).eval()
    single.load_state_dict(ckpt["model"])
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        expected = postprocess(model(images, task=1), model.decoding, 0.3, 0.45)
        got = postprocess(single(images), single.decoding, 0.3, 0.45)
    assert sum(len(b) for b, _, _ in expected) > 0
    for (b1, s1, l1), (b2, s2, l2) in zip(expected, got):
        assert torch.equal(b1, b2) and torch.equal(s1, s2) and torch.equal(l1, l2)
    with pytest.raises(ValueError, match="has the task\\(s\\) \\['shapes', 'symbols'\\]"):
        cfg.peel_task = "circles"
        peel.run(cfg)


def test_merge_command_writes_an_init_ckpt_and_checks_its_inputs(tmp_path):
    a = save_single(tmp_path, "shapes", ["circle", "square", "triangle"], 0, seed=1)
    b = save_single(tmp_path, "symbols", SYMBOLS, 1, seed=2)
    cfg = multi_cfg(tmp_path, [[3, [[0], [1]]]], merge_ckpts=f"{a},{b}")
    out = merge.run(cfg)
    merged = load_checkpoint(out)
    state_b = load_checkpoint(b)["model"]
    assert torch.equal(merged["model"]["heads.1.convs.0.weight"], state_b["heads.0.convs.0.weight"])
    assert torch.equal(merged["model"]["neck.blocks.5.1.0.0.weight"], state_b["neck.blocks.5.0.0.0.weight"])
    assert config_from_dict(merged["config"]).branching == [[3, [[0], [1]]]]
    # as init_ckpt of the multi-task training: every tensor of the model comes from it
    model = build_model(multi_cfg(tmp_path, [[3, [[0], [1]]]]))
    loaded, skipped = load_matching_state(model, merged["model"])
    assert not skipped and len(loaded) == len(model.state_dict())
    with pytest.raises(ValueError, match="give the checkpoints in the order of `tasks`"):
        merge.run(multi_cfg(tmp_path, None, merge_ckpts=f"{b},{a}"))
    with pytest.raises(ValueError, match="names 1 checkpoint"):
        merge.run(multi_cfg(tmp_path, None, merge_ckpts=str(a)))


def test_rsa_command_writes_its_outputs(tmp_path):
    torch.set_num_threads(1)
    a = save_single(tmp_path, "shapes", ["circle", "square", "triangle"], 0, seed=1)
    b = save_single(tmp_path, "symbols", SYMBOLS, 1, seed=2)
    cfg = multi_cfg(tmp_path, None, rsa_ckpts=f"{a},{b}", rsa_images=5)
    for task in task_configs(cfg):  # generate each task's data, as its training would: rsa only reads it
        read_records(task, "val")
    result = rsa.run(cfg, measure_ms=False)
    out = result["out_dir"]
    for name in ("similarity.png", "similarity_depth.png", "similarity.json", "tree.png", "recommended.txt"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "trees.csv")))
    assert len(rows) == 10 and rows[0]["rank"] == "1"  # 9 trees of one model, and the two single models
    assert (out / "recommended.txt").read_text().startswith(f"self.branching = {result['recommended']!r}")
    layer = result["similarities"]["top4"]
    assert layer[0][0] == 1 and layer[0][1] == layer[1][0]


def with_other_anchors(tmp_path, path, name):
    """The single-task checkpoint `path` as if trained with anchors refit to its data: other anchors, two per scale
    instead of three (so also other head outputs); backbone and neck unchanged."""
    ckpt = load_checkpoint(path)
    saved = config_from_dict(ckpt["config"])
    saved.anchors = [[(9, 7), (20, 26)], [(30, 18), (44, 50)], [(60, 40), (70, 90)]]
    other = randomised(build_model(saved.finalize()), 9).state_dict()
    state = {k: other[k] if k == "anchors" or k.startswith("heads.") else v for k, v in ckpt["model"].items()}
    out = tmp_path / name
    save_checkpoint({"model": state, "config": saved.to_dict()}, out)
    return out


def test_rsa_accepts_models_with_other_anchors_and_finds_the_same_similarities(tmp_path):
    torch.set_num_threads(1)
    a = save_single(tmp_path, "shapes", ["circle", "square", "triangle"], 0, seed=1)
    b = save_single(tmp_path, "symbols", SYMBOLS, 1, seed=2)
    b_refit = with_other_anchors(tmp_path, b, "symbols_refit.pt")
    cfg = multi_cfg(tmp_path, None, rsa_ckpts=f"{a},{b}", rsa_images=5)
    for task in task_configs(cfg):
        read_records(task, "val")
    same = rsa.run(cfg, measure_ms=False)["similarities"]
    other = rsa.run(multi_cfg(tmp_path, None, rsa_ckpts=f"{a},{b_refit}", rsa_images=5), measure_ms=False)
    assert other["similarities"] == same  # the neck's features do not depend on the anchors


def test_merge_refuses_other_anchors_with_the_command_that_fixes_it(tmp_path):
    a = save_single(tmp_path, "shapes", ["circle", "square", "triangle"], 0, seed=1)
    b = with_other_anchors(tmp_path, save_single(tmp_path, "symbols", SYMBOLS, 1, seed=2), "symbols_refit.pt")
    with pytest.raises(ValueError, match=r"anchors.*--anchors .*--auto_anchor_bpr 0"):
        merge.run(multi_cfg(tmp_path, [[3, [[0], [1]]]], merge_ckpts=f"{a},{b}"))


def test_rsa_command_recommends_within_rsa_budget_and_times_only_the_trees_it_names(tmp_path):
    torch.set_num_threads(1)
    a = save_single(tmp_path, "shapes", ["circle", "square", "triangle"], 0, seed=1)
    b = save_single(tmp_path, "symbols", SYMBOLS, 1, seed=2)
    cfg = multi_cfg(tmp_path, None, rsa_ckpts=f"{a},{b}", rsa_images=5, rsa_budget=0.65, rsa_measure="cka")
    for task in task_configs(cfg):
        read_records(task, "val")
    result = rsa.run(cfg)
    rows = list(csv.DictReader(open(result["out_dir"] / "trees.csv")))
    assert len(rows) == 10 and list(rows[0]) == ["rank", "branching", "models", "fits", "dissimilarity", "compute",
                                                 "gflops", "ms"]
    assert rows[0]["branching"] == repr(result["recommended"]) and float(rows[0]["compute"]) <= 0.65
    named = {repr(result["recommended"])} | {repr(r["branching"]) for r in result["budgets"].values() if r}
    assert {r["branching"] for r in rows if r["ms"]} == named and len(named) < len(rows)
    assert sorted(result["budgets"]) == [0.6, 0.65, 0.8, 1.0]
    text = (result["out_dir"] / "recommended.txt").read_text()
    assert "cka RSA, gflops node cost, least dissimilar within rsa_budget = 0.65 x" in text and "#   <= 0.65: " in text
    # the two single models (-2) cost 1.0 x and share nothing (dissimilarity 0): the pick within 1.0, timed
    alone = result["budgets"][1.0]
    assert alone["branching"] == [[-2, [[0], [1]]]] and alone["models"] == 2 and alone["ms"] > 0


def test_a_recommendation_of_separate_models_says_which_config_trains_each():
    """A pick that splits at the input (-2) is no single `self.branching` line: one line per model, its tasks and
    the branching in their own ids, a group of one task being its single-task model."""
    from types import SimpleNamespace
    best = dict(branching=[[-2, [[0, 2], [1]]], [3, [[0], [2]]]], rank=1, dissimilarity=0.2, compute=0.69,
                gflops=1.5, ms=float("nan"))
    cfg = SimpleNamespace(task_names=("cards_a", "raccoon", "cards_b"), rsa_measure="spearman", rsa_node_cost="gflops",
                          rsa_budget=0.7)
    text = rsa.recommendation(best, {0.7: best}, [best], cfg)
    lines = text.splitlines()
    assert lines[0].startswith("# separate models ([[-2, [[0, 2], [1]]], [3, [[0], [2]]]])")
    assert lines[1] == "#   tasks ['cards_a', 'cards_b']: self.tasks = those tasks, self.branching = [[3, [[0], [1]]]]"
    assert lines[2] == "#   tasks ['raccoon']: its single-task model"
    assert "self.branching = [[-2" not in text and "gflops node cost" in text
