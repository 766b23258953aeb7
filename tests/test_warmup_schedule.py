"""The warmup of the momentum and of the biases' lr (warmup_momentum, warmup_bias_lr): at their defaults every
param group's lr and momentum at every step are those of the plain linear warmup + cosine (a copy of that formula
below); set, the momentum rises from warmup_momentum and the biases' lr falls from warmup_bias_lr to the schedule's."""
import math

import pytest
import torch

from yolo.config import BaseConfig
from yolo.engine.schedules import build_scheduler
from yolo.engine.setup import build_optimizer

ITERS_PER_EPOCH = 7


def plain_schedule(it, cfg):
    """The lr multiplier of a linear warmup then a cosine to final_lr_ratio (the schedule without the new genes)."""
    total = cfg.epochs * ITERS_PER_EPOCH
    warmup = min(int(cfg.warmup_epochs * ITERS_PER_EPOCH), total // 2)
    if it < warmup:
        return (it + 1) / warmup
    progress = min(1.0, (it - warmup) / max(1, total - warmup))
    return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def walk(cfg):
    """[(lr, momentum) of every param group] at every iteration, as the trainer steps them."""
    model = tiny_model()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, ITERS_PER_EPOCH)
    steps = []
    for _ in range(cfg.epochs * ITERS_PER_EPOCH):
        steps.append([(g["lr"], momentum_of(g)) for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return optimizer, steps


def config(**fields):
    cfg = BaseConfig()
    cfg.epochs, cfg.warmup_epochs = 4, 1.5
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_defaults_give_the_plain_schedule_exactly(optimizer):
    cfg = config(optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 2e-3)
    assert cfg.warmup_momentum is None and cfg.warmup_bias_lr == 0.0
    opt, steps = walk(cfg)
    assert len(opt.param_groups) == 2  # weights with decay, the rest without: as before
    for it, groups in enumerate(steps):
        for lr, momentum in groups:
            assert lr == cfg.lr * plain_schedule(it, cfg), it  # exactly, not approximately
            assert momentum == cfg.momentum, it


def test_warmup_momentum_rises_to_momentum_over_the_warmup():
    cfg = config(warmup_momentum=0.8)
    _, steps = walk(cfg)
    warmup = int(cfg.warmup_epochs * ITERS_PER_EPOCH)
    for it, groups in enumerate(steps):
        expected = 0.8 + (cfg.momentum - 0.8) * (it + 1) / warmup if it < warmup else cfg.momentum
        for lr, momentum in groups:
            assert momentum == pytest.approx(expected, abs=1e-12), it
            assert lr == pytest.approx(cfg.lr * plain_schedule(it, cfg), abs=1e-15), "the lr is not touched"


def test_warmup_bias_lr_falls_to_the_schedule_for_the_biases_only():
    cfg = config(warmup_bias_lr=0.05)
    opt, steps = walk(cfg)
    assert len(opt.param_groups) == 3
    model = tiny_model()
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    assert [len(g["params"]) for g in opt.param_groups] == [2, 1, len(biases)]  # conv weights, BN weight, biases
    warmup = int(cfg.warmup_epochs * ITERS_PER_EPOCH)
    for it, groups in enumerate(steps):
        scheduled = cfg.lr * plain_schedule(it, cfg)
        progress = (it + 1) / warmup
        bias_lr = 0.05 * (1 - progress) + scheduled if it < warmup else scheduled
        assert [lr for lr, _ in groups] == pytest.approx([scheduled, scheduled, bias_lr], rel=1e-12), it
    assert steps[0][2][0] > 0.04 and steps[warmup][2][0] == pytest.approx(steps[warmup][0][0])


def test_warmup_fields_are_checked():
    for field, value in [("warmup_momentum", 1.0), ("warmup_momentum", "0.8"), ("warmup_bias_lr", -0.1)]:
        cfg = BaseConfig()
        setattr(cfg, field, value)
        with pytest.raises(ValueError, match=f"config field '{field}'"):
            cfg.finalize()


def test_the_scheduler_state_saves_and_resumes(tmp_path):
    """A checkpoint holds the scheduler's state (loaded with weights_only=True); resumed, the walk goes on as before."""
    cfg = config(warmup_momentum=0.8, warmup_bias_lr=0.05)
    model = tiny_model()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, ITERS_PER_EPOCH)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed_optimizer = build_optimizer(model, cfg)
    resumed = build_scheduler(resumed_optimizer, cfg, ITERS_PER_EPOCH)
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    for a, b in ((optimizer, scheduler), (resumed_optimizer, resumed)):
        a.step()
        b.step()
    assert [(g["lr"], g["betas"]) for g in resumed_optimizer.param_groups] == \
        [(g["lr"], g["betas"]) for g in optimizer.param_groups]
