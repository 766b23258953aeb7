"""Learning-rate schedules, stepped once per iteration: a multiplier of the peak lr for iteration `it`."""
import math


def warmup_cosine(it, total_iters, warmup_iters, final_ratio):
    """Linear warmup from 0 to 1 over warmup_iters (large early gradients of a fresh head would wreck the
    backbone), then a cosine from 1 down to final_ratio at total_iters."""
    if it < warmup_iters:
        return (it + 1) / warmup_iters
    progress = min(1.0, (it - warmup_iters) / max(1, total_iters - warmup_iters))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_lr_lambda(cfg, iters_per_epoch):
    total = cfg.epochs * iters_per_epoch
    warmup = min(int(cfg.warmup_epochs * iters_per_epoch), total // 2)
    return lambda it: warmup_cosine(it, total, warmup, cfg.final_lr_ratio)
