"""Multi-task sampling (config task_sampling): which tasks each step of an epoch trains -- every task ("all"), or one
drawn by its size ("proportional") or uniformly ("balanced") -- the counts over an epoch, the same draws on every
DDP process and after a resume, per-task batch sizes through training, checkpoint, val and resume, and the bench."""
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import ROOT
from yolo.config import BaseConfig, task_configs
from yolo.engine import trainer
from yolo.engine.checkpoint import load_checkpoint, save_checkpoint
from yolo.engine.distributed import DistInfo
from yolo.engine.multitask import steps_per_epoch, task_schedule
from yolo.engine.setup import Training
from yolo.loss import YOLOLoss
from yolo.models.detector import build_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


# ------------------------------------------------------------------------------------------------- the schedule
def test_all_trains_every_task_every_step_for_the_longest_pass():
    schedule = task_schedule([3, 10], "all", seed=0, epoch=0)
    assert len(schedule) == steps_per_epoch([3, 10], "all") == 10 and set(schedule) == {(0, 1)}
    assert task_schedule([7], "balanced", seed=0, epoch=0) == [(0,)] * 7  # one task: every step is that task's


@pytest.mark.parametrize("sampling, expected_share", [("proportional", 0.2), ("balanced", 0.5)])
def test_random_samplings_draw_one_task_per_step_in_the_expected_share(sampling, expected_share):
    sizes = [30, 120]  # batches per pass: task 0 is a fifth of the data
    assert steps_per_epoch(sizes, sampling) == 150  # an epoch is the sum of the tasks' passes
    counts = Counter()
    for epoch in range(10):
        schedule = task_schedule(sizes, sampling, seed=0, epoch=epoch)
        assert len(schedule) == 150 and all(len(tasks) == 1 for tasks in schedule)
        counts.update(tasks[0] for tasks in schedule)
    # 1500 draws: the standard deviation of task 0's count is at most sqrt(1500 / 4) = 19.4; 3.5 of them allowed
    assert abs(counts[0] - expected_share * 1500) < 70 and counts[0] + counts[1] == 1500


def test_draws_depend_on_seed_epoch_and_step_alone():
    first = task_schedule([5, 20], "balanced", seed=3, epoch=2)
    torch.manual_seed(123)
    np.random.seed(123)  # the global generators (shuffling, augmentation) do not move the draws
    assert task_schedule([5, 20], "balanced", seed=3, epoch=2) == first
    assert task_schedule([5, 20], "balanced", seed=3, epoch=3) != first
    assert task_schedule([5, 20], "balanced", seed=4, epoch=2) != first
    # a step's draw does not depend on the epoch's length (a task grown by a batch keeps the earlier steps' draws)
    assert task_schedule([6, 20], "balanced", seed=3, epoch=2)[:25] == first


def tiny_two_task_cfg(**fields):
    cfg = BaseConfig()
    cfg.tasks, cfg.branching = [dict(name="a"), dict(name="b", class_names=["star", "cross"])], [[2, [[0], [1]]]]
    cfg.width, cfg.img_size, cfg.grad_clip = 0.25, 64, 0.0
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def batch(n, first_class=0):
    """A batch of n random images, one box each."""
    targets = torch.tensor([[i, first_class, 30.0, 30.0, 20.0, 24.0] for i in range(n)])
    return torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8), targets, list(range(n)), n


def training(model, cfg, lr=0.01):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    return Training(model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False), None,
                    [YOLOLoss(task) for task in task_configs(cfg)], DistInfo(), None, 1, tuple(cfg.task_weights),
                    cfg.task_names, model.tasks_sharing())


@pytest.mark.parametrize("sampling", ["all", "proportional", "balanced"])
def test_the_trainer_follows_the_schedule(sampling, monkeypatch):
    """train_one_epoch trains the schedule's tasks on their own loaders' batches, and logs each task's loss as the
    mean over the steps that trained it (columns in the same order every epoch)."""
    torch.manual_seed(0)
    cfg = tiny_two_task_cfg(task_sampling=sampling, task_weights=[1.0, 1.0])
    loaders = [[batch(2) for _ in range(2)], [batch(3, 1) for _ in range(5)]]  # unequal batch sizes
    trained, spy = [], trainer.tasks_loss

    def spy_loss(t, outputs, targets, tasks):
        trained.append((tuple(tasks), [len(o[0]) for o in outputs]))
        return spy(t, outputs, targets, tasks)

    monkeypatch.setattr(trainer, "tasks_loss", spy_loss)
    stats = trainer.train_one_epoch(training(build_model(cfg), cfg), loaders, cfg, epoch=1)
    expected = task_schedule([2, 5], sampling, cfg.seed, epoch=1)
    assert [tasks for tasks, _ in trained] == expected
    assert all(sizes == [(2, 3)[k] for k in tasks] for tasks, sizes in trained)  # each task its own batch size
    keys = list(stats)
    assert keys[:6] == ["loss", "box", "obj", "cls", "loss_a", "loss_b"] and np.isfinite(stats["loss_b"])


