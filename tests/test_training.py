"""Training engine on CPU: exact resume after SIGKILL, atomic checkpoints, gradient accumulation (with a grad
scaler), bf16 autocast, EMA, multiscale, early stopping, optional TensorBoard."""
import copy
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT
from yolo.config import BaseConfig, apply_overrides
from yolo.engine import setup, trainer
from yolo.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from yolo.engine.distributed import DistInfo
from yolo.engine.ema import ModelEMA
from yolo.engine.logs import MetricsCSV, TensorBoard
from yolo.engine.setup import Training
from yolo.engine.trainer import multiscale_size, resize_batch, train_one_epoch
from yolo.loss import YOLOLoss
from yolo.models.detector import build_model

# with accumulation the lr scheduler steps before the first optimizer step, on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
# 48 images in batches of 4, accumulated by 2: 12 batches (6 updates) per epoch, long enough to kill one mid-way
RESUME_ARGS = ["--shapes_num_train", "48", "--shapes_num_val", "4", "--img_size", "64", "--width", "0.25",
               "--batch_size", "4", "--nominal_batch_size", "8", "--num_workers", "0", "--epochs", "2",
               "--val_interval", "2", "--seed", "3", "--deterministic", "true", "--ema", "true", "--ema_tau", "5",
               "--device", "cpu"]


