"""Learning-rate schedules, stepped once per iteration: a multiplier of the peak lr for iteration `it`.

Every schedule starts with a linear warmup from ~0 to 1 over `warmup_epochs` (large early gradients of a fresh
head would otherwise wreck the backbone), then follows `lr_schedule`:

    cosine           1 -> final_lr_ratio along half a cosine, reached at the last iteration
    step             1, multiplied by lr_step_factor at each fraction of training in lr_steps
    cosine_restarts  cosine cycles from 1 to final_lr_ratio, the first restart_epochs long, each next one
                     restart_mult times longer (SGDR); every restart jumps back to the peak lr
    constant         1

During the warmup two more values may move with the same progress p = (it + 1) / warmup iterations (YOLOv5's
warmup): the momentum (Adam's beta1) rises from warmup_momentum to momentum, and the biases' lr falls from
warmup_bias_lr to the scheduled lr: bias lr = warmup_bias_lr * (1 - p) + scheduled lr. At their defaults (None, 0)
neither moves: every group follows the multiplier alone.

`python main.py --task schedule` draws the curve of the current config (yolo/tasks/schedule.py).
"""
import math

import torch


def cosine(progress, final_ratio):
    """Half a cosine from 1 (progress 0) to final_ratio (progress 1)."""
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def step_decay(progress, milestones, factor):
    """factor ** (number of milestones already passed); progress and milestones are fractions of training."""
    return factor ** sum(progress >= m for m in milestones)


def cosine_restarts(it, first_cycle, mult, final_ratio):
    """Cosine cycles: the first `first_cycle` iterations long, each next one `mult` times longer."""
    cycle = max(1, first_cycle)
    while it >= cycle:
        it -= cycle
        cycle *= mult
    return cosine(it / cycle, final_ratio)


def lr_factor(it, total_iters, warmup_iters, cfg, iters_per_epoch):
    """The multiplier of cfg.lr at iteration `it` (0-based, counted over the whole run)."""
    if it < warmup_iters:
        return (it + 1) / warmup_iters
    after = it - warmup_iters
    progress = min(1.0, after / max(1, total_iters - warmup_iters))
    if cfg.lr_schedule == "cosine":
        return cosine(progress, cfg.final_lr_ratio)
    if cfg.lr_schedule == "step":
        return step_decay(it / max(1, total_iters), cfg.lr_steps, cfg.lr_step_factor)
    if cfg.lr_schedule == "cosine_restarts":
        first = round(cfg.restart_epochs * iters_per_epoch)
        return cosine_restarts(after, first, cfg.restart_mult, cfg.final_lr_ratio)
    if cfg.lr_schedule == "constant":
        return 1.0
    raise ValueError(f"config field 'lr_schedule' = {cfg.lr_schedule!r} is not a known schedule")


def warmup_iterations(cfg, iters_per_epoch):
    """Iterations of the warmup: warmup_epochs of them, at most half the run."""
    total = cfg.epochs * iters_per_epoch
    return min(int(cfg.warmup_epochs * iters_per_epoch), total // 2)


def build_lr_lambda(cfg, iters_per_epoch):
    """The function of the iteration that torch's LambdaLR multiplies the peak lr with. It reads cfg.epochs at every
    call, so a run whose epoch count is planned as it goes (time_budget) stretches or shrinks its schedule."""
    def factor(it):
        total = cfg.epochs * iters_per_epoch
        return lr_factor(it, total, warmup_iterations(cfg, iters_per_epoch), cfg, iters_per_epoch)
    return factor


def warmup_progress(it, cfg, iters_per_epoch):
    """p = (it + 1) / warmup iterations during the warmup, None after it (or without one)."""
    warmup = warmup_iterations(cfg, iters_per_epoch)
    return (it + 1) / warmup if it < warmup else None


def build_bias_lr_lambda(cfg, iters_per_epoch):
    """The biases' multiplier of the peak lr: the schedule's, plus warmup_bias_lr / lr * (1 - p) during the warmup."""
    factor = build_lr_lambda(cfg, iters_per_epoch)

    def bias_factor(it):
        p = warmup_progress(it, cfg, iters_per_epoch)
        return factor(it) if p is None else factor(it) + cfg.warmup_bias_lr / cfg.lr * (1 - p)
    return bias_factor


def warmup_momentum(it, cfg, iters_per_epoch):
    """The momentum of iteration `it`: warmup_momentum + (momentum - warmup_momentum) * p during the warmup,
    momentum after it."""
    p = warmup_progress(it, cfg, iters_per_epoch)
    return cfg.momentum if p is None else cfg.warmup_momentum + (cfg.momentum - cfg.warmup_momentum) * p


class WarmupLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR (one multiplier per param group; its state is LambdaLR's) that also sets the momentum of every group
    (SGD's momentum, Adam's beta1) for the iteration it steps to, when set_momentum(it) is given."""

    def __init__(self, optimizer, lr_lambdas, set_momentum=None):
        self.set_momentum = set_momentum
        super().__init__(optimizer, lr_lambdas)

    def state_dict(self):
        """LambdaLR's state: the momentum function is rebuilt from the config, never saved (nor picklable)."""
        state = super().state_dict()
        state.pop("set_momentum", None)
        return state

    def step(self, epoch=None):
        super().step(epoch)
        if self.set_momentum is not None:
            momentum = self.set_momentum(self.last_epoch)
            for group in self.optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                else:
                    group["momentum"] = momentum


def build_scheduler(optimizer, cfg, iters_per_epoch):
    """The run's scheduler, stepped once per iteration: the group named "bias" (build_optimizer makes it when
    warmup_bias_lr > 0) gets the biases' multiplier, every other group the schedule's; the momentum is warmed up when
    warmup_momentum is set."""
    factor, bias_factor = build_lr_lambda(cfg, iters_per_epoch), build_bias_lr_lambda(cfg, iters_per_epoch)
    lambdas = [bias_factor if group.get("name") == "bias" else factor for group in optimizer.param_groups]
    set_momentum = None
    if cfg.warmup_momentum is not None:
        def set_momentum(it):
            return warmup_momentum(it, cfg, iters_per_epoch)
    return WarmupLR(optimizer, lambdas, set_momentum)


def lr_curve(cfg, iters_per_epoch):
    """The lr of every iteration of the run."""
    factor = build_lr_lambda(cfg, iters_per_epoch)
    return [cfg.lr * factor(it) for it in range(cfg.epochs * iters_per_epoch)]


def iterations_per_epoch(num_images, batch_size, world_size=1):
    """Batches per epoch and process, as the training loader makes them (it drops the last partial batch when the
    set holds more than one batch)."""
    per_process = num_images // world_size
    drop_last = num_images > batch_size
    return max(1, per_process // batch_size if drop_last else math.ceil(per_process / batch_size))
