"""The commands of main.py (`--task NAME`): one module per command in this folder, each with a `run(cfg)`.

TASKS is the one list of commands: main.py dispatches through it, `--help` prints it, and an unknown --task is
checked against it. A command's module is yolo/tasks/<name>.py (MODULE_OF names the exceptions). Modules are
imported only when their command runs, so `--help` and config errors stay fast.
"""
import difflib
import importlib
from pathlib import Path

from loguru import logger

from ..config import task_configs
from ..engine.folders import next_free_dir

TASKS = {
    "train": "train a detector on the configured data (continue a run with --resume true)",
    "val": "COCO mAP of a checkpoint on the val split (--ckpt_path, else best.pt of the newest run of run_name)",
    "predict": "draw detections on images (--predict_source) and write predictions.json",
    "info": "the model's parts, params, GFLOPs, numbered neck blocks and anchors",
    "check": "scan the dataset: what is in it and every problem, with its file",
    "show_batch": "draw augmented training batches with their labels",
    "debug": "draw the label assignment of augmented training batches",
    "anchors": "k-means anchors for the training boxes, and how well anchors fit them",
    "schedule": "plot the learning-rate schedule of the config",
    "export": "write the checkpoint as ONNX (<run>/best.onnx), checked against PyTorch with ONNX Runtime",
    "search_head": "search the head's cells (mixed ops, RepShare); writes a genotype for --head searched",
    "evolve": "search training hyperparameters by evolution (or Ray Tune); best config in runs/<run_name>_evolve/",
    "rsa": "which layers tasks should share: similarity of single-task models (--rsa_ckpts), ranked branchings",
    "merge": "one multi-task checkpoint from single-task ones (--merge_ckpts) for the config's branching",
    "peel": "one task's single-task checkpoint out of a multi-task one (--peel_task NAME)",
}
MODULE_OF = {"debug": "assignments"}  # commands whose module is named for what it draws


def check_task_name(name):
    """Raise ValueError with the list of commands (and the closest one) when `name` is not a command."""
    if name not in TASKS:
        close = difflib.get_close_matches(str(name), TASKS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"config field 'task' = {name!r} is not a command{hint}; choose one of {', '.join(TASKS)}")


def run_task(cfg):
    check_task_name(cfg.task)
    module = importlib.import_module(f"{__name__}.{MODULE_OF.get(cfg.task, cfg.task)}")
    return module.run(cfg)


def for_each_task(cfg, job, folder):
    """Run job(task_cfg, out_dir) on every task's dataset: out_dir is a new folder <runs_dir>/<folder> (<folder>2,
    3 ... when it exists, so an earlier result is neither replaced nor mixed with this one), or
    <that folder>/<task name> with several tasks. Returns the job's results, one per task."""
    tasks = task_configs(cfg)
    out_dir = next_free_dir(Path(cfg.runs_dir) / folder)
    if len(tasks) == 1:
        return [job(cfg, out_dir)]
    results = []
    for task in tasks:
        logger.info(f"--task {cfg.task} on task {task.task_name}")
        results.append(job(task, out_dir / task.task_name))
    return results
