"""Learning-rate schedules against hand-computed values, and the schedule plot task."""
import math

import pytest

from yolo.config import BaseConfig
from yolo.engine.schedules import (build_lr_lambda, cosine_restarts, iterations_per_epoch, lr_curve,
                                   step_decay)
from yolo.tasks.schedule import run as run_schedule_plot


def make_cfg(**fields):
    cfg = BaseConfig()
    cfg.epochs, cfg.warmup_epochs, cfg.lr, cfg.final_lr_ratio = 10, 1.0, 0.1, 0.05
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def test_warmup_is_linear_from_the_first_iteration():
    f = build_lr_lambda(make_cfg(), iters_per_epoch=10)  # 10 warmup iterations
    assert [f(i) for i in range(10)] == pytest.approx([0.1 * (i + 1) for i in range(10)])
    assert f(10) == pytest.approx(1.0)  # the peak right after the warmup


def test_cosine_reaches_final_ratio_at_the_end():
    f = build_lr_lambda(make_cfg(lr_schedule="cosine"), iters_per_epoch=10)  # 100 iterations, 10 of warmup
    assert f(55) == pytest.approx(0.05 + 0.95 * 0.5)  # half-way through the 90 cosine iterations
    assert f(100) == pytest.approx(0.05)
    assert f(40) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 30 / 90)))
    # every iteration against the formula written out: linear warmup, then half a cosine to 0.05
    def written_out(i):
        return (i + 1) / 10 if i < 10 else 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (i - 10) / 90))
    assert [f(i) for i in range(101)] == pytest.approx([written_out(i) for i in range(101)])


def test_step_schedule():
    f = build_lr_lambda(make_cfg(lr_schedule="step", lr_steps=(0.5, 0.8), lr_step_factor=0.1), iters_per_epoch=10)
    assert f(10) == 1.0 and f(49) == 1.0
    assert f(50) == pytest.approx(0.1) and f(79) == pytest.approx(0.1)
    assert f(80) == pytest.approx(0.01) and f(99) == pytest.approx(0.01)
    assert step_decay(0.3, (0.2, 0.25, 0.9), 0.5) == 0.25


def test_cosine_restarts():
    # first cycle 2 epochs = 20 iterations, then 40 (mult 2): restarts at 10 + 20 and 10 + 60 after the warmup
    f = build_lr_lambda(make_cfg(lr_schedule="cosine_restarts", restart_epochs=2.0, restart_mult=2), iters_per_epoch=10)
    assert f(10) == pytest.approx(1.0) and f(30) == pytest.approx(1.0) and f(70) == pytest.approx(1.0)
    assert f(20) == pytest.approx(0.05 + 0.95 * 0.5)  # middle of the first cycle
    assert f(50) == pytest.approx(0.05 + 0.95 * 0.5)  # middle of the second, twice as long
    assert f(29) < 0.06 and f(29) > 0.05
    assert cosine_restarts(7, 5, 1, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 5)))


def test_constant_schedule():
    f = build_lr_lambda(make_cfg(lr_schedule="constant", warmup_epochs=0.5), iters_per_epoch=10)
    assert [f(i) for i in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(f(i) == 1.0 for i in range(5, 100))


def test_warmup_is_capped_at_half_of_training():
    f = build_lr_lambda(make_cfg(epochs=2, warmup_epochs=5.0), iters_per_epoch=10)  # 20 iterations
    assert f(9) == pytest.approx(1.0)  # warmup shortened to 10 iterations


def test_iterations_per_epoch_match_the_loader():
    assert iterations_per_epoch(100, 16) == 6  # the last partial batch is dropped
    assert iterations_per_epoch(100, 16, world_size=2) == 3
    assert iterations_per_epoch(10, 16) == 1  # a set smaller than a batch: one partial batch


def test_schedule_plot(tmp_path):
    cfg = make_cfg(data_root=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"), run_name="s",
                   shapes_num_train=32, shapes_num_val=4, batch_size=8, lr_schedule="cosine_restarts")
    path = run_schedule_plot(cfg)
    assert path == tmp_path / "runs" / "s_lr_schedule.png" and path.stat().st_size > 5000
    lrs = lr_curve(cfg, 4)
    assert len(lrs) == 40 and max(lrs) == pytest.approx(0.1) and min(lrs) > 0