# ------------------------------------------------------------------------------------------------- config
def test_sampling_and_task_batch_size_are_config_fields():
    cfg = tiny_two_task_cfg(tasks=[dict(name="a", batch_size=4), dict(name="b", batch_size=2)], batch_size=8,
                            task_sampling="proportional")
    assert [t.batch_size for t in task_configs(cfg)] == [4, 2]
    with pytest.raises(ValueError, match="config field 'task_sampling' = 'sizes' is not allowed"):
        tiny_two_task_cfg(task_sampling="sizes")
    with pytest.raises(ValueError, match="task 'b': config field 'batch_size' = 0 must be >= 1"):
        tiny_two_task_cfg(tasks=[dict(name="a"), dict(name="b", batch_size=0)])


# ------------------------------------------------------------------------------------------------- end to end
def unequal_batches_cfg(tmp_path, **fields):
    cfg = BaseConfig()
    cfg.tasks = [dict(name="shapes", data_root=str(tmp_path / "d1"), shapes_num_train=24, batch_size=4),
                 dict(name="symbols", data_root=str(tmp_path / "d2"), class_names=["star", "cross", "ring"],
                      shapes_seed=1, batch_size=2)]
    settings = dict(branching=[[3, [[0], [1]]]], runs_dir=str(tmp_path / "runs"), shapes_num_train=8,
                    shapes_num_val=4, img_size=64, width=0.25, batch_size=4, num_workers=0, epochs=2,
                    val_interval=1, device="cpu", tensorboard=False, task_sampling="proportional", seed=2,
                    lr_schedule="constant", warmup_epochs=0.0, deterministic=True, eval_artifacts=False)
    for k, v in {**settings, **fields}.items():
        setattr(cfg, k, v)
    return cfg.finalize()


