"""Per-class curves and the confusion matrix of an evaluation, in numpy (the pictures: yolo/viz/curves.py).

At IoU 0.5 every detection is matched to the ground truth exactly as COCOeval does it (per image and class, highest
score first, each GT taken once, a detection on an ignored/crowd GT neither TP nor FP, at most 100 detections per
image and class), so the AP50 here is pycocotools' AP50. Keeping the detections with score >= c then gives, for
every confidence c,

    TP(c), FP(c)   counts,   P(c) = TP / (TP + FP),   R(c) = TP / #GT,   F1(c) = 2 P R / (P + R)

(a higher-scored detection's match never depends on a lower-scored one, so thresholding after matching is the same
as matching the thresholded set). AP50 is COCO's 101-point interpolated AP: the precision envelope
max_{r' >= r} P(r'), read at recall 0, 0.01, ..., 1 and averaged.

The confusion matrix (rows: true class, columns: predicted class, last row/column: background) pairs detections
with score >= conf and GTs greedily by IoU, class-agnostic, so a circle detected as a square lands off the diagonal.

    curves = class_curves(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, num_classes)
    matrix = confusion_matrix(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, num_classes)
"""
import math
from dataclasses import dataclass

import numpy as np

from .metrics import RECALL_POINTS, box_iou_numpy, interpolated_precision, intersection_area

MAX_DETS = 100                              # COCOeval's maxDets: detections per image and class that count


@dataclass
class ClassCurves:
    """Per-class detection quality at IoU 0.5 against a confidence grid. K classes, N grid points."""
    confidence: np.ndarray     # (N,) the grid, 0..1
    tp: np.ndarray             # (K, N) true positives among the detections with score >= confidence
    fp: np.ndarray             # (K, N) false positives among them
    num_gt: np.ndarray         # (K,) GT boxes that count (not ignored)
    num_images: np.ndarray     # (K,) images holding at least one of them
    precision: np.ndarray      # (K, N) tp / (tp + fp); nan where no detection is kept (undefined, not drawn)
    recall: np.ndarray         # (K, N) tp / num_gt; nan for a class without GT
    f1: np.ndarray             # (K, N) 2PR / (P + R), 0 where no detection is kept; nan for a class without GT
    pr_precision: np.ndarray   # (K, 101) interpolated precision at RECALL_POINTS; nan for a class without GT
    ap50: np.ndarray           # (K,) mean of pr_precision: COCO AP@0.5; nan for a class without GT
    best_index: int            # grid index of the highest mean F1 over the classes with GT
    best_conf: float           # confidence[best_index]

    @property
    def has_gt(self):
        return self.num_gt > 0


# ------------------------------------------------------------------------------------------------- curves
def class_curves(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, num_classes,
                 grid_points=1000) -> ClassCurves:
    """Precision, recall and F1 against confidence, the PR curve and AP50 of every class. Inputs are per-image
    lists: xyxy boxes (n, 4), labels (n,), ignore flags (n,) of the GT; xyxy boxes, scores, labels of detections."""
    confidence = np.linspace(0.0, 1.0, grid_points)
    tp, fp = np.zeros((2, num_classes, grid_points), np.int64)
    num_gt, num_images = np.zeros((2, num_classes), np.int64)
    pr_precision = np.full((num_classes, len(RECALL_POINTS)), np.nan)
    per_class = split_by_class(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, num_classes)
    for k in range(num_classes):
        scores, is_tp, num_gt[k], num_images[k] = match_class(per_class[k])
        kept = np.searchsorted(-scores, -confidence, side="right")  # (N,) detections with score >= c
        tp_cum = np.concatenate([[0], np.cumsum(is_tp)])
        tp[k] = tp_cum[kept]
        fp[k] = kept - tp[k]
        if num_gt[k]:
            pr_precision[k] = interpolated_precision(tp_cum[1:], np.arange(1, len(scores) + 1), num_gt[k])
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
        recall = tp / num_gt[:, None].astype(float)  # nan for 0 / 0
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + num_gt[:, None] - tp), 0.0)  # = 2PR / (P + R)
    recall[num_gt == 0] = np.nan
    f1[num_gt == 0] = np.nan
    ap50 = pr_precision.mean(axis=1)
    mean_f1 = np.nanmean(f1, axis=0) if (num_gt > 0).any() else np.zeros(grid_points)
    best_index = int(np.argmax(mean_f1))
    return ClassCurves(confidence, tp, fp, num_gt, num_images, precision, recall, f1, pr_precision, ap50,
                       best_index, float(confidence[best_index]))


