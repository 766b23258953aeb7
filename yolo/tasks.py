"""The tasks main.py dispatches to: train, val, predict. Each is a few lines on top of the engine."""
import json
from pathlib import Path

import numpy as np
from loguru import logger

from .config import config_from_dict, task_configs
from .data.dataset import build_loader, read_records
from .data.formats import IMAGE_EXTENSIONS, load_image_rgb, read_image_size, Record
from .engine.checkpoint import load_checkpoint, newest_checkpoint
from .engine.evaluator import evaluate_tasks, predict_loader
from .engine.logs import setup_logging
from .engine.trainer import select_device, train
from .metrics import coco_results_json
from .models.detector import build_model
from .viz import draw_detections

# what a checkpoint decides about its model; everything else (thresholds, data paths, ...) comes from the config
MODEL_FIELDS = ("backbone", "width", "class_names", "anchors", "label_assignment", "img_size", "tasks", "branching")


def run_task(cfg):
    if cfg.task == "train":
        return train(cfg)
    if cfg.task == "val":
        return validate(cfg)
    if cfg.task == "predict":
        return predict(cfg)
    if cfg.task == "info": from .engine.info import run_info; return run_info(cfg)  # noqa: E701, E702
    if cfg.task == "schedule": from .engine.schedules import run_schedule_plot; return run_schedule_plot(cfg)  # noqa: E701, E702, E501
    if cfg.task == "anchors": from .anchors import run_anchors; setup_logging(); return run_anchors(cfg)  # noqa: E701, E702
    if cfg.task in ("debug", "check", "show_batch"):
        return per_task_data_job(cfg)
    raise ValueError(f"task {cfg.task!r} is not implemented yet")


def per_task_data_job(cfg):
    """--task debug / check / show_batch look at one dataset: run them on every task's, each into its own folder
    (<runs_dir>/<job folder>/<task name> with several tasks). Returns their results as a list, one per task."""
    from .data.report import run_check, run_show_batch
    from .engine.debug import run_debug
    setup_logging()
    job, folder = {"debug": (run_debug, "debug"), "check": (run_check, "check"),
                   "show_batch": (run_show_batch, "batches")}[cfg.task]
    tasks = task_configs(cfg)
    if len(tasks) == 1:
        return [job(cfg)]
    results = []
    for task in tasks:
        logger.info(f"--task {cfg.task} on task {task.task_name}")
        results.append(job(task, out_dir=Path(cfg.runs_dir) / folder / task.task_name))
    return results


def load_model_for_eval(cfg):
    """Load the checkpoint (cfg.ckpt_path, else best.pt of the newest run); its model fields override cfg's."""
    path = Path(cfg.ckpt_path) if cfg.ckpt_path else newest_checkpoint(cfg.runs_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint given (ckpt_path) and no {cfg.runs_dir}/*/best.pt found; "
                                f"train first: python main.py --task train")
    ckpt = load_checkpoint(path)
    saved = config_from_dict(ckpt["config"])
    for field in MODEL_FIELDS:
        setattr(cfg, field, getattr(saved, field))
    cfg.finalize()
    device = select_device(cfg.device)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # shapes that do not fit: a checkpoint of an older version of the model code
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"checkpoint {path} does not fit the model its config describes ({first}); "
                                f"it was probably saved by another version of this code: retrain it") from None
    logger.info(f"loaded {path} (epoch {ckpt.get('epoch')}, saved mAP@0.5 {ckpt.get('map50', float('nan')):.4f})")
    return model.to(device).eval(), device, Path(path)


def validate(cfg):
    """COCO metrics of every task on its val split. Returns the list of EvalResults, one per task."""
    setup_logging()
    model, device, _ = load_model_for_eval(cfg)
    tasks = task_configs(cfg)
    loaders = [build_loader(task, read_records(task, "val"), train=False) for task in tasks]
    results, _, _, table = evaluate_tasks(model, loaders, tasks, device)
    for task, loader, result in zip(tasks, loaders, results):
        logger.info(f"validation of {task.task_name} on {len(loader.dataset)} images\n{result.table}")
    if len(tasks) > 1:
        logger.info(f"mAP per task\n{table}")
    return results


def source_records(cfg, tasks):
    """Images to predict on: cfg.predict_source (file or folder), else the first val images of every task."""
    if cfg.predict_source is None:
        per_task = max(1, -(-cfg.predict_max_images // len(tasks)))
        return [rec for task in tasks for rec in read_records(task, "val")[:per_task]]
    source = Path(cfg.predict_source)
    files = [source] if source.is_file() else sorted(p for p in source.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"predict_source {source} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    empty = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    return [Record(str(f), *read_image_size(str(f)), *empty) for f in files]


def predict(cfg):
    """Run every task's head on each image; draw all detections (labelled task/class with several tasks) and write
    predictions.json (COCO results format plus file_name and category_name) next to the checkpoint."""
    setup_logging()
    model, device, ckpt_path = load_model_for_eval(cfg)
    cfg.conf_thres = cfg.predict_conf
    tasks = task_configs(cfg)
    records = source_records(cfg, tasks)
    loader = build_loader(tasks[0], records, train=False)
    per_task = [predict_loader(model, loader, cfg, device, task=k) for k in range(len(tasks))]
    detections, class_names = merge_task_detections(per_task, tasks)
    out_dir = ckpt_path.parent / "predictions"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = set()
    for index, rec in enumerate(records):
        boxes, scores, labels = detections[index]
        image = draw_detections(load_image_rgb(rec.image_path), boxes, labels, class_names, scores)
        name = Path(rec.image_path).stem
        name = f"{name}_{index}" if name in names else name  # two tasks' datasets may share file names
        names.add(name)
        image.save(out_dir / f"{name}.jpg", quality=90)
    results = coco_results_json(range(len(records)), *([detections[i][k] for i in range(len(records))]
                                                         for k in range(3)))
    for entry in results:
        entry.update(file_name=Path(records[entry["image_id"]].image_path).name,
                     category_name=class_names[entry["category_id"] - 1])
    (out_dir / "predictions.json").write_text(json.dumps(results))
    logger.info(f"{len(records)} annotated images and predictions.json written to {out_dir}")
    return out_dir


def merge_task_detections(per_task, tasks):
    """One detection set per image from every task's: labels are shifted into one list of class names, each
    name prefixed by its task when there are several ("symbols/star"). Returns (detections, class names)."""
    if len(tasks) == 1:
        return per_task[0], list(tasks[0].class_names)
    class_names = [f"{task.task_name}/{name}" for task in tasks for name in task.class_names]
    offsets = np.cumsum([0] + [len(task.class_names) for task in tasks])
    merged = {}
    for index in per_task[0]:
        parts = [dets[index] for dets in per_task]
        merged[index] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                         np.concatenate([p[2] + offset for p, offset in zip(parts, offsets)]))
    return merged, class_names
