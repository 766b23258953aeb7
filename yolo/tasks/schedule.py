"""`python main.py --task schedule`: the learning-rate curve of the config as a PNG (yolo/engine/schedules.py)."""
import os
from pathlib import Path

from ..data.dataset import read_records
from ..engine.logs import setup_logging
from ..engine.schedules import iterations_per_epoch, lr_curve
from ..viz.plots import plot_lr_schedule


def run(cfg):
    """Save runs_dir/<run_name>_lr_schedule.png for the current config. Returns its path."""
    logger = setup_logging()
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    iters = iterations_per_epoch(len(read_records(cfg, "train")), cfg.batch_size, world_size)
    path = Path(cfg.runs_dir) / f"{cfg.run_name}_lr_schedule.png"
    title = f"{cfg.lr_schedule}, warmup {cfg.warmup_epochs} epochs, {iters} iterations per epoch"
    plot_lr_schedule(lr_curve(cfg, iters), iters, path, title)
    logger.info(f"learning-rate schedule ({cfg.epochs} epochs x {iters} iterations) saved to {path}")
    return path
