"""`python main.py --task anchors`: k-means anchors for the training boxes of every task, the fit of the current
and the new anchors, and the config line to paste (the method: yolo/anchors.py)."""
from loguru import logger

from ..anchors import anchor_fit, format_anchors, kmeans_scales
from ..config import task_configs
from ..data.dataset import read_records
from ..data.transforms import letterboxed_box_sizes
from ..engine.logs import setup_logging


def run(cfg):
    """Compute anchors for the training boxes of cfg; log both fits and the config line. Returns the new anchors
    as the config holds them (3 lists of (w, h))."""
    setup_logging()
    # the anchors are shared by all tasks of a multi-task config: fit them to the boxes of every task
    records = [rec for task in task_configs(cfg) for rec in read_records(task, "train")]
    wh = letterboxed_box_sizes(records, cfg.img_size)
    new = kmeans_scales(wh, len(cfg.anchors[0]), len(cfg.strides), seed=cfg.seed)
    thres = cfg.match_iou_thres
    lines = [f"anchors for img_size {cfg.img_size} from {len(wh)} training boxes (letterboxed)",
             f"{'':<10}{'mean best IoU':>15}{f'BPR@{thres:g}':>12}{f'anchors >= {thres:g} per box':>28}"]
    for name, anchors in (("current", cfg.anchors), ("k-means", new)):
        fit = anchor_fit(wh, anchors, thres)
        lines.append(f"{name:<10}{fit['mean_best_iou']:>15.3f}{fit['bpr']:>12.3f}{fit['above_per_box']:>28.2f}")
    lines += ["paste into your config (or pass --anchors on the command line):", format_anchors(new, cfg.strides)]
    logger.info("\n".join(lines))
    return new