def main_py(*args):
    return [sys.executable, "main.py", "--task", "train", *args]


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_weights(tmp_path):
    common = ["--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs")]
    straight = subprocess.run(main_py(*RESUME_ARGS, *common, "--run_name", "straight"), cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]

    # the same run, SIGKILLed as soon as epoch 1's checkpoint exists (i.e. during epoch 2) ...
    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(main_py(*RESUME_ARGS, *common, "--run_name", "killed"), cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run_dir / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1, "the kill came too late to interrupt epoch 2"

    # ... and resumed: only --resume and where the run is; everything else comes from the checkpoint
    resumed = subprocess.run(main_py("--resume", "true", "--runs_dir", str(tmp_path / "runs"), "--run_name", "killed"),
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stderr

    a = load_checkpoint(tmp_path / "runs" / "straight" / "last.pt")
    b = load_checkpoint(run_dir / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["ema_updates"] == b["ema_updates"] == 12
    for key in ("model", "train_model"):  # EMA and trained weights
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    rows_a = MetricsCSV(tmp_path / "runs" / "straight" / "metrics.csv").read()
    rows_b = MetricsCSV(run_dir / "metrics.csv").read()  # continued by the resumed run, epoch 1 not repeated
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b] == [1, 2]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["loss"] == rb["loss"] and (ra["map50"] == rb["map50"] or math.isnan(ra["map50"]))


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    weights = torch.randn(1000)
    save_checkpoint({"epoch": 1, "w": weights}, path)
    # a process that dies half-way through writing the next checkpoint (torch.save slowed down after 64 KiB)
    script = f"""
import sys, time, torch
sys.path.insert(0, {str(ROOT)!r})
from yolo.engine.checkpoint import save_checkpoint

class SlowFile:
    def __init__(self, f): self.f, self.n = f, 0
    def write(self, b):
        self.n += len(b)
        if self.n > 65536:
            self.f.flush(); print("half-written", flush=True); time.sleep(120)
        return self.f.write(b)
    def __getattr__(self, name): return getattr(self.f, name)

real_save = torch.save
def slow_save(obj, f):  # save_checkpoint hands torch.save its open temporary file
    real_save(obj, SlowFile(f))
torch.save = slow_save
save_checkpoint({{"epoch": 2, "w": torch.zeros(1_000_000)}}, {str(path)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "half-written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = list(tmp_path.glob(".last.pt.tmp*"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < 4_000_000  # the write really was cut short
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["w"], weights)


# ------------------------------------------------------------------------------------------------- accumulation
class NoBatchNormNet(nn.Module):
    """Per-image outputs that do not depend on the rest of the batch, so batch size and accumulation can be compared."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)
        self.decoding = None  # what the training loop hands the loss; mse_loss needs none

    def forward(self, images):
        return self.head(torch.relu(self.backbone(images.float() / 255)))


def mse_loss(outputs, targets, decoding):
    loss = (outputs.float() - targets).pow(2).mean()
    items = {"box": loss.detach(), "obj": loss.detach(), "cls": loss.detach()}
    return loss, items, {"pos_per_gt": 0.0, "unmatched_pct": 0.0}


def engine_cfg(**fields):
    cfg = BaseConfig()
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def run_one_epoch(model, batches, accumulate, scaler=None, amp_dtype=None, loss_fn=mse_loss, cfg=None):
    """train_one_epoch over `batches`; returns the gradients each optimizer update saw."""
    cfg = cfg or engine_cfg(optimizer="sgd", lr=0.1, grad_clip=0.0, warmup_epochs=0.0, lr_schedule="constant")
    optimizer = setup.build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append([p.grad.clone() for p in model.parameters()]))
    t = Training(model, optimizer, scheduler, scaler, None, [loss_fn], DistInfo(), amp_dtype, accumulate)
    stats = train_one_epoch(t, [batches], cfg, epoch=0)
    return seen, stats


def split(images, targets, n):
    """Batches as collate makes them: (images, targets, record indices, boxes before augmentation)."""
    return [(images[i:i + n], targets[i:i + n], list(range(i, i + n)), len(targets[i:i + n]))
            for i in range(0, len(images), n)]


@pytest.mark.parametrize("use_scaler", [False, True])
def test_accumulating_4_batches_of_2_equals_one_batch_of_8(use_scaler):
    torch.manual_seed(0)
    images, targets = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8), torch.randn(8, 2, 8, 8)
    model = NoBatchNormNet()
    big = copy.deepcopy(model)
    grads_big, _ = run_one_epoch(big, split(images, targets, 8), accumulate=1)
    # a loss scaler (fp16's) must change nothing: grads are unscaled before the step, which happens on updates only
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1) if use_scaler else None
    small = copy.deepcopy(model)
    grads_small, _ = run_one_epoch(small, split(images, targets, 2), accumulate=4, scaler=scaler)
    assert len(grads_big) == len(grads_small) == 1  # one optimizer update in both runs
    for g_big, g_small in zip(grads_big[0], grads_small[0]):
        torch.testing.assert_close(g_small, g_big, rtol=1e-5, atol=1e-7)
    for p_big, p_small in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(p_small, p_big, rtol=1e-5, atol=1e-7)
    if use_scaler:
        assert scaler.get_scale() == 2.0 ** 11  # grown once: by the one real update, not by every batch


def test_without_accumulation_each_batch_updates():
    torch.manual_seed(0)
    images, targets = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8), torch.randn(8, 2, 8, 8)
    grads, _ = run_one_epoch(NoBatchNormNet(), split(images, targets, 2), accumulate=1)
    assert len(grads) == 4
    grads, _ = run_one_epoch(NoBatchNormNet(), split(images, targets, 2), accumulate=3)
    assert len(grads) == 2  # after batch 3, and the partial step at the end of the epoch


def test_a_partial_last_group_is_the_mean_of_its_own_batches():
    """6 batches with accumulate=4: the last update sums 2 batches and must equal one batch of their 4 images
    (dividing by 4 instead of 2 would halve its gradient)."""
    torch.manual_seed(0)
    images, targets = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8), torch.randn(12, 2, 8, 8)
    model = NoBatchNormNet()
    grads, _ = run_one_epoch(copy.deepcopy(model), split(images, targets, 2), accumulate=4)
    assert len(grads) == 2
    first_8 = copy.deepcopy(model)
    run_one_epoch(first_8, split(images[:8], targets[:8], 8), accumulate=1)
    grads_last_4, _ = run_one_epoch(first_8, split(images[8:], targets[8:], 4), accumulate=1)
    for g_partial, g_reference in zip(grads[1], grads_last_4[0]):
        torch.testing.assert_close(g_partial, g_reference, rtol=1e-5, atol=1e-7)


