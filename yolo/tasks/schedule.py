"""`python main.py --task schedule`: the learning-rate curve of the config as a PNG (yolo/engine/schedules.py)."""
import os
from pathlib import Path

from ..config import task_configs
from ..data.dataset import read_records
from ..engine.logs import setup_logging
from ..engine.multitask import steps_per_epoch
from ..engine.schedules import iterations_per_epoch, lr_curve
from ..viz.plots import plot_lr_schedule


def run(cfg):
    """Save runs_dir/<run_name>_lr_schedule.png for the current config. Returns its path."""
    logger = setup_logging()
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    # as the trainer counts them: each task's batches per pass (its images, its batch size), then the epoch's steps
    passes = [iterations_per_epoch(len(read_records(task, "train")), task.batch_size, world_size)
              for task in task_configs(cfg)]
    iters = steps_per_epoch(passes, cfg.task_sampling)
    path = Path(cfg.runs_dir) / f"{cfg.run_name}_lr_schedule.png"
    title = f"{cfg.lr_schedule}, warmup {cfg.warmup_epochs} epochs, {iters} iterations per epoch"
    plot_lr_schedule(lr_curve(cfg, iters), iters, path, title)
    logger.info(f"learning-rate schedule ({cfg.epochs} epochs x {iters} iterations) saved to {path}")
    return path
