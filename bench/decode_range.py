"""Does the decoding's reach or size range limit where boxes can go? The targets every positive would need, no model.

    python bench/decode_range.py --config configs/my_config.py
    python bench/decode_range.py --config configs/cards.py [--ckpt runs/cards/last.pt]   # that run's anchors

The head decodes u = sigmoid(t) (yolo/models/head.py): centre = cell + 0.5 + (2 u - 1) reach, size = anchor (2 u)^2.
A positive whose GT needs u near 0 or 1 sits where the sigmoid is flat (its gradient u (1 - u) vanishes), and one
that needs u outside [0, 1] cannot be reached at all: those are what a wider reach or size range would fix. For every
positive of the training set (the config's label assignment on its letterboxed boxes, the anchors the training would
use: the config's, refit as auto_anchor_bpr refits them; or a checkpoint's decoding with --ckpt), this prints per
scale the positives and the quantiles of their target u for the centre and the size, and the share near the edges
(u < 0.05 or > 0.95) and beyond them. Any --field value overrides the config (e.g. --decode_reach 2).
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit  # noqa: E402
from yolo.anchors import refit_if_poor  # noqa: E402
from yolo.assign import assign  # noqa: E402
from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.data.dataset import read_records  # noqa: E402
from yolo.data.transforms import letterbox_params, letterboxed_box_sizes  # noqa: E402
from yolo.engine.checkpoint import checkpoint_config, load_model_checkpoint  # noqa: E402
from yolo.models.head import box_numbers, model_reach, reach_in_cells  # noqa: E402

EDGE = 0.05     # u within this of 0 or 1: the sigmoid's slope u (1 - u) is under a fifth of its largest
CHUNK = 256     # images assigned at once


def letterboxed_targets(records, img_size):
    """(N, 6) image index, class, cx, cy, w, h in letterboxed pixels of every non-difficult box."""
    rows = [np.zeros((0, 6))]
    for i, r in enumerate(records):
        sx, sy, px, py = letterbox_params(r.width, r.height, img_size)
        boxes = r.boxes[~r.difficult].astype(np.float64) * [sx, sy, sx, sy] + [px, py, px, py]  # (n, 4) xyxy
        centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
        rows.append(np.column_stack((np.full(len(boxes), i), r.labels[~r.difficult], centre, size)))
    return torch.tensor(np.concatenate(rows), dtype=torch.float32)


def training_anchors(cfg, records):
    """The anchors a training of cfg would use: the config's, refit as auto_anchor_bpr refits them."""
    anchors = cfg.anchors
    if cfg.auto_anchor_bpr:
        refit, _ = refit_if_poor(letterboxed_box_sizes(records, cfg.img_size), cfg.anchors, cfg.match_iou_thres,
                                 cfg.auto_anchor_bpr, cfg.seed)
        anchors = refit or anchors  # None: the config's anchors are kept
    return torch.tensor(anchors, dtype=torch.float32)


def target_numbers(cfg, records, anchors):
    """{stride: (P, 4) target u of every positive of that scale}."""
    strides = tuple(cfg.strides)
    grids = [(cfg.img_size // s, cfg.img_size // s) for s in strides]
    found = {s: [] for s in strides}
    generator = torch.Generator().manual_seed(cfg.seed)
    for start in range(0, len(records), CHUNK):
        targets = letterboxed_targets(records[start:start + CHUNK], cfg.img_size)
        if not len(targets):
            continue
        assignments, _ = assign(targets, anchors, grids, strides, cfg.label_assignment, cfg.match_iou_thres,
                                cfg.filter_by_max_iou, cfg.assign_unmatched_to_best, generator)
        for s, (stride, asg, grid) in enumerate(zip(strides, assignments, grids)):
            if len(asg.gt):
                cell = torch.stack((asg.gx, asg.gy), 1).float()
                reach = reach_in_cells(model_reach(cfg), grid)
                found[stride].append(box_numbers(targets[asg.gt, 2:6], cell, anchors[s][asg.anchor], stride, reach))
    return {s: torch.cat(u) if u else torch.zeros(0, 4) for s, u in found.items()}


def table(numbers):
    lines = ["| stride | positives | centre u: 1 / 50 / 99 % | size u: 1 / 50 / 99 % | size / anchor at 1 / 99 % | "
             "near an edge: centre, size | beyond: centre, size |", "|---:|---:|---|---|---|---|---|"]
    for stride, u in numbers.items():
        if not len(u):
            lines.append(f"| {stride} | 0 | | | | | |")
            continue
        centre, size = u[:, :2].reshape(-1).numpy(), u[:, 2:].reshape(-1).numpy()
        q = lambda x: " / ".join(f"{v:.2f}" for v in np.quantile(x, [0.01, 0.5, 0.99]))  # noqa: E731
        near = lambda x: np.mean((x < EDGE) | (x > 1 - EDGE))  # noqa: E731
        beyond = lambda x: np.mean((x < 0) | (x > 1))  # noqa: E731
        ratio = " / ".join(f"{(2 * v) ** 2:.2f}" for v in np.quantile(size, [0.01, 0.99]))
        lines.append(f"| {stride} | {len(u)} | {q(centre)} | {q(size)} | {ratio} | {near(centre):.1%}, "
                     f"{near(size):.1%} | {beyond(centre):.1%}, {beyond(size):.1%} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", default=None, help="take the decoding (anchors, reach, input size) from this "
                                                     "checkpoint")
    args, overrides = parser.parse_known_args()
    os.chdir(ROOT)
    cfg = apply_overrides(load_config(ROOT / args.config), overrides).finalize()
    if args.ckpt:  # the trained model's decoding: its input size, assignment, reach and anchors
        saved = checkpoint_config(load_model_checkpoint(args.ckpt), args.ckpt)
        for field in ("img_size", "label_assignment", "decode_reach", "anchors"):
            setattr(cfg, field, getattr(saved, field))
        cfg.auto_anchor_bpr = 0  # its anchors are the trained ones
        cfg.finalize()
    records = read_records(cfg, "train")
    anchors = training_anchors(cfg, records)
    emit(f"{args.config}: {len(records)} training images at {cfg.img_size} px, {cfg.label_assignment}, reach "
         f"{model_reach(cfg)}, anchors {anchors.round().int().tolist()}\n\n"
         + table(target_numbers(cfg, records, anchors)))


if __name__ == "__main__":
    main()