def test_the_epoch_counts_the_boxes_augmentation_dropped():
    images, targets = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), torch.randn(4, 2, 8, 8)
    batches = [(x, y, i, boxes_in) for (x, y, i, _), boxes_in in zip(split(images, targets, 2), (2, 6))]
    _, stats = run_one_epoch(NoBatchNormNet(), batches, accumulate=1)  # 4 of 8 boxes kept
    assert stats["boxes_dropped_pct"] == 50.0


def test_accumulation_group_sizes():
    assert [trainer.accumulation_group_size(it, 6, 4) for it in range(6)] == [4, 4, 4, 4, 2, 2]
    assert [trainer.accumulation_group_size(it, 8, 4) for it in range(8)] == [4] * 8
    assert [trainer.accumulation_group_size(it, 3, 1) for it in range(3)] == [1, 1, 1]


def test_accumulation_steps_from_nominal_batch_size():
    assert setup.accumulation_steps(engine_cfg(batch_size=16), world_size=1) == 1  # default: no accumulation
    assert setup.accumulation_steps(engine_cfg(batch_size=8, nominal_batch_size=64), world_size=2) == 4
    with pytest.raises(ValueError, match="nominal_batch_size.*multiple"):
        setup.accumulation_steps(engine_cfg(batch_size=8, nominal_batch_size=20), world_size=1)


# ------------------------------------------------------------------------------------------------- precision
def tiny_detector_batch(cfg, batch=2):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8)
    targets = torch.tensor([[0, 0, 30.0, 30.0, 20.0, 24.0], [1, 2, 40.0, 20.0, 30.0, 16.0]])
    return images, targets


def test_bf16_autocast_step_on_cpu():
    cfg = engine_cfg(img_size=64, width=0.25, lr=1e-3, warmup_epochs=0.0)
    model = build_model(cfg)
    before = copy.deepcopy(model.state_dict())
    dtypes = []
    model.heads[0].convs[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    images, targets = tiny_detector_batch(cfg)
    _, stats = run_one_epoch(model, [(images, targets, [0, 1], len(targets))], accumulate=1, amp_dtype=torch.bfloat16,
                             loss_fn=YOLOLoss(cfg), cfg=cfg)
    assert dtypes == [torch.bfloat16]  # the convolutions really ran in bf16
    assert math.isfinite(stats["loss"]) and stats["loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        setup.autocast_dtype("fp16", torch.device("cpu"))
    assert setup.autocast_dtype("auto", torch.device("cpu")) is None
    assert setup.autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16


# ------------------------------------------------------------------------------------------------- EMA
def test_ema_follows_the_warmed_up_decay():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(4.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 2.0))  # first update: decay warmed up from 0
    for name, value in model.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(ema.module.state_dict()[name], d * start[name] + (1 - d) * value)
    assert ema.module.state_dict()["1.num_batches_tracked"] == 7  # counters copied, not averaged
    for _ in range(200):
        ema.update(model)
    assert ema.current_decay() == pytest.approx(0.9)
    torch.testing.assert_close(ema.module[0].weight, model[0].weight)  # converged onto the constant weights
    assert not any(p.requires_grad for p in ema.module.parameters())


# ------------------------------------------------------------------------------------------------- multiscale
def test_multiscale_sizes_and_box_scaling():
    cfg = engine_cfg(multiscale=True, multiscale_sizes=(64, 160), multiscale_interval=5)
    sizes = [multiscale_size(cfg, step) for step in range(200)]
    assert set(sizes) <= {64, 96, 128, 160} and len(set(sizes)) > 1
    assert all(len(set(sizes[i:i + 5])) == 1 for i in range(0, 200, 5))  # constant within an interval
    images = torch.zeros(2, 3, 96, 96, dtype=torch.uint8)
    images[:, :, 24:48, 48:72] = 255  # a white square: x 48..72, y 24..48 (cx 60, cy 36, 24 x 24)
    targets = torch.tensor([[1, 0, 60.0, 36.0, 24.0, 24.0]])
    resized, scaled = resize_batch(images, targets, 64)
    assert resized.shape == (2, 3, 64, 64)
    torch.testing.assert_close(scaled, torch.tensor([[1, 0, 40.0, 24.0, 16.0, 16.0]]))
    assert resized[1, 0, 17:31, 33:47].min() > 250 and resized[1, 0, 34:, :].max() < 5  # the square moved with its box
    assert torch.equal(targets, torch.tensor([[1, 0, 60.0, 36.0, 24.0, 24.0]]))  # input targets untouched


# ------------------------------------------------------------------------------------------------- checkpoints
def test_rng_state_roundtrip_through_weights_only_load(tmp_path):
    import random
    generator = torch.Generator().manual_seed(5)
    save_checkpoint({"rng": rng_state([generator])}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=generator))
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], [generator])  # weights_only=True inside
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2]) and torch.equal(torch.rand(1, generator=generator), expected[3])


