"""`python main.py --task val`: COCO metrics of a checkpoint on every task's val split."""
from loguru import logger

from ..config import task_configs
from ..data.dataset import build_loader, read_records
from ..engine.checkpoint import load_model
from ..engine.evaluator import evaluate_tasks
from ..engine.logs import setup_logging


def run(cfg):
    """COCO metrics of every task on its val split. Returns the list of EvalResults, one per task."""
    setup_logging()
    model, device, _ = load_model(cfg)
    tasks = task_configs(cfg)
    loaders = [build_loader(task, read_records(task, "val"), train=False) for task in tasks]
    results, _, _, table = evaluate_tasks(model, loaders, tasks, device)
    for task, loader, result in zip(tasks, loaders, results):
        logger.info(f"validation of {task.task_name} on {len(loader.dataset)} images\n{result.table}")
    if len(tasks) > 1:
        logger.info(f"mAP per task\n{table}")
    return results
