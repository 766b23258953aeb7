"""Multi-task branching: the `branching` grammar, which modules are shared, gradients per task, the trainer's task
loop (cycling, weights, shared-gradient averaging), checkpoints, per-task evaluation and prediction, DDP."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, SHARED_DATA
from yolo.config import BaseConfig, apply_overrides, task_configs
from yolo.engine import trainer
from yolo.engine.distributed import DistInfo
from yolo.tasks.info import describe_model
from yolo.engine.multitask import task_batches
from yolo.engine.setup import Training
from yolo.engine.trainer import train_one_epoch
from yolo.loss import YOLOLoss
from yolo.models.detector import build_model
from yolo.branching import neck_groups

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
THREE_TASKS = [dict(name="a"), dict(name="b", class_names=["star", "cross"]), dict(name="c", class_names=["ring"])]
NESTED_EXAMPLE = [[2, [[2], [0, 1]]], [4, [[0], [1]]]]


def multitask_cfg(tasks=THREE_TASKS, branching=NESTED_EXAMPLE, **fields):
    cfg = BaseConfig()
    cfg.tasks, cfg.branching, cfg.width, cfg.img_size = tasks, branching, 0.25, 64
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


# ------------------------------------------------------------------------------------------------- grammar
def test_nested_example_groups():
    groups = neck_groups(NESTED_EXAMPLE, 3)
    assert groups[:3] == [[[0, 1, 2]]] * 3                 # blocks 0-2: one copy for all
    assert groups[3:5] == [[[2], [0, 1]]] * 2              # blocks 3-4: task 2 alone, tasks 0 and 1 together
    assert groups[5:] == [[[2], [0], [1]]] * 3             # blocks 5-7: one copy per task ([2] not re-listed)
    assert neck_groups(None, 2) == [[[0, 1]]] * 8          # no branching: the whole neck shared
    assert neck_groups([[-1, [[0], [1]]]], 2) == [[[0], [1]]] * 8  # -1: split right after the backbone


@pytest.mark.parametrize("branching, message", [
    ([[2, [[0], [1]]]], "splits group \\[0, 1, 2\\] but leaves out task\\(s\\) \\[2\\]"),  # task 2 missing
    ([[2, [[2], [0, 1]]], [4, [[0]]]], "leaves out task\\(s\\) \\[1\\]"),     # a split must be complete
    ([[2, [[0, 1], [1, 2]]]], "may appear once"),                                 # task 1 twice
    ([[2, [[0], [1], [2, 3]]]], "may appear once"),                               # unknown task 3
    ([[7, [[0], [1, 2]]]], "out of range"),                                       # nothing left after layer 7
    ([[-2, [[0], [1, 2]]]], "separate models, not one"),                        # --task rsa's split at the input
    ([[-3, [[0], [1, 2]]]], "out of range"),
    ([[4, [[0], [1, 2]]], [2, [[0], [1], [2]]]], "must increase"),
    ([[2, [[0], [1, 2]]], [2, [[0], [1], [2]]]], "must increase"),
    ([[2, [[0], [1, 2]]], [4, [[0, 1], [2]]]], "not inside one group of the previous entries"),  # a merge
    ([[2, [[0, 1, 2], []]]], "empty group"),
    ([[2, [0, 1, 2]]], "must be \\[layer_index"),
    ([2, [[0], [1, 2]]], "must be \\[layer_index"),
    ([["2", [[0], [1, 2]]]], "must be \\[layer_index"),
])
def test_branching_errors_name_the_entry(branching, message):
    with pytest.raises(ValueError, match=message) as info:
        multitask_cfg(branching=branching)
    assert "config field 'branching', entry" in str(info.value)


@pytest.mark.parametrize("fields, message", [
    (dict(tasks=[dict(name="a"), dict(name="a")]), "unique non-empty 'name'"),
    (dict(tasks=[dict(name="a"), dict(class_names=["star"])]), "unique non-empty 'name'"),
    (dict(tasks=[dict(name="a", clas_names=["star"])]), "did you mean 'class_names'"),
    (dict(tasks=[dict(name="a", lr=0.1)]), "a task may set"),
    (dict(tasks=[]), "non-empty list of dicts"),
    (dict(tasks=THREE_TASKS, task_weights=[1.0, 1.0]), "one number >= 0 per task"),
    (dict(tasks=THREE_TASKS, task_weights=[1.0, -1.0, 1.0]), "one number >= 0 per task"),
    (dict(tasks=None, branching=[[2, [[0]]]]), "need a list of 'tasks'"),
    (dict(tasks=[dict(name="a", class_names=[])]), "task 'a': config field 'class_names'"),
])
def test_task_config_errors(fields, message):
    cfg = BaseConfig()
    for k, v in fields.items():
        setattr(cfg, k, v)
    with pytest.raises(ValueError, match=message):
        cfg.finalize()
        task_configs(cfg)


def test_task_configs_take_their_fields_and_share_the_rest():
    cfg = multitask_cfg(lr=0.01)
    tasks = task_configs(cfg)
    assert [t.task_name for t in tasks] == ["a", "b", "c"] == list(cfg.task_names)
    assert [t.num_classes for t in tasks] == [3, 2, 1]
    assert all(t.lr == 0.01 and t.img_size == 64 and t.tasks is None for t in tasks)
    assert task_configs(BaseConfig().finalize())[0].task_name == "shapes"  # a plain config is its own only task


# ------------------------------------------------------------------------------------------------- the model
def test_shared_blocks_are_the_same_objects_and_branches_distinct():
    model = build_model(multitask_cfg())
    blocks, routes = model.neck.blocks, model.neck.routes

    def block(task, j):
        return blocks[j][routes[task][j]]

    for j in range(3):
        assert len(blocks[j]) == 1 and block(0, j) is block(1, j) is block(2, j)
    for j in (3, 4):
        assert len(blocks[j]) == 2 and block(0, j) is block(1, j) and block(2, j) is not block(0, j)
    for j in range(5, 8):
        assert len(blocks[j]) == 3 and len({id(block(t, j)) for t in range(3)}) == 3
    # no parameter tensor is shared between two copies (a deep copy, not an alias)
    params = [p for j in range(8) for copy in blocks[j] for p in copy.parameters()]
    assert len({id(p) for p in params}) == len({p.data_ptr() for p in params}) == len(params)
    assert [h.num_classes for h in model.heads] == [3, 2, 1]


def test_forward_all_tasks_runs_shared_blocks_once_and_matches_single_task_forwards():
    torch.manual_seed(0)
    model = build_model(multitask_cfg()).eval()
    calls = {}
    for j, copies in enumerate(model.neck.blocks):
        for c, module in enumerate(copies):
            module.register_forward_hook(lambda m, i, o, key=(j, c): calls.update({key: calls.get(key, 0) + 1}))
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        together = model(images, task=None)
        assert all(n == 1 for n in calls.values()) and len(calls) == 1 + 1 + 1 + 2 + 2 + 3 + 3 + 3
        alone = [model(images, task=t) for t in range(3)]
    for t in range(3):
        assert [o.shape[-1] for o in together[t]] == [5 + model.heads[t].num_classes] * 3
        for a, b in zip(together[t], alone[t]):
            torch.testing.assert_close(a, b)


def test_task_loss_reaches_shared_and_own_parameters_only():
    torch.manual_seed(0)
    cfg = multitask_cfg()
    model = build_model(cfg).train()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    targets = torch.tensor([[0, 0, 30.0, 30.0, 20.0, 24.0], [1, 0, 40.0, 20.0, 30.0, 16.0]])  # task 2: 1 class
    loss, _, _ = YOLOLoss(task_configs(cfg)[2])(model(images, task=2), targets, model.decoding)
    loss.backward()
    routes = model.neck.routes
    for j, copies in enumerate(model.neck.blocks):
        for c, copy in enumerate(copies):
            grads = [p.grad for p in copy.parameters()]
            if c == routes[2][j]:   # on task 2's path: shared or its own
                assert any(g is not None and g.abs().sum() > 0 for g in grads), (j, c)
            else:                   # copies of tasks 0 and 1 only
                assert all(g is None or g.abs().sum() == 0 for g in grads), (j, c)
    assert all(p.grad.abs().sum() > 0 for p in model.heads[2].parameters())
    assert all(p.grad is None for t in (0, 1) for p in model.heads[t].parameters())
    assert sum(p.grad.abs().sum() for p in model.backbone.parameters() if p.grad is not None) > 0


def test_info_prints_the_tree_and_params_per_task():
    cfg = multitask_cfg()
    text = describe_model(build_model(cfg), cfg)
    assert "| 0 | top5 |" in text and "[a, b, c] |" in text
    assert "| 3 | top4 |" in text and "[c] [a, b] |" in text
    assert "| 7 | out3 |" in text and "[c] [a] [b] |" in text
    assert "params per task" in text and "| a |" in text and "| c |" in text


# ------------------------------------------------------------------------------------------------- training loop
def test_task_batches_cycle_the_shorter_loader():
    steps = list(task_batches([[1, 2], [10, 20, 30, 40, 50]], [tuple(range(2))] * 5))
    assert steps == [[1, 10], [2, 20], [1, 30], [2, 40], [1, 50]]


def run_step(model, cfg, batches, average):
    """One train_one_epoch step over one batch per task with SGD lr 0; returns the gradients the update saw."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, a, k: seen.append({n: p.grad.clone() for n, p in
                                                                    model.named_parameters() if p.grad is not None}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    tasks = task_configs(cfg)
    t = Training(model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False), None,
                 [YOLOLoss(task) for task in tasks], DistInfo(), None, 1, tuple(cfg.task_weights),
                 cfg.task_names, model.tasks_sharing() if average else [])
    stats = train_one_epoch(t, [[batch] for batch in batches], cfg, epoch=0)
    return seen[0], stats