def test_early_stopping_and_best_checkpoint(tmp_path, monkeypatch):
    # every evaluation scores the same: the first is a new best, then `patience` evaluations without improvement
    monkeypatch.setattr(trainer, "evaluate_epoch", lambda t, *args, **kwargs: {"map50": 0.5, "map": 0.2})
    cfg = apply_overrides(BaseConfig(), [
        "--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs"), "--run_name", "stop",
        "--shapes_num_train", "8", "--shapes_num_val", "4", "--img_size", "64", "--width", "0.25",
        "--batch_size", "8", "--num_workers", "0", "--epochs", "10", "--val_interval", "1", "--patience", "2",
        "--device", "cpu", "--tensorboard", "false"]).finalize()
    best, run_dir = trainer.train(cfg)
    rows = MetricsCSV(run_dir / "metrics.csv").read()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and best == 0.5
    per_scale = [[r[f"box_s{stride}"] for stride in (8, 16, 32)] for r in rows]  # the box term per scale
    assert all(0 < v < 2 for v in np.ravel(per_scale) if not math.isnan(v)) and not np.isnan(per_scale).all()
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == 1 and load_checkpoint(run_dir / "last.pt")["epoch"] == 3
    assert (run_dir / "results.png").is_file()


def test_tensorboard_is_optional(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    tb = TensorBoard(tmp_path / "tb")
    tb.scalars({"loss": 1.0}, 0)
    tb.image("grid", np.zeros((4, 4, 3), np.uint8), 0)
    tb.close()
    assert tb.writer is None and not (tmp_path / "tb").exists()


def test_loader_workers_get_their_own_augmentation_streams(tmp_path):
    # forked workers start with copies of one albumentations generator: unseeded, worker 1 repeats worker 0
    from yolo.engine.setup import build_loaders
    cfg = apply_overrides(BaseConfig(), [
        "--data_root", str(tmp_path / "data"), "--shapes_num_train", "8", "--shapes_num_val", "2", "--img_size", "64",
        "--batch_size", "1", "--num_workers", "2", "--hflip_prob", "0"]).finalize()
    (train_loader,), _ = build_loaders([cfg], cfg, DistInfo())
    train_loader.dataset.records = [train_loader.dataset.records[0]] * 8  # one image: only augmentation differs
    images = [batch[0] for batch, _ in zip(train_loader, range(2))]  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(images[0], images[1])


def test_non_finite_loss_names_epoch_and_iteration():
    calls = []

    def loss_turning_nan(outputs, targets, decoding):
        loss, items, stats = mse_loss(outputs, targets, decoding)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), items, stats

    images, targets = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8), torch.randn(8, 2, 8, 8)
    with pytest.raises(FloatingPointError, match="epoch 1, iteration 2"):
        run_one_epoch(NoBatchNormNet(), split(images, targets, 2), accumulate=1, loss_fn=loss_turning_nan)


