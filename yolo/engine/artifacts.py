"""The files an evaluation leaves in a run folder: pr_curve.png, f1_curve.png, p_curve.png, r_curve.png,
confusion_matrix.png, iou_histogram.png, per_class.csv and box_quality.csv, the same figures in TensorBoard, and the
per-class table and a line of AP50 / AP75 / AP90 per object size on the console.

They are made from what the evaluation already holds (every image's detections in original pixels, the records'
GT boxes with their ignore flags, COCOeval's precision array), so nothing is predicted twice. Numbers:
yolo/metrics_curves.py and yolo/box_quality.py; pictures: yolo/viz/curves.py.
"""
import csv
import math
from pathlib import Path

import numpy as np
from loguru import logger
from PIL import Image

from ..box_quality import ap_by_iou_and_size, matched_ious, size_rows
from ..metrics_curves import class_curves, confusion_matrix, per_class_rows
from ..viz.curves import confidence_figure, confusion_figure, iou_histogram_figure, pr_figure
from ..viz.figures import save_figure

CSV_FIELDS = ("class", "images", "instances", "precision", "recall", "ap50", "ap50_95", "conf")
BOX_QUALITY_FIELDS = ("area", "ap50", "ap75", "ap90", "matched", "median_iou")
FILES = ("pr_curve.png", "f1_curve.png", "p_curve.png", "r_curve.png", "confusion_matrix.png", "iou_histogram.png",
         "per_class.csv", "box_quality.csv")


def write_tasks_artifacts(out_dir, results, detections, loaders, task_cfgs, tb=None, step=0):
    """write_eval_artifacts for every task: into out_dir itself for one task, else into out_dir/<task name>/."""
    several = len(task_cfgs) > 1
    for result, dets, loader, task_cfg in zip(results, detections, loaders, task_cfgs):
        folder = Path(out_dir) / task_cfg.task_name if several else Path(out_dir)
        write_eval_artifacts(folder, result, loader.dataset.records, dets, task_cfg, tb, step,
                             tag=f"eval_{task_cfg.task_name}/" if several else "eval/")


def write_eval_artifacts(out_dir, result, records, detections, cfg, tb=None, step=0, tag="eval/"):
    """Curves, confusion matrix, IoU histogram, per_class.csv and box_quality.csv of one task's evaluation into
    out_dir (created); the figures also to TensorBoard (`tb`, yolo.engine.logs.TensorBoard) under `tag`. detections:
    record index -> (boxes, scores, labels) as yolo.engine.evaluator.evaluate returns them. Returns the per-class
    rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(cfg.class_names)
    gt = ([r.boxes for r in records], [r.labels for r in records], [r.difficult for r in records])
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    dets = [detections.get(i, empty) for i in range(len(records))]
    dets = ([d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets])

    curves = class_curves(*gt, *dets, len(names))
    matrix = confusion_matrix(*gt, *dets, len(names), cfg.confusion_conf, cfg.confusion_iou)
    rows = per_class_rows(curves, names, result.precision)
    ious, areas = matched_ious(*gt, *dets, curves.best_conf)  # the true positives at the best-F1 confidence
    quality = [{**ap, **counts} for ap, counts in zip(ap_by_iou_and_size(result.precision, result.iou_thresholds),
                                                     size_rows(ious, areas))]
    figures = {
        "pr_curve.png": pr_figure(curves, names),
        "f1_curve.png": confidence_figure(curves, names, "f1"),
        "p_curve.png": confidence_figure(curves, names, "precision"),
        "r_curve.png": confidence_figure(curves, names, "recall"),
        "confusion_matrix.png": confusion_figure(matrix, names, cfg.confusion_conf, cfg.confusion_iou),
        "iou_histogram.png": iou_histogram_figure(ious, areas, curves.best_conf),
    }
    for file_name, fig in figures.items():
        save_figure(fig, out_dir / file_name)
        if tb is not None and tb.writer is not None:
            # the saved picture itself: add_figure would draw the figure a second time (about as slow as saving)
            tb.image(tag + file_name.removesuffix(".png"), np.asarray(Image.open(out_dir / file_name).convert("RGB")),
                     step)
    write_per_class_csv(rows, out_dir / "per_class.csv")
    write_per_class_csv(quality, out_dir / "box_quality.csv", BOX_QUALITY_FIELDS)
    logger.info(f"per-class results ({len(records)} images; P and R at confidence {curves.best_conf:.3f}, the best "
                f"mean F1) -> {out_dir}\n{format_per_class(rows, len(records), result.map)}")
    logger.info(format_box_quality(quality))
    return rows


def format_box_quality(quality):
    """One line: AP50/AP75/AP90 of every area range (n/a: no GT of that size)."""
    def ap(value):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    parts = [f"{r['area']} {ap(r['ap50'])}/{ap(r['ap75'])}/{ap(r['ap90'])}" for r in quality]
    return "box quality AP50/AP75/AP90: " + ", ".join(parts)


def write_per_class_csv(rows, path, fields=CSV_FIELDS):
    """rows (dicts) as csv, floats with 6 decimals (nan as 'nan')."""
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})


def format_per_class(rows, num_images, map50_95):
    """The console table: an 'all' row (P, R, AP50: means over the classes with GT; AP50:95: COCO's mAP), then one
    row per class."""
    counted = [r for r in rows if r["instances"] > 0]

    def mean(key):
        values = [r[key] for r in counted if not math.isnan(r[key])]  # P is undefined for a class without detections
        return float(np.mean(values)) if values else math.nan

    total = {"class": "all", "images": num_images, "instances": sum(r["instances"] for r in rows),
             "precision": mean("precision"), "recall": mean("recall"), "ap50": mean("ap50"), "ap50_95": map50_95}
    width = max(len(str(r["class"])) for r in [total, *rows])
    lines = [f"{'class':<{width}}  {'images':>7}  {'instances':>9}  {'P':>6}  {'R':>6}  {'AP50':>6}  {'AP50:95':>7}"]
    for r in [total, *rows]:
        numbers = "  ".join("   n/a" if math.isnan(r[k]) else f"{r[k]:6.3f}" for k in ("precision", "recall", "ap50"))
        ap = "    n/a" if math.isnan(r["ap50_95"]) else f"{r['ap50_95']:7.3f}"
        lines.append(f"{r['class']:<{width}}  {r['images']:>7d}  {r['instances']:>9d}  {numbers}  {ap}")
    return "\n".join(lines)