def split_by_class(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, num_classes):
    """For every class, the images holding a GT or a detection of it, in image order: a list per class of
    (GT boxes, GT ignore flags, detection boxes, scores). One pass over the images, whatever the class count."""
    per_class = [[] for _ in range(num_classes)]
    for gb, gl, gi, db, ds, dl in zip(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels):
        gb, gl, gi = np.asarray(gb, np.float64).reshape(-1, 4), np.asarray(gl), np.asarray(gi, bool)
        db, ds, dl = np.asarray(db, np.float64).reshape(-1, 4), np.asarray(ds, np.float64), np.asarray(dl)
        for k in np.union1d(gl, dl).astype(int).tolist():
            per_class[k].append((gb[gl == k], gi[gl == k], db[dl == k], ds[dl == k]))
    return per_class


def match_class(images, iou_thres=0.5):
    """COCOeval's matching of one class at one IoU; images: its split_by_class list. Returns (scores, is_tp) of the
    detections that count (those on an ignored GT are dropped), sorted by score high to low, and the class's GT and
    image counts."""
    scores, is_tp = [], []
    num_gt = num_images = 0
    for g_boxes, g_ignore, d_boxes, d_scores in images:
        counted = int((~g_ignore).sum())
        num_gt += counted
        num_images += counted > 0
        order = np.argsort(-d_scores, kind="mergesort")[:MAX_DETS]  # stable, as COCOeval: ties keep input order
        matched, ignored = match_image(g_boxes, g_ignore, d_boxes[order], iou_thres)
        scores.append(d_scores[order][~ignored])
        is_tp.append(matched[~ignored])
    scores = np.concatenate(scores) if scores else np.zeros(0)
    is_tp = np.concatenate(is_tp) if is_tp else np.zeros(0, bool)
    order = np.argsort(-scores, kind="mergesort")  # over all images: image order breaks ties, as COCOeval
    return scores[order], is_tp[order], num_gt, num_images


def match_image(g_boxes, g_ignore, d_boxes, iou_thres):
    """One image, one class; detections sorted by score. Each detection takes the free GT of highest IoU >= iou_thres,
    preferring counted GTs to ignored ones; an ignored (crowd) GT may take any number of detections, and overlap
    with it is intersection / detection area (a detection inside a crowd region is forgiven). Returns (matched,
    on_ignored), both (D,) bool."""
    matched, on_ignored = np.zeros((2, len(d_boxes)), bool)
    if len(g_boxes) == 0 or len(d_boxes) == 0:
        return matched, on_ignored
    order = np.argsort(g_ignore, kind="mergesort")  # counted GTs first, as COCOeval sorts them
    g_boxes, g_ignore = g_boxes[order], g_ignore[order]
    overlap = box_iou_numpy(d_boxes, g_boxes)  # (D, G)
    if g_ignore.any():
        overlap[:, g_ignore] = intersection_over_first(d_boxes, g_boxes[g_ignore])
    taken = np.zeros(len(g_boxes), bool)
    for d in range(len(d_boxes)):
        best, best_iou = -1, min(iou_thres, 1 - 1e-10)
        for g in range(len(g_boxes)):
            if taken[g] and not g_ignore[g]:
                continue
            if best > -1 and not g_ignore[best] and g_ignore[g]:
                break  # a counted GT is matched: the ignored ones after it may not take the detection
            if overlap[d, g] < best_iou:
                continue
            best, best_iou = g, overlap[d, g]
        if best > -1:
            taken[best] = True
            on_ignored[d] = g_ignore[best]
            matched[d] = not g_ignore[best]
    return matched, on_ignored


def intersection_over_first(a, b):
    """|a ∩ b| / |a| for every pair: (A, 4), (B, 4) xyxy -> (A, B)."""
    area = np.prod(a[:, 2:] - a[:, :2], axis=1)[:, None]
    return np.where(area > 0, intersection_area(a, b) / np.where(area > 0, area, 1), 0.0)