def test_weighted_task_losses_and_averaged_shared_gradients():
    """The update's gradient, against one computed by hand: sum_k w_k * grad(loss_k), and for a parameter shared by
    n tasks that sum / n."""
    torch.manual_seed(0)
    two = [dict(name="a"), dict(name="b", class_names=["star", "cross"])]
    cfg = multitask_cfg(tasks=two, branching=[[2, [[0], [1]]]], task_weights=[1.0, 0.5], grad_clip=0.0)
    model = build_model(cfg)
    model.eval()  # BN statistics frozen so the hand computation sees the same forward
    model.train = lambda mode=True: model  # keep eval mode inside train_one_epoch
    batches = [(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8),
                torch.tensor([[0, k, 30.0, 30.0, 20.0, 24.0], [1, 1, 40.0, 20.0, 30.0, 16.0]]), [0, 1], 2)
               for k in range(2)]
    expected = {}
    for k, (images, targets, *_) in enumerate(batches):
        model.zero_grad()
        loss, _, _ = YOLOLoss(task_configs(cfg)[k])(model(images, task=k), targets, model.decoding)
        (cfg.task_weights[k] * loss).backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                expected[n] = expected.get(n, 0) + p.grad.clone()
    model.zero_grad()
    summed, _ = run_step(model, cfg, batches, average=False)
    averaged, stats = run_step(model, cfg, batches, average=True)
    shared = {id(p) for p, _ in model.tasks_sharing()}
    for n, p in model.named_parameters():
        torch.testing.assert_close(summed[n], expected[n], rtol=1e-4, atol=1e-6)
        divisor = 2 if id(p) in shared else 1
        torch.testing.assert_close(averaged[n], expected[n] / divisor, rtol=1e-4, atol=1e-6)
    assert any(n.startswith("backbone.") for n in summed) and "loss_a" in stats and "loss_b" in stats