def test_mosaics_stop_for_the_last_epochs_also_in_persistent_workers(tmp_path):
    from yolo.engine.setup import build_loaders, start_epoch
    cfg = apply_overrides(BaseConfig(), [
        "--data_root", str(tmp_path / "data"), "--shapes_num_train", "8", "--shapes_num_val", "2", "--img_size", "64",
        "--batch_size", "2", "--num_workers", "2", "--mosaic_prob", "1", "--epochs", "3", "--mosaic_off_epochs", "1",
        "--min_box_size", "0", "--min_visibility", "0"]).finalize()
    (loader,), _ = build_loaders([cfg], cfg, DistInfo())
    records = loader.dataset.records
    assert all(len(rec.boxes) for rec in records)  # a mosaic then always holds more boxes than its first image

    def mosaic_batches(epoch):
        start_epoch(loader, epoch, cfg, DistInfo())
        # boxes before augmentation: a mosaic counts those of its 4 images, a plain sample those of its own
        return [boxes_in > sum(len(records[i].boxes) for i in indices) for _, _, indices, boxes_in in loader]

    assert mosaic_batches(0) == [True] * 4 and mosaic_batches(1) == [True] * 4
    assert mosaic_batches(2) == [False] * 4  # the last epoch: the workers (kept from epoch 1) saw the switch
    assert loader.persistent_workers


def test_augmentation_stops_for_the_last_epochs_also_in_persistent_workers(tmp_path):
    """augment_off_epochs: the last epochs' samples are the plain letterbox -- what evaluation's loader makes of the
    same records -- while earlier epochs' are augmented (flips, zooms, mosaics)."""
    from yolo.data.dataset import DetectionDataset, collate
    from yolo.data.transforms import build_transform
    from yolo.engine.setup import build_loaders, start_epoch
    cfg = apply_overrides(BaseConfig(), [
        "--data_root", str(tmp_path / "data"), "--shapes_num_train", "8", "--shapes_num_val", "2", "--img_size", "64",
        "--batch_size", "2", "--num_workers", "2", "--mosaic_prob", "0.5", "--epochs", "3", "--augment_off_epochs",
        "1", "--min_box_size", "0", "--min_visibility", "0"]).finalize()
    (loader,), _ = build_loaders([cfg], cfg, DistInfo())
    plain = DetectionDataset(loader.dataset.records, build_transform(cfg, train=False), cfg.img_size)

    def same_as_plain(epoch):
        start_epoch(loader, epoch, cfg, DistInfo())
        found = []
        for images, targets, indices, _ in loader:
            want_images, want_targets, *_ = collate([plain[i] for i in indices])
            found.append(torch.equal(images, want_images) and torch.allclose(targets, want_targets, atol=1e-3))
        return found

    assert not all(same_as_plain(0)) and not all(same_as_plain(1))
    assert same_as_plain(2) == [True] * 4  # the last epoch: the workers (kept from epoch 1) saw the switch
    assert loader.persistent_workers


def test_metrics_csv_keeps_columns_aligned_when_a_resumed_run_logs_more(tmp_path):
    # a run written by a version without the per-scale box columns, continued by one with them
    csv_file = MetricsCSV(tmp_path / "metrics.csv")
    csv_file.append({"epoch": 0, "loss": 2.0, "map50": 0.1})
    csv_file.append({"epoch": 1, "loss": 1.5, "box_s8": 0.4, "map50": 0.2})
    rows = csv_file.read()
    assert csv_file.header() == ["epoch", "loss", "map50", "box_s8"]
    assert rows[0]["loss"] == 2.0 and rows[0]["map50"] == 0.1 and math.isnan(rows[0]["box_s8"])
    assert rows[1] == {"epoch": 1.0, "loss": 1.5, "map50": 0.2, "box_s8": 0.4}

