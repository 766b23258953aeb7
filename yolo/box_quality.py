"""Where box precision is lost: AP at a few IoU thresholds per object size, and how tightly found boxes sit.

mAP@[.5:.95] mixes two failures: objects not found at all, and objects found but with loosely placed boxes. AP50
counts only the first; the gap between AP50, AP75 and AP90 measures the second. Both are read per COCO size range
(small, medium, large), since small boxes are the ones a few pixels of error push below an IoU threshold.

    rows = ap_by_iou_and_size(result.precision, result.iou_thresholds)   # AP at 0.5 / 0.75 / 0.9 per size
    ious, areas = matched_ious(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, conf)
    size_names(areas)                                                    # "small" / "medium" / "large" per pair

The pictures: yolo/viz/curves.py (iou_histogram_figure); the files: yolo/engine/artifacts.py.
"""
import math

import numpy as np

from .metrics import iou_index, box_iou_numpy
from .metrics_curves import best_class_per_box, greedy_pairs

# COCOeval's area ranges (Params.areaRng) in the order of the precision array's A axis; closed intervals of w*h.
AREA_RANGES = {"all": (0.0, 1e5 ** 2), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
               "large": (96.0 ** 2, 1e5 ** 2)}
SIZES = ("small", "medium", "large")


def ap_by_iou_and_size(precision, iou_thresholds, ious=(0.5, 0.75, 0.9)):
    """AP at each IoU in `ious` for every COCO area range, from COCOeval's precision array (T, R, K, A, M) as
    EvalResult holds it. Returns one dict per range, in AREA_RANGES order: {"area": name, "ap50": ..., "ap75":
    ...}. Each value is what COCOeval.summarize computes: the mean of precision[t, :, :, a, -1] (100 detections)
    over its entries > -1 (-1 marks a class without GT in that range); nan where there is none (summarize: -1)."""
    precision = np.asarray(precision)
    columns = {f"ap{round(iou * 100)}": iou_index(np.asarray(iou_thresholds), iou) for iou in ious}  # ValueError
    rows = []
    for a, name in enumerate(AREA_RANGES):
        row = {"area": name}
        for column, t in columns.items():
            p = precision[t, :, :, a, -1]  # (R, K)
            counted = p[p > -1]
            row[column] = float(counted.mean()) if counted.size else math.nan
        rows.append(row)
    return rows


def matched_ious(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, conf, iou_thres=0.5):
    """The IoU of every true positive at confidence `conf` and the area of its GT. Per image: the detections with
    score >= conf, each box once with its best class (best_class_per_box, as predict draws it), are paired with the
    counted (not ignored) GTs of the same class greedily, highest IoU first, while IoU >= iou_thres (greedy_pairs);
    each GT and detection is used once. Inputs are per-image lists as for class_curves (xyxy pixels). Returns (ious,
    areas), both (P,) float64, P = the pairs of all images; areas = GT w * h in the boxes' units."""
    ious, areas = [], []
    for gb, gl, gi, db, ds, dl in zip(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels):
        db, ds, dl = best_class_per_box(np.asarray(db, np.float64).reshape(-1, 4), np.asarray(ds, np.float64),
                                        np.asarray(dl))
        keep = ds >= conf
        db, ds, dl = db[keep], ds[keep], dl[keep]
        counted = ~np.asarray(gi, bool)
        gb, gl = np.asarray(gb, np.float64).reshape(-1, 4)[counted], np.asarray(gl)[counted]
        for k in np.intersect1d(gl, dl).tolist():  # a class needs both a GT and a detection to pair
            g_boxes, d_boxes = gb[gl == k], db[dl == k]
            pairs = greedy_pairs(g_boxes, d_boxes, ds[dl == k], iou_thres)
            if not pairs:
                continue
            g, d = np.array(pairs).T  # (P,), (P,)
            ious.append(box_iou_numpy(g_boxes, d_boxes)[g, d])
            areas.append(np.prod(g_boxes[g, 2:] - g_boxes[g, :2], axis=1))
    if not ious:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ious), np.concatenate(areas)


def size_names(areas):
    """"small" / "medium" / "large" for each area (w * h), by COCOeval's ranges. Those are closed intervals, so a
    box of exactly 32^2 (or 96^2) counts in both neighbouring ranges there; here it gets the smaller one, whose
    range it closes: small <= 32^2 < medium <= 96^2 < large. (COCOeval also drops areas above 1e5^2 from 'large';
    no image is that big.)"""
    areas = np.asarray(areas, np.float64).reshape(-1)
    bounds = [AREA_RANGES["small"][1], AREA_RANGES["medium"][1]]
    return np.array(SIZES)[np.searchsorted(bounds, areas, side="left")]  # side="left": a bound stays below it


def size_rows(ious, areas):
    """Per area range (all, small, medium, large): the number of matched pairs and their median IoU (nan when
    none), for box_quality.csv."""
    names = size_names(areas)
    rows = []
    for name in AREA_RANGES:
        picked = ious if name == "all" else ious[names == name]
        rows.append({"area": name, "matched": len(picked),
                     "median_iou": float(np.median(picked)) if len(picked) else math.nan})
    return rows
