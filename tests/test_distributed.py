"""DDP on CPU: two gloo processes under torchrun train on a tiny built-in set; the launcher's --local-rank flags."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

# 16 train / 8 val images; 2 processes x batch 4, accumulated to 16 images per update: 2 batches, 1 update each
TINY = ["--shapes_num_train", "16", "--shapes_num_val", "8", "--img_size", "64", "--width", "0.25",
        "--batch_size", "4", "--nominal_batch_size", "16", "--num_workers", "0", "--epochs", "1", "--val_interval", "1",
        "--device", "cpu", "--tensorboard", "false"]

# Runs in each of the two processes: spies on the data each one loads and on its final model, trains through the
# real trainer, then evaluates the checkpoint under DDP and saves what rank 0 gathered.
SCRIPT = r'''
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
from yolo.config import BaseConfig, apply_overrides
from yolo.data.dataset import DetectionDataset, build_loader, read_records
from yolo.engine import trainer
from yolo.engine.checkpoint import load_checkpoint
from yolo.engine.distributed import barrier, cleanup_distributed, eval_sampler, init_distributed, unwrap
from yolo.engine.evaluator import evaluate
from yolo.models.detector import build_model

out = Path(sys.argv[2])
seen, trainings = [], []
get_item = DetectionDataset.__getitem__
def spy_get_item(self, index):
    if Path(self.records[index].image_path).name.startswith("train_"):
        seen.append(index)
    return get_item(self, index)
DetectionDataset.__getitem__ = spy_get_item
one_epoch = trainer.train_one_epoch
def spy_one_epoch(t, *args, **kwargs):
    trainings.append(t)
    return one_epoch(t, *args, **kwargs)
trainer.train_one_epoch = spy_one_epoch

cfg = apply_overrides(BaseConfig(), sys.argv[3:]).finalize()
info = init_distributed("cpu", "gloo")  # created here, the group outlives train() for the evaluation below
_, run_dir = trainer.train(cfg)
torch.save(unwrap(trainings[-1].model).state_dict(), out / f"weights{info.rank}.pt")
(out / f"seen{info.rank}.json").write_text(json.dumps(seen))

model = build_model(cfg)
model.load_state_dict(load_checkpoint(run_dir / "last.pt")["model"])
records = read_records(cfg, "val")
loader = build_loader(cfg, records, train=False, sampler=eval_sampler(records, info))
result, detections = evaluate(model, loader, cfg, torch.device("cpu"), show_progress=False)
if info.rank == 0:
    dets = {i: [d.tolist() for d in det] for i, det in detections.items()}
    (out / "ddp_eval.json").write_text(json.dumps({"map50": result.map50, "map": result.map, "dets": dets,
                                                     "run_dir": str(run_dir)}))
else:
    assert result is None and detections is None
barrier(info)  # rank 1 must not tear the group down while rank 0 still scores: gloo may abort it at exit
cleanup_distributed(info)  # a gloo group left to the interpreter's exit may abort a process as it shuts down
'''


@pytest.mark.slow
def test_ddp_two_processes_train_and_evaluate(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    args = ["--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs"), "--run_name", "ddp", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(ROOT), str(tmp_path), *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]

    # both processes end with identical weights (parameters by DDP, BN statistics synced from rank 0)
    w0 = torch.load(tmp_path / "weights0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    run_dir = tmp_path / "runs" / "ddp"
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    assert all(torch.equal(saved["model"][k], w0[k]) for k in w0)
    assert saved["optimizer"]["state"], "the accumulated update never happened"

    # each process saw a disjoint half of the training set
    seen0 = json.loads((tmp_path / "seen0.json").read_text())
    seen1 = json.loads((tmp_path / "seen1.json").read_text())
    assert len(seen0) == len(seen1) == 8
    assert not set(seen0) & set(seen1) and sorted(seen0 + seen1) == list(range(16))

    # DDP evaluation (sharded predictions gathered on rank 0) equals single-process evaluation of the checkpoint
    ddp = json.loads((tmp_path / "ddp_eval.json").read_text())
    result, detections = single_process_evaluation(run_dir / "last.pt", args)
    assert ddp["map50"] == pytest.approx(result.map50, abs=1e-6) and ddp["map"] == pytest.approx(result.map, abs=1e-6)
    assert sorted(int(i) for i in ddp["dets"]) == sorted(detections) == list(range(8))
    for index, (boxes, scores, labels) in detections.items():
        ddp_boxes, ddp_scores, ddp_labels = ddp["dets"][str(index)]
        assert len(ddp_scores) == len(scores)
        np.testing.assert_allclose(np.array(ddp_boxes).reshape(-1, 4), boxes, atol=1e-3)
        np.testing.assert_allclose(ddp_scores, scores, atol=1e-5)
        assert list(ddp_labels) == labels.tolist()
    # and the trainer's own DDP evaluation, logged in metrics.csv, gives the same numbers
    header, row = (run_dir / "metrics.csv").read_text().splitlines()[:2]
    logged = dict(zip(header.split(","), map(float, row.split(","))))
    assert logged["map50"] == pytest.approx(result.map50, abs=1e-6)


def single_process_evaluation(ckpt_path, args):
    from yolo.config import BaseConfig, apply_overrides
    from yolo.data.dataset import build_loader, read_records
    from yolo.engine.evaluator import evaluate
    from yolo.models.detector import build_model

    cfg = apply_overrides(BaseConfig(), args).finalize()
    model = build_model(cfg)
    model.load_state_dict(torch.load(ckpt_path, weights_only=True)["model"])
    loader = build_loader(cfg, read_records(cfg, "val"), train=False)
    return evaluate(model, loader, cfg, torch.device("cpu"), show_progress=False)


@pytest.mark.parametrize("flags", [["--local_rank", "0"], ["--local-rank=0"], ["--local_rank=0"], ["--local-rank", "0"]])
def test_local_rank_flags_are_accepted(flags, monkeypatch):
    sys.path.insert(0, str(ROOT))
    from main import parse_args

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    config_path, overrides = parse_args([*flags, "--epochs", "3"])
    assert overrides == ["--epochs", "3"] and os.environ["LOCAL_RANK"] == "0"


def test_bad_local_rank_is_a_clear_error(monkeypatch):
    from main import parse_args

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(ValueError, match="--local_rank must be a number"):
        parse_args(["--local_rank", "x"])


@pytest.mark.slow
def test_torch_distributed_launch_passes_local_rank(tmp_path):
    """The deprecated launcher appends --local-rank=0 to main.py's arguments; main.py must accept it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "1", "main.py", "--task", "info",
           "--width", "0.25", "--img_size", "64"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "neck blocks" in out.stdout + out.stderr


