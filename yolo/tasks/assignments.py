"""`python main.py --task debug`: look at what the label assignment makes of real, augmented training batches.

For each of `num_debug_batch` training batches: run `assign` with the config's strategy and thresholds, log its
statistics, and save one PNG per image in a new folder <runs_dir>/debug/ (debug2/ ... when it exists) showing the
three scales side by side (grid, GT boxes, every positive anchor box at its cell). With `debug_demos=True` it also
redraws the documentation figures imgs/<strategy>_demo.png: one fixed validation image (no augmentation) assigned with each strategy.
"""
from itertools import islice
from pathlib import Path

import torch
from loguru import logger

from ..assign import assign
from ..config_checks import STRATEGIES
from ..data.dataset import DetectionDataset, build_loader, read_records
from ..data.transforms import build_transform
from ..engine.folders import next_free_dir
from ..engine.logs import setup_logging
from ..engine.setup import seed_everything
from ..viz.assignment import assignment_figure
from ..viz.figures import save_figure as save_png
from . import for_each_task

DEMO_DPI = 90  # 2 x 2 panels of 5.2 inches -> about 940 x 980 px, readable at the README's width


def run(cfg):
    """Every task's assignment drawings (see draw_assignments). Returns their folders, one per task."""
    setup_logging()
    return for_each_task(cfg, draw_assignments, "debug")


def draw_assignments(cfg, out_dir=None, demo_dir="imgs"):
    """Draw the assignment of cfg.num_debug_batch augmented training batches; returns the output folder."""
    seed_everything(cfg.seed)
    out_dir = Path(out_dir) if out_dir else next_free_dir(Path(cfg.runs_dir) / "debug")
    out_dir.mkdir(parents=True, exist_ok=True)
    records = read_records(cfg, "train")
    loader = build_loader(cfg, records, train=True)
    anchors = torch.tensor(cfg.anchors, dtype=torch.float32)  # (3, A, 2) pixels
    generator = torch.Generator().manual_seed(cfg.seed)  # for filter_by_max_iou=False
    logger.info(f"label assignment {cfg.label_assignment}, match_iou_thres {cfg.match_iou_thres}, "
                f"filter_by_max_iou {cfg.filter_by_max_iou}, assign_unmatched_to_best {cfg.assign_unmatched_to_best}")
    for batch_index, (images, targets, indices, _) in enumerate(islice(loader, cfg.num_debug_batch)):
        assignments, stats = assign_batch(cfg, targets, anchors, generator)
        logger.info(f"batch {batch_index}: {format_stats(stats)}")
        for i, record_index in enumerate(indices):
            name = Path(records[record_index].image_path).stem
            title = f"{name} (augmented), {cfg.label_assignment} @ IoU {cfg.match_iou_thres}"
            save_assignment_png(images[i], targets, assignments, i, anchors, cfg, title,
                        out_dir / f"batch{batch_index}_{i:02d}_{name}.png")
    logger.info(f"assignment drawings written to {out_dir}")
    if cfg.debug_demos:
        write_demos(cfg, Path(demo_dir), anchors)
    return out_dir


def assign_batch(cfg, targets, anchors, generator=None, strategy=None):
    grid_sizes = [(cfg.img_size // s, cfg.img_size // s) for s in cfg.strides]
    return assign(targets, anchors, grid_sizes, cfg.strides, strategy or cfg.label_assignment, cfg.match_iou_thres,
                  cfg.filter_by_max_iou, cfg.assign_unmatched_to_best, generator)


def format_stats(stats):
    return (f"{int(stats['num_gt'])} GTs, positives per GT mean {stats['pos_per_gt']:.2f} min "
            f"{stats['pos_per_gt_min']:.0f}, unmatched {stats['unmatched_pct']:.1f} %, positives per scale "
            f"{int(stats['pos_s0'])} / {int(stats['pos_s1'])} / {int(stats['pos_s2'])} (strides 8 / 16 / 32)")


def save_assignment_png(image, targets, assignments, image_index, anchors, cfg, title, path, dpi=100, palette=False,
                strategy=None):
    """image: (3, S, S) uint8 tensor as the loader yields it; strategy: the one to explain in the key panel."""
    fig = assignment_figure(image.permute(1, 2, 0).numpy(), targets, assignments, image_index, anchors.numpy(),
                            cfg.strides, cfg.class_names, title, strategy=strategy or cfg.label_assignment)
    save_png(fig, path, dpi, palette)


def demo_sample(cfg, max_candidates=20):
    """The fixed documentation image: among the first val images, the one with the most objects (no augmentation)."""
    records = read_records(cfg, "val")
    if not records:
        raise FileNotFoundError(f"the val split of {cfg.data_root} is empty; debug_demos needs one val image")
    index = max(range(min(len(records), max_candidates)), key=lambda k: (len(records[k].boxes), -k))
    image, targets, *_ = DetectionDataset(records, build_transform(cfg, train=False))[index]
    batch_targets = torch.cat((torch.zeros(len(targets), 1), targets), 1)  # (n, 6) with batch index 0
    return Path(records[index].image_path).stem, image, batch_targets


def write_demos(cfg, demo_dir, anchors):
    demo_dir.mkdir(parents=True, exist_ok=True)
    name, image, targets = demo_sample(cfg)
    for strategy in STRATEGIES:
        assignments, stats = assign_batch(cfg, targets, anchors, torch.Generator().manual_seed(cfg.seed), strategy)
        title = (f"{strategy}, match_iou_thres {cfg.match_iou_thres}: {stats['pos_per_gt']:.1f} positive anchors "
                 f"per GT over the 3 scales\n(val image {name} letterboxed to {cfg.img_size} px, no augmentation)")
        path = demo_dir / f"{strategy}_demo.png"
        save_assignment_png(image, targets, assignments, 0, anchors, cfg, title, path, dpi=DEMO_DPI, palette=True,
                    strategy=strategy)
        logger.info(f"{path} ({path.stat().st_size / 1024:.0f} KB): {format_stats(stats)}")