def test_bf16_autocast_two_tasks():
    torch.manual_seed(0)
    cfg = multitask_cfg(tasks=[dict(name="a"), dict(name="b", class_names=["star"])], branching=None,
                        task_weights=[1.0, 1.0])
    model = build_model(cfg)
    batch = (torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8),
             torch.tensor([[0, 0, 30.0, 30.0, 20.0, 24.0]]), [0], 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    t = Training(model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False), None,
                 [YOLOLoss(task) for task in task_configs(cfg)], DistInfo(), torch.bfloat16, 1, (1.0, 1.0),
                 cfg.task_names, model.tasks_sharing())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_one_epoch(t, [[batch], [batch]], cfg, epoch=0)
    assert stats["loss"] > 0 and all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(before["heads.1.convs.0.weight"], model.state_dict()["heads.1.convs.0.weight"])


# ------------------------------------------------------------------------------------------------- end to end
# long enough for both tasks to learn something (as in test_end_to_end): small anchors for 128 px, a higher lr
LEARNS = ["--shapes_num_train", "48", "--shapes_num_val", "16", "--img_size", "128", "--batch_size", "8",
          "--epochs", "30", "--val_interval", "10", "--lr", "0.02", "--warmup_epochs", "1", "--cache_images", "true",
          "--anchors", "[[(6,6),(9,9),(12,12)],[(16,16),(22,22),(30,30)],[(40,40),(56,56),(80,80)]]"]