# One optimizer update, two ways, on the same 8 training images: 2 gloo processes x batch 4, and one process x batch 8
# (a third run, one process x batch 4 accumulated twice, shows that the comparison can fail). Batch norm runs on its (initial) running statistics, so an image's loss
# does not depend on which images share its batch, and augmentation is off: both must make the same update.
# SGD without clipping or warm-up, because Adam's first step and gradient clipping hide a wrongly scaled gradient.
ONE_UPDATE = ["--shapes_num_train", "8", "--shapes_num_val", "2", "--img_size", "64", "--width", "0.25",
              "--nominal_batch_size", "8", "--num_workers", "0", "--epochs", "1", "--val_interval", "1",
              "--device", "cpu", "--tensorboard", "false", "--optimizer", "sgd", "--lr", "0.05", "--warmup_epochs", "0",
              "--grad_clip", "0", "--weight_decay", "0", "--hflip_prob", "0", "--affine_scale", "(1.0, 1.0)",
              "--affine_translate", "0", "--color_jitter", "0", "--mosaic_prob", "0"]
FROZEN_BN_SCRIPT = r'''
import sys
sys.path.insert(0, sys.argv[1])
import torch
from yolo.config import BaseConfig, apply_overrides
from yolo.engine import trainer

torch.nn.modules.batchnorm._BatchNorm.train = lambda self, mode=True: torch.nn.Module.train(self, False)
trainer.train(apply_overrides(BaseConfig(), sys.argv[2:]).finalize())
'''


@pytest.mark.slow
def test_two_processes_make_the_update_of_one_process_on_the_same_global_batch(tmp_path):
    script = tmp_path / "frozen_bn_train.py"
    script.write_text(FROZEN_BN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    common = ["--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs"), *ONE_UPDATE]
    launches = {
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                str(ROOT), *common, "--run_name", "ddp", "--batch_size", "4"],
        "single": [sys.executable, str(script), str(ROOT), *common, "--run_name", "single", "--batch_size", "8"],
        "accumulated": [sys.executable, str(script), str(ROOT), *common, "--run_name", "accumulated",
                        "--batch_size", "4"],
    }
    weights = {}
    for name, cmd in launches.items():
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, name + out.stdout[-2000:] + out.stderr[-4000:]
        weights[name] = torch.load(tmp_path / "runs" / name / "last.pt", weights_only=True)["model"]

    torch.manual_seed(0)  # the initial weights, as the trainer builds them from seed 0
    from yolo.config import BaseConfig, apply_overrides
    from yolo.models.detector import build_model
    initial = build_model(apply_overrides(BaseConfig(), common).finalize()).state_dict()
    single = weights["single"]
    moved = max((single[k] - initial[k]).abs().max().item() for k in single if single[k].is_floating_point())
    assert moved > 1e-3, "the update did not move the weights: nothing is compared"
    def worst_difference(name):
        return max((weights[name][k] - single[k]).abs().max().item() for k in single if single[k].is_floating_point())

    assert worst_difference("ddp") < 1e-5 * max(1.0, moved), "2 processes: not the update of one on the same batch"
    # accumulation averages the means of its two batches (each over its own positives): measurably another update
    assert worst_difference("accumulated") > 1e-4
