"""`python main.py --task predict`: detections drawn on images, and predictions.json in the COCO results format."""
import json
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from ..config import task_configs
from ..data.checks import DataError, Problems
from ..data.dataset import build_loader, read_records
from ..data.records import IMAGE_EXTENSIONS, Record, checked_image_size, load_image_rgb
from ..engine.checkpoint import load_model, output_folder
from ..engine.evaluator import predict_loader
from ..engine.folders import next_free_dir
from ..engine.logs import setup_logging
from ..metrics import coco_results_json
from ..models.fuse import fuse_batchnorm
from ..viz.figures import save_figure
from ..viz.detections import draw_detections, prediction_figure


def source_records(cfg, tasks):
    """Images to predict on: cfg.predict_source (file or folder), else the first val images of every task.
    Returns (records, skipped paths). A file that cannot be read (not an image, truncated, over PIL's pixel limit)
    is skipped with a warning naming it, as the dataset readers skip it; none readable at all is a DataError."""
    if cfg.predict_source is None:
        per_task = max(1, -(-cfg.predict_max_images // len(tasks)))
        return [rec for task in tasks for rec in read_records(task, "val", generate=False)[:per_task]], []
    source = Path(cfg.predict_source)
    files = [source] if source.is_file() else sorted(p for p in source.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"predict_source {source} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    problems = Problems(f"predict_source {source}", show_per_kind=len(files))  # every skipped file named
    empty = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    records = []
    for f in files:
        size = checked_image_size(str(f), problems)  # header and end checked; a suspect file decoded
        if size is not None:
            records.append(Record(str(f), *size, *empty))
    if not records:
        reasons = "\n  ".join(f"{p.file}: {p.detail}" for p in problems.items[:10])
        tried = f"{len(files)} file{'s' if len(files) > 1 else ''} tried"
        raise DataError(f"predict_source {source}: no image can be read ({tried})\n  {reasons}")
    return records, [p.file for p in problems.items]


def draw_predictions(records, detections, class_names, out_dir):
    """Each image with its detections as out_dir/<stem>.jpg. An image without detections (it failed to decode in
    the loader, which warned) or that fails to decode now is skipped. Returns the indices of the images drawn."""
    drawn, names = [], set()
    for index, rec in enumerate(records):
        if index not in detections:
            continue
        try:
            image = load_image_rgb(rec.image_path)
        except DataError as e:
            logger.warning(f"{e}; skipped")
            continue
        boxes, scores, labels = detections[index]
        name = Path(rec.image_path).stem
        name = f"{name}_{index}" if name in names else name  # two tasks' datasets may share file names
        names.add(name)
        draw_detections(image, boxes, labels, class_names, scores).save(out_dir / f"{name}.jpg", quality=90)
        drawn.append(index)
    return drawn


def run(cfg):
    """Run every task's head on each image; draw all detections (labelled task/class with several tasks) and an
    overview predictions.png of the first four images (ground truth dashed), and write predictions.json (COCO results
    format plus file_name and category_name) into the checkpoint's run folder (predictions/), or
    runs_dir/predictions/<checkpoint name>/ for a checkpoint outside runs_dir; an .onnx model writes to
    predictions_onnx/ instead; when the folder exists, to predictions2/, 3 ... A PyTorch model has its BatchNorms
    folded first (config predict_fuse)."""
    setup_logging()
    model, device, ckpt_path = load_model(cfg)
    if cfg.predict_fuse and cfg.backend == "torch":
        example = torch.zeros(1, 3, cfg.img_size, cfg.img_size, dtype=torch.uint8, device=device)
        model = fuse_batchnorm(model, example, task=None)
    cfg.conf_thres = cfg.predict_conf
    tasks = task_configs(cfg)
    records, skipped = source_records(cfg, tasks)
    loader = build_loader(tasks[0], records, train=False)
    per_task = [predict_loader(model, loader, cfg, device, task=k) for k in range(len(tasks))]
    detections, class_names = merge_task_detections(per_task, tasks)
    # an exported model's pictures go beside, not over, those of the checkpoint it came from; a new folder each
    # time, so pictures of other images or thresholds never mix with or replace earlier ones
    out_dir = next_free_dir(output_folder(ckpt_path, cfg.runs_dir,
                                          "predictions_onnx" if cfg.backend == "onnxruntime" else "predictions"))
    drawn = draw_predictions(records, detections, class_names, out_dir)
    drawn_set = set(drawn)
    skipped += [rec.image_path for i, rec in enumerate(records) if i not in drawn_set]
    if not drawn:
        raise DataError(f"no image could be decoded: {', '.join(skipped[:10])}")
    # one overview of the first images: detections with a caption each, the ground truth dashed (val images)
    save_figure(prediction_figure([records[i] for i in drawn], [detections[i] for i in drawn], class_names,
                                  cfg.predict_conf), out_dir / "predictions.png", dpi=80, palette=True)
    results = coco_results_json(drawn, *([detections[i][k] for i in drawn] for k in range(3)))
    for entry in results:
        entry.update(file_name=Path(records[entry["image_id"]].image_path).name,
                     category_name=class_names[entry["category_id"] - 1])
    (out_dir / "predictions.json").write_text(json.dumps(results))
    if skipped:
        logger.warning(f"{len(skipped)} of {len(skipped) + len(drawn)} images skipped as unreadable (each named "
                       f"above): {', '.join(Path(p).name for p in skipped[:10])}{', ...' if len(skipped) > 10 else ''}")
    logger.info(f"{len(drawn)} annotated images and predictions.json written to {out_dir}")
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