def two_task_args(tmp_path, *extra):
    tasks = [dict(name="shapes", data_root=str(tmp_path / "d1")),
             dict(name="symbols", data_root=str(tmp_path / "d2"), class_names=["star", "cross", "ring"], shapes_seed=1)]
    return ["--tasks", repr(tasks), "--branching", "[[3, [[0], [1]]]]", "--runs_dir", str(tmp_path / "runs"),
            "--run_name", "mt", "--shapes_num_train", "16", "--shapes_num_val", "4", "--img_size", "64",
            "--width", "0.25", "--batch_size", "4", "--num_workers", "0", "--epochs", "2", "--val_interval", "1",
            "--device", "cpu", "--tensorboard", "false", *extra]


@pytest.mark.slow
def test_two_task_training_checkpoint_val_and_predict(tmp_path):
    torch.set_num_threads(1)
    cfg = apply_overrides(BaseConfig(), two_task_args(tmp_path, *LEARNS, "--ema", "true", "--ema_tau", "20"))
    cfg.tasks[0]["shapes_num_train"] = 24  # a shorter task: its loader cycles
    best, run_dir = trainer.train(cfg.finalize())
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"loss_shapes", "loss_symbols", "map50_shapes", "map50_symbols", "map_symbols"} <= set(header)
    last = dict(zip(header, map(float, rows[-1].split(","))))
    assert last["map50"] == pytest.approx((last["map50_shapes"] + last["map50_symbols"]) / 2)
    assert len(rows) == 31 and last["epoch"] == 30  # 6 iterations per epoch: the longer task's, the other cycles
    assert last["map50_shapes"] > 0.02 and last["map50_symbols"] > 0.02, "both tasks must learn something"

    # checkpoint round trip: the model rebuilt from the checkpoint's config has the same tensors and outputs
    from yolo.engine.checkpoint import load_checkpoint
    from yolo.engine.checkpoint import load_model
    from yolo.tasks import predict, val
    ckpt = load_checkpoint(run_dir / "best.pt")
    assert ckpt["config"]["branching"] == [[3, [[0], [1]]]] and len(ckpt["rng"]["loss"]) == 2
    fresh = apply_overrides(BaseConfig(), two_task_args(tmp_path, *LEARNS))  # the run's data fields; model: ckpt
    fresh.tasks, fresh.branching, fresh.ckpt_path = None, None, str(run_dir / "best.pt")
    model, _, _ = load_model(fresh)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
    assert fresh.task_names == ("shapes", "symbols") and len(model.heads) == 2

    results = val.run(fresh)
    at_best = dict(zip(header, map(float, rows[ckpt["epoch"]].split(","))))  # the metrics.csv row of best.pt
    assert len(results) == 2 and results[1].map50 == pytest.approx(at_best["map50_symbols"], abs=1e-6)
    assert results[0].map == pytest.approx(at_best["map_shapes"], abs=1e-6)

    fresh.predict_conf, fresh.predict_max_images = 0.0, 4
    out_dir = predict.run(fresh)
    entries = json.loads((out_dir / "predictions.json").read_text())
    names = {e["category_name"] for e in entries}
    assert names and all(n.split("/")[0] in ("shapes", "symbols") for n in names)
    assert any(n.startswith("symbols/") for n in names) and any(n.startswith("shapes/") for n in names)
    assert len(list(out_dir.glob("*.jpg"))) == 4  # 2 images per task, same file names kept apart


