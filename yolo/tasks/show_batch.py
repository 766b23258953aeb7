"""`python main.py --task show_batch`: augmented training batches (mosaic included) drawn with their boxes and class
names, to see what the network is trained on."""
import copy
from itertools import islice
from pathlib import Path

from loguru import logger

from ..data.dataset import build_loader, read_records
from ..engine.folders import next_free_dir
from ..engine.logs import setup_logging
from ..viz.detections import batch_grid
from . import for_each_task


def run(cfg):
    """Every task's batch pictures (see show_batches). Returns their paths, one list per task."""
    setup_logging()
    return for_each_task(cfg, show_batches, "batches")


def show_batches(cfg, out_dir=None):
    """Save num_debug_batch grids of augmented training images with their boxes and class names to
    <runs_dir>/batches/train_batch<k>.jpg (batches2/ ... when it exists). Returns the paths."""
    out_dir = Path(out_dir) if out_dir else next_free_dir(Path(cfg.runs_dir) / "batches")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = copy.copy(cfg)
    cfg.num_workers = 0  # in-process: one seed gives the same pictures every time
    loader = build_loader(cfg, read_records(cfg, "train"), train=True)
    loader.dataset.transform.set_random_seed(cfg.seed)
    paths = []
    for k, (images, targets, *_) in enumerate(islice(loader, cfg.num_debug_batch)):
        paths.append(out_dir / f"train_batch{k}.jpg")
        batch_grid(images, targets, cfg.class_names).save(paths[-1], quality=90)
        logger.info(f"{paths[-1]}: {len(images)} images, {len(targets)} boxes")
    return paths
