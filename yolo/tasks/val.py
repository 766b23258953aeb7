"""`python main.py --task val`: COCO metrics of a checkpoint on every task's val split, and the evaluation artifacts
(curves, confusion matrix, per_class.csv) in the checkpoint's run folder."""
from loguru import logger

from ..config import task_configs
from ..data.dataset import build_loader, read_records
from ..engine.artifacts import write_tasks_artifacts
from ..engine.checkpoint import load_model, output_folder
from ..engine.evaluator import evaluate_tasks
from ..engine.folders import next_free_dir
from ..engine.logs import setup_logging


def run(cfg):
    """COCO metrics of every task on its val split. Returns the list of EvalResults, one per task. The artifacts go
    to <run folder>/val/ for a checkpoint inside runs_dir, else runs_dir/val/<checkpoint name>/ (one subfolder per
    task with several tasks); when that exists, to val2/, val3/ ... (next_free_dir)."""
    setup_logging()
    model, device, ckpt_path = load_model(cfg)
    tasks = task_configs(cfg)
    loaders = [build_loader(task, read_records(task, "val", generate=False), train=False) for task in tasks]
    results, detections, _, table = evaluate_tasks(model, loaders, tasks, device)
    for task, loader, result in zip(tasks, loaders, results):
        logger.info(f"validation of {task.task_name} on {len(loader.dataset)} images\n{result.table}")
    if len(tasks) > 1:
        logger.info(f"mAP per task\n{table}")
    if cfg.eval_artifacts:  # a new folder each time: another evaluation (other data, thresholds) replaces nothing
        out_dir = next_free_dir(output_folder(ckpt_path, cfg.runs_dir, "val"))
        write_tasks_artifacts(out_dir, results, detections, loaders, tasks)
    return results