@pytest.mark.slow
def test_ddp_two_processes_two_tasks(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "main.py",
           *two_task_args(tmp_path, "--epochs", "1")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    header = (tmp_path / "runs" / "mt" / "metrics.csv").read_text().splitlines()[0]
    assert "map50_symbols" in header


@pytest.mark.slow
def test_dev_config_raccoon_and_coco128(tmp_path):
    if not (SHARED_DATA / "raccoon").is_dir() or not (SHARED_DATA / "coco128").is_dir():
        pytest.skip("../shared/data/raccoon or coco128 is not here")
    args = ["--config", "configs/multitask_raccoon_coco128.py", "--task", "train", "--epochs", "1",
            "--img_size", "128", "--runs_dir", str(tmp_path / "runs"), "--tensorboard", "false"]
    out = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, env=ENV,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    header = (tmp_path / "runs" / "raccoon_coco128" / "metrics.csv").read_text().splitlines()[0]
    assert "map50_raccoon" in header and "map50_coco128" in header


def test_hand_computed_update_with_unequal_task_batches_and_sampled_tasks():
    """Per-task batch sizes (2 and 3 images): each task's loss is the mean over its own batch, so with every task per
    step the update is still sum_k w_k * grad(loss_k), shared parameters / n. With one sampled task per step
    (task_sampling "balanced") each update is that task's w_k * grad(loss_k) alone: a shared parameter then serves
    one task of the step and is not divided."""
    torch.manual_seed(0)
    two = [dict(name="a", batch_size=2), dict(name="b", class_names=["star", "cross"], batch_size=3)]
    cfg = multitask_cfg(tasks=two, branching=[[2, [[0], [1]]]], task_weights=[1.0, 0.5], grad_clip=0.0)
    assert [t.batch_size for t in task_configs(cfg)] == [2, 3]
    model = build_model(cfg)
    model.eval()  # BN statistics frozen so the hand computation sees the same forward
    model.train = lambda mode=True: model
    batches = [(torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8),
                torch.tensor([[0, k, 30.0, 30.0, 20.0, 24.0], [n - 1, 1, 40.0, 20.0, 30.0, 16.0]]), list(range(n)), 2)
               for k, n in enumerate((2, 3))]
    per_task = []
    for k, (images, targets, *_) in enumerate(batches):
        model.zero_grad()
        loss, _, _ = YOLOLoss(task_configs(cfg)[k])(model(images, task=k), targets, model.decoding)
        (cfg.task_weights[k] * loss).backward()
        per_task.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad()
    shared = {id(p) for p, _ in model.tasks_sharing()}
    averaged, _ = run_step(model, cfg, batches, average=True)
    for n, p in model.named_parameters():
        expected = sum(g[n] for g in per_task if n in g) / (2 if id(p) in shared else 1)
        torch.testing.assert_close(averaged[n], expected, rtol=1e-4, atol=1e-6)

    from yolo.engine.multitask import task_schedule
    cfg.task_sampling = "balanced"
    updates = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    optimizer.register_step_pre_hook(lambda opt, a, k: updates.append(
        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    t = Training(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0),
                 torch.amp.GradScaler("cpu", enabled=False), None, [YOLOLoss(task) for task in task_configs(cfg)],
                 DistInfo(), None, 1, tuple(cfg.task_weights), cfg.task_names, model.tasks_sharing())
    stats = train_one_epoch(t, [[batch] for batch in batches], cfg, epoch=0)
    drawn = [tasks[0] for tasks in task_schedule([1, 1], "balanced", cfg.seed, epoch=0)]
    assert len(updates) == 2 and "loss_a" in stats
    for update, k in zip(updates, drawn):
        assert update.keys() == per_task[k].keys()  # the other task's head and branch: no gradient
        for n in update:
            torch.testing.assert_close(update[n], per_task[k][n], rtol=1e-4, atol=1e-6)


def test_per_scale_box_terms_are_weighted_means_over_the_tasks_with_positives_there():
    import math
    from types import SimpleNamespace

    from yolo.engine.multitask import tasks_loss

    def fake_loss(box_s8, box_s16):
        return lambda out, tgt, decoding: (torch.tensor(1.0), {"box": torch.tensor(0.5), "box_s8": torch.tensor(box_s8),
                                                                "box_s16": torch.tensor(box_s16)}, {})

    t = SimpleNamespace(model=SimpleNamespace(decoding=None), loss_fns=[fake_loss(0.4, math.nan), fake_loss(0.1, math.nan)],
                        task_weights=[1.0, 3.0], task_names=["a", "b"])
    _, values, _ = tasks_loss(t, [None, None], [None, None])
    assert values["box"] == 0.5 * 1 + 0.5 * 3                              # the loss terms stay weighted sums
    assert values["box_s8"] == pytest.approx((0.4 * 1 + 0.1 * 3) / 4)    # a weighted mean, as with one task
    assert math.isnan(values["box_s16"])                                   # no task had positives there
    t.loss_fns[1] = fake_loss(math.nan, math.nan)                          # only task a had positives at stride 8
    _, values, _ = tasks_loss(t, [None, None], [None, None])
    assert values["box_s8"] == pytest.approx(0.4)