@pytest.mark.slow
def test_unequal_task_batches_through_checkpoint_val_and_resume(tmp_path):
    """Two tasks, batches of 4 and 2, proportional sampling: trained straight for 2 epochs, and for 1 epoch then
    resumed to 2, the weights are the same (the draws repeat); val of the checkpoint gives metrics.csv's scores."""
    torch.set_num_threads(1)
    _, straight = trainer.train(unequal_batches_cfg(tmp_path, run_name="straight"))
    _, stopped = trainer.train(unequal_batches_cfg(tmp_path, run_name="stopped", epochs=1))
    ckpt = load_checkpoint(stopped / "last.pt")  # as if a 2-epoch run had stopped after epoch 1
    ckpt["config"]["epochs"] = 2
    save_checkpoint(ckpt, stopped / "last.pt")
    _, resumed = trainer.train(unequal_batches_cfg(tmp_path, run_name="stopped", resume=True))
    assert resumed == stopped
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(stopped / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and [t["batch_size"] for t in b["config"]["tasks"]] == [4, 2]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "the resumed run trained otherwise"
    log = (straight / "log.txt").read_text()
    assert "task shapes: 24 train" in log and "6 iterations per pass of 4" in log
    assert "task symbols: 8 train" in log and "4 iterations per pass of 2" in log
    assert "10 iterations per epoch" in log  # proportional: 6 + 4, one task per step

    from yolo.tasks import val
    rows = (straight / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), dict(zip(rows[0].split(","), map(float, rows[-1].split(","))))
    assert {"loss_shapes", "loss_symbols", "map50_shapes", "map50_symbols"} <= set(header)
    fresh = unequal_batches_cfg(tmp_path, ckpt_path=str(straight / "last.pt"), task="val")
    results = val.run(fresh)
    assert results[0].map50 == pytest.approx(last["map50_shapes"], abs=1e-6)
    assert results[1].map == pytest.approx(last["map_symbols"], abs=1e-6)


# Runs in each of two gloo processes: records the tasks every step trains and the weights after every epoch.
DDP_SCRIPT = r'''
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
from yolo.config import BaseConfig, apply_overrides
from yolo.engine import trainer
from yolo.engine.distributed import cleanup_distributed, init_distributed, unwrap

out = Path(sys.argv[2])
drawn, states = [], []
tasks_loss, one_epoch = trainer.tasks_loss, trainer.train_one_epoch
def spy_loss(t, outputs, targets, tasks):
    drawn.append(list(tasks))
    return tasks_loss(t, outputs, targets, tasks)
def spy_epoch(t, *args, **kwargs):
    snapshot = lambda: {k: v.detach().clone() for k, v in unwrap(t.model).state_dict().items()}
    if not states:
        states.append(snapshot())
    stats = one_epoch(t, *args, **kwargs)
    states.append(snapshot())
    return stats
trainer.tasks_loss, trainer.train_one_epoch = spy_loss, spy_epoch
info = init_distributed("cpu", "gloo")
trainer.train(apply_overrides(BaseConfig(), sys.argv[3:]).finalize())
(out / f"drawn{info.rank}.json").write_text(json.dumps(drawn))
torch.save(states, out / f"states{info.rank}.pt")
cleanup_distributed(info)
'''


@pytest.mark.slow
def test_ddp_processes_draw_the_same_tasks_and_frozen_shared_layers_stay(tmp_path):
    """2 gloo processes, balanced sampling, per-task batch sizes, freeze_shared_epochs 1: every process trains the
    same task at every step, both end with the same weights, and the shared layers (backbone, neck blocks 0-3:
    weights and BN statistics) do not move in epoch 1 and do in epoch 2."""
    script = tmp_path / "ddp_sampling.py"
    script.write_text(DDP_SCRIPT)
    tasks = [dict(name="a", data_root=str(tmp_path / "d1"), shapes_num_train=32),
             dict(name="b", data_root=str(tmp_path / "d2"), class_names=["star", "cross"], shapes_seed=1,
                  batch_size=2)]
    args = ["--tasks", repr(tasks), "--branching", "[[3, [[0], [1]]]]", "--runs_dir", str(tmp_path / "runs"),
            "--shapes_num_train", "8", "--shapes_num_val", "4", "--img_size", "64", "--width", "0.25",
            "--batch_size", "4", "--num_workers", "0", "--epochs", "2", "--val_interval", "2", "--device", "cpu",
            "--tensorboard", "false", "--task_sampling", "balanced", "--freeze_shared_epochs", "1", "--lr", "0.01",
            "--eval_artifacts", "false"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(ROOT), str(tmp_path), *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]

    drawn0, drawn1 = (json.loads((tmp_path / f"drawn{r}.json").read_text()) for r in (0, 1))
    assert drawn0 == drawn1 and len(drawn0) == 2 * (4 + 2)  # per process: a 4 batches of 4, b 2 batches of 2
    assert {tuple(d) for d in drawn0} == {(0,), (1,)}
    states0, states1 = (torch.load(tmp_path / f"states{r}.pt", weights_only=True) for r in (0, 1))
    # the same weights everywhere (BN statistics: each process its own until the trainer syncs them from rank 0)
    params = [k for k in states0[-1] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(states0[-1][k], states1[-1][k]) for k in params)
    initial, after_1, after_2 = states0
    shared = [k for k in initial if k.startswith(("backbone.", *(f"neck.blocks.{j}." for j in range(4))))]
    moving = [k for k in shared if k.endswith(("weight", "running_mean", "running_var"))]
    assert moving and all(torch.equal(initial[k], after_1[k]) for k in shared)
    assert not all(torch.equal(initial[k], after_2[k]) for k in moving if "running" in k), "BN statistics never moved"
    assert not all(torch.equal(initial[k], after_2[k]) for k in moving if k.endswith("weight"))
    heads = [k for k in initial if k.startswith("heads.")]
    assert not all(torch.equal(initial[k], after_1[k]) for k in heads)


@pytest.mark.slow
def test_sampling_bench_smoke(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "bench/multitask_sampling.py", "--smoke", "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert {r["sampling"] for r in rows if r["part"] == "sampling"} == {"all", "proportional", "balanced"}
    assert len([r for r in rows if r["part"] == "class_balanced"]) == 4
    table = (out / "table.md").read_text()
    assert "| balanced |" in table and "rare class" in table
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)  # nothing left to do
    assert again.returncode == 0 and "already measured" in again.stdout + again.stderr
    assert len((out / "rows.jsonl").read_text().splitlines()) == len(rows)


# ------------------------------------------------------------------------------------------------- loader draws
def all_tasks_batches_reference(loaders, steps):
    """task_batches for task_sampling "all" as it first was: every loader started before the first step."""
    iterators = [iter(loader) for loader in loaders]
    for _ in range(steps):
        batches = []
        for k, loader in enumerate(loaders):
            batch = next(iterators[k], None)
            if batch is None:
                iterators[k] = iter(loader)
                batch = next(iterators[k])
            batches.append(batch)
        yield batches


def test_all_starts_every_loader_first_so_the_shuffles_repeat_earlier_runs():
    """Shuffled loaders draw from torch's global generator when they start: under "all" they start together before
    the first step, so every task's shuffle (the first task's too) is the one earlier runs of the seed had."""
    from yolo.engine.multitask import task_batches

    def shuffled_loaders():
        torch.manual_seed(0)
        return [torch.utils.data.DataLoader(range(6), batch_size=2, shuffle=True),
                torch.utils.data.DataLoader(range(20, 30), batch_size=3, shuffle=True)]

    schedule = task_schedule([3, 4], "all", seed=0, epoch=0) * 2  # past the end of both passes
    expected = [[b.tolist() for b in step] for step in all_tasks_batches_reference(shuffled_loaders(), len(schedule))]
    got = [[b.tolist() for b in step] for step in task_batches(shuffled_loaders(), schedule)]
    assert got == expected
