"""Is there a signal in the head search's architecture gradient? The gradient of the loss to the alphas, one alpha
batch at a time, over many held-out batches: its mean against its spread, per alpha, at points of a cached search.

    python bench/alpha_signal.py --init_ckpt runs/<trained run>/last.pt [--config configs/my_config.py]
                                 [--batches 100] [--at 0,100,1000] [--out runs/alpha_signal/<name>.json]
                                 [--field value ...]

The cached search (yolo/tasks/search_head.py) is set up as `--task search_head` sets it up: the checkpoint's frozen
backbone and neck, the features of the train split cached, the towers' part of the prediction convs at zero. The
weights then take the search's kind of weight steps (its optimizer and lr schedule, no alpha steps: the batches come
in another order than in a search); at each step of --at, the alphas' first-order gradient of the task loss (no
latency term) is taken on --batches held-out alpha batches of search_batch_size images, the weights fixed.

Per alpha (9 edges x 11 ops per tower), over the n batches: the mean gradient m, its standard deviation s, the
t statistic m / (s / sqrt(n)) and the per-batch signal-to-noise ratio m / s. Without any signal, |t| has a median
of 0.67 and exceeds 1.96 for 5 % of the alphas: a median near 0.67 says the mean cannot be told from zero with n
batches. Adam moves a logit by about lr per step, in the gradient's direction on average (drift: lr x steps x
m/s) and at random otherwise (walk: lr x sqrt(steps)); the drift is 3 x the walk after 9 / (m/s)^2 steps, printed
as "steps to separate" (its median over the alphas) -- against the search's search_steps. Adam's L2 decay (config
search_alpha_weight_decay) adds decay x alpha to the gradient: it holds an alpha where that equals |m|, at
|m| / decay, whatever the lr or the number of steps ("median_abs_mean" over the decay: the median alpha it allows).
"""
import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from yolo.cli import finish_config  # noqa: E402
from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.engine.distributed import select_device  # noqa: E402
from yolo.engine.folders import next_free_path  # noqa: E402
from yolo.engine.setup import seed_everything  # noqa: E402
from yolo.loss import YOLOLoss  # noqa: E402
from yolo.models.search_cell import TOWERS  # noqa: E402
from yolo.research.head_search import gradients  # noqa: E402
from yolo.tasks.search_head import cached_setup, train_step, weight_training  # noqa: E402

NULL_MEDIAN_T = 0.674  # the median of |t| when the true mean is zero (normal approximation, n >= 30)


def alpha_gradient_table(loss_of, batches, alphas, weights, count):
    """(count, number of alphas): the alphas' gradient on each of `count` batches, the weights untouched."""
    rows = []
    for _ in range(count):
        grads, _ = gradients(loss_of, next(batches), alphas, weights)
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows).double()


def signal_stats(table):
    """The statistics of the module docstring for one (batches, alphas) gradient table (alphas whose gradient is
    exactly zero on every batch, e.g. at the search's start, are counted apart)."""
    n = table.shape[0]
    mean, std = table.mean(0), table.std(0)
    live = std > 0
    stats = {"batches": n, "zero_alphas": int((~live).sum()), "max_abs_gradient": float(table.abs().max())}
    if not live.any():
        return stats
    snr = mean[live].abs() / std[live]
    t = snr * n ** 0.5
    return {**stats, "median_abs_t": float(t.median()), "share_t_over_1.96": float((t > 1.96).double().mean()),
            "median_abs_mean": float(mean[live].abs().median()), "median_snr": float(snr.median()),
            "p90_snr": float(snr.quantile(0.9)),
            "median_steps_to_separate": float((9 / snr.clamp_min(1e-12) ** 2).median())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--init_ckpt", required=True, help="the trained detector the search starts from")
    parser.add_argument("--batches", type=int, default=100, help="alpha batches per measurement")
    parser.add_argument("--at", default="0,100,1000", help="weight steps at which to measure, ascending")
    parser.add_argument("--out", default=None,
                        help="results JSON (default runs/alpha_signal/<config>.json, <config>2.json ... if taken)")
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides)
    cfg.init_ckpt = args.init_ckpt
    finish_config(cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    setup = cached_setup(cfg, Path(args.init_ckpt), select_device(cfg.device))
    if setup.alpha_batches is None:
        raise SystemExit("search_alpha_split 'same': the alphas have no held-out batches to measure on")
    net = setup.net
    alphas, weights, optimizer, scheduler = weight_training(setup, cfg)
    loss_fn = YOLOLoss(setup.data_cfg)

    def loss_of(batch):
        return loss_fn(net(batch[0]), batch[1], net.decoding)[0]

    sizes = [a.numel() for a in alphas]  # the box tower's alphas, then the class tower's
    points, done, results = sorted(int(s) for s in args.at.split(",")), 0, []
    for point in points:
        for _ in range(point - done):
            train_step(net, loss_fn, *next(setup.weight_batches), optimizer, train=weights, frozen=alphas,
                       grad_clip=cfg.grad_clip)
            scheduler.step()
        done = point
        table = alpha_gradient_table(loss_of, setup.alpha_batches, alphas, weights, args.batches)
        row = {"weight_steps": point, "batch_size": setup.batch_size,
               **{tower: signal_stats(part) for tower, part in zip(TOWERS, table.split(sizes, dim=1))}}
        results.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out) if args.out else next_free_path(f"runs/alpha_signal/{Path(args.config).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "init_ckpt": args.init_ckpt, "search_steps": cfg.search_steps,
                               "rows": results}, indent=1) + "\n")
    print(f"null: median |t| {NULL_MEDIAN_T}, share over 1.96 0.05; written to {out}")


if __name__ == "__main__":
    main()
