"""time_budget: the epoch count that fits, by hand, and a run planned on a fake clock."""
import pytest

import yolo.engine.budget as budget
from yolo.config import BaseConfig
from yolo.engine import trainer
from yolo.engine.budget import TimeBudget, epochs_that_fit, evaluations
from yolo.engine.logs import MetricsCSV
from yolo.engine.schedules import lr_factor


def test_evaluations_count_every_interval_and_the_last_epoch():
    assert evaluations(0, 5, 2) == 3        # epochs 2, 4 and the last, 5
    assert evaluations(3, 3, 2) == 2        # 4 and 6 (the last is an interval epoch already)
    assert evaluations(3, 0, 2) == 0


def test_epochs_that_fit_by_hand():
    # 100 s left, 20 s per epoch, 5 s per evaluation, every epoch evaluated: 4 x 25 = 100 fits, 5 x 25 does not
    assert epochs_that_fit(2, 100, 20, 5, 1) == 6
    # every 3rd epoch evaluated: n = 4 costs 80 + 2 evaluations (epochs 3 and 4 of 1..4, done = 0) = 90 <= 100,
    # n = 5 costs 100 + 2 x 5 = 110 > 100
    assert epochs_that_fit(0, 100, 20, 5, 3) == 4
    assert epochs_that_fit(7, 10, 20, 5, 1) == 7  # nothing fits: stop where we are


def test_plan_counts_the_evaluation_still_due(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(budget, "now", lambda: clock[0])
    plan = TimeBudget(minutes=2)  # 120 s
    for train_s in (30.0, 20.0):  # the first epoch pays for start-up: only the second counts once measured
        plan.epoch_started()
        clock[0] += train_s
        plan.epoch_trained()
    # 50 s spent; epoch 2's evaluation is due (val_interval 2), unmeasured: 0.25 x 20 = 5 s -> 65 s left;
    # each further epoch 20 s and every 2nd evaluates: 3 epochs = 60 + 1 evaluation (epoch 4; 5 is the last ->
    # a 2nd) = 70 > 65, 2 epochs = 40 + 1 (epoch 4, also the last) x 5 = 45 <= 65
    total, train_s, eval_s = plan.plan(2, 2)
    assert (total, train_s, eval_s) == (4, 20.0, 5.0)


def test_training_fits_its_epochs_and_schedule_into_the_budget(tmp_path, monkeypatch):
    # a fake clock: every training epoch takes 60 s, every evaluation 10 s; a 5-minute budget holds
    # 4 epochs of 70 s (280 s): after epoch 1 the unmeasured evaluation is guessed at 15 s -> 60 + 15 per epoch,
    # 240 s left -> 3 more; the measured 10 s keep the plan at 4
    clock = [0.0]
    monkeypatch.setattr(budget, "now", lambda: clock[0])
    one_epoch, evaluate_epoch = trainer.train_one_epoch, trainer.evaluate_epoch

    def slow_epoch(*args, **kwargs):
        clock[0] += 60.0
        return one_epoch(*args, **kwargs)

    def slow_evaluation(*args, **kwargs):
        clock[0] += 10.0
        return evaluate_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", slow_epoch)
    monkeypatch.setattr(trainer, "evaluate_epoch", slow_evaluation)
    cfg = BaseConfig()
    for name, value in dict(shapes_num_train=8, shapes_num_val=2, img_size=64, width=0.25, batch_size=4,
                            num_workers=0, device="cpu", epochs=2, val_interval=1, tensorboard=False,
                            warmup_epochs=1.0, time_budget=5, data_root=str(tmp_path / "data"),
                            runs_dir=str(tmp_path / "runs")).items():
        setattr(cfg, name, value)
    cfg.finalize()
    _, run_dir = trainer.train(cfg)
    rows = MetricsCSV(run_dir / "metrics.csv").read()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and clock[0] == 4 * 70.0 <= 300
    assert "-> 4 epochs (planned 2)" in (run_dir / "log.txt").read_text()
    # the schedule stretched to the plan (2 batches per epoch, 2 of warm-up): epoch 2 already follows the 4-epoch
    # cosine, and the last batch is its last step
    planned = [cfg.lr * lr_factor(it, 4 * 2, 2, cfg, 2) for it in range(8)]
    assert rows[1]["lr"] == pytest.approx(planned[3]) and rows[-1]["lr"] == pytest.approx(planned[7])
    assert rows[1]["lr"] != pytest.approx(cfg.lr * lr_factor(3, 2 * 2, 2, cfg, 2), rel=0.1)  # the 2-epoch one
    assert cfg.epochs == 2  # the caller's config is left as it was