# ------------------------------------------------------------------------------------------------- confusion
def confusion_matrix(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, num_classes,
                     conf=0.25, iou_thres=0.45):
    """(C+1, C+1) counts, rows = true class, columns = predicted class, index C = background. Each predicted box
    counts once, with its best class (best_class_per_box). Detections with score >= conf and counted GTs are paired
    greedily, highest IoU first (ties: higher score), any classes, while IoU >= iou_thres: a pair adds 1 at [true,
    predicted]; a GT left over is missed ([true, C]); a detection left over is a false positive ([C, predicted])
    unless it overlaps an ignored GT by iou_thres (then it is not counted)."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for gb, gl, gi, db, ds, dl in zip(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels):
        db, ds, dl = best_class_per_box(np.asarray(db, np.float64).reshape(-1, 4), np.asarray(ds), np.asarray(dl))
        keep, gi = ds >= conf, np.asarray(gi, bool)
        db, ds, dl = db[keep], ds[keep], dl[keep]
        gb, gl = np.asarray(gb, np.float64), np.asarray(gl)
        pairs = greedy_pairs(gb[~gi], db, ds, iou_thres)
        g_used, d_used = np.zeros(int((~gi).sum()), bool), np.zeros(len(db), bool)
        for g, d in pairs:
            matrix[gl[~gi][g], dl[d]] += 1
            g_used[g] = d_used[d] = True
        np.add.at(matrix, (gl[~gi][~g_used], num_classes), 1)
        spare = ~d_used
        if gi.any() and spare.any():  # a leftover detection on an ignored (difficult/crowd) GT is not an error
            spare[spare] = box_iou_numpy(db[spare], gb[gi]).max(axis=1) < iou_thres
        np.add.at(matrix, (num_classes, dl[spare]), 1)
    return matrix


def best_class_per_box(boxes, scores, labels):
    """Detections with identical coordinates are one box: keep its highest-scored class. The evaluation lists a box
    once per class above conf_thres (multi-label, which mAP wants); the confusion matrix wants each predicted box
    once, as predict draws it, else every runner-up class would land in the background row. Order is kept."""
    if len(boxes) < 2:
        return boxes, scores, labels
    order = np.argsort(-scores, kind="mergesort")
    _, first = np.unique(boxes[order], axis=0, return_index=True)  # first occurrence in score order: the best class
    keep = np.sort(order[first])
    return boxes[keep], scores[keep], labels[keep]


def greedy_pairs(g_boxes, d_boxes, d_scores, iou_thres):
    """[(gt index, detection index)]: all pairs with IoU >= iou_thres, highest IoU first (equal IoU: the higher
    score), each GT and each detection used once."""
    if len(g_boxes) == 0 or len(d_boxes) == 0:
        return []
    iou = box_iou_numpy(g_boxes, d_boxes)  # (G, D)
    g_idx, d_idx = np.nonzero(iou >= iou_thres)
    order = np.lexsort((-np.asarray(d_scores, np.float64)[d_idx], -iou[g_idx, d_idx]))
    pairs, g_used, d_used = [], set(), set()
    for g, d in zip(g_idx[order].tolist(), d_idx[order].tolist()):
        if g not in g_used and d not in d_used:
            pairs.append((g, d))
            g_used.add(g)
            d_used.add(d)
    return pairs


def normalize_rows(matrix):
    """Each row divided by its sum (the share of a true class's boxes given to each prediction); 0 for empty rows."""
    sums = matrix.sum(axis=1, keepdims=True)
    return matrix / np.where(sums > 0, sums, 1)


# ------------------------------------------------------------------------------------------------- the table
def per_class_map(precision, class_index):
    """AP@[.5:.95] of one class from COCOeval's precision array (T, R, K, A, M): area all, 100 detections; nan
    when the class has no GT (COCOeval marks it with -1)."""
    p = np.asarray(precision)[:, :, class_index, 0, -1]
    return float(p.mean()) if p.size and (p > -1).all() else math.nan


def per_class_rows(curves: ClassCurves, class_names, coco_precision=None):
    """One dict per class: images, instances, P and R at the best-F1 confidence, AP50 (ours, = pycocotools')
    and AP50:95 (from COCOeval's precision array, when given)."""
    i = curves.best_index
    rows = []
    for k, name in enumerate(class_names):
        rows.append({"class": name, "images": int(curves.num_images[k]), "instances": int(curves.num_gt[k]),
                     "precision": float(curves.precision[k, i]) if curves.num_gt[k] else math.nan,
                     "recall": float(curves.recall[k, i]), "ap50": float(curves.ap50[k]),
                     "ap50_95": per_class_map(coco_precision, k) if coco_precision is not None else math.nan,
                     "conf": curves.best_conf})
    return rows
