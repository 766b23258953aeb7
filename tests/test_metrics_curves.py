"""yolo/metrics_curves.py: AP50 and the PR curve against pycocotools, P/R/F1 and the confusion matrix against
counts worked out by hand from known boxes."""
import math

import numpy as np
import pytest

from yolo.metrics import evaluate_detections, pr_curve
from yolo.metrics_curves import (class_curves, confusion_matrix, normalize_rows, per_class_map, per_class_rows)


def random_case(seed, num_images=30, num_classes=4, size=320):
    """GTs (some ignored, some images empty) and detections with jitter, misses, wrong classes, duplicates and
    background false positives; scores rounded to 0.05 so COCOeval's tie order is exercised too."""
    rng = np.random.default_rng(seed)
    gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels = [], [], [], [], [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 7))
        wh = rng.uniform(8, 120, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (size - wh)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, num_classes, n)
        dets, scores, dlabels = [], [], []
        for box, label in zip(boxes, labels):
            for _copy in range(rng.choice([0, 1, 1, 2])):
                side = np.tile(box[2:] - box[:2], 2)
                dets.append(box + rng.normal(0, 0.12, 4) * side)
                scores.append(rng.uniform(0.1, 1.0))
                dlabels.append(label if rng.random() > 0.15 else rng.integers(0, num_classes))
        for _fp in range(int(rng.integers(0, 4))):
            xy0 = rng.uniform(0, size - 40, 2)
            dets.append(np.concatenate([xy0, xy0 + rng.uniform(5, 40, 2)]))
            scores.append(rng.uniform(0.0, 0.7))
            dlabels.append(rng.integers(0, num_classes))
        dets = np.array(dets, np.float64).reshape(-1, 4)
        dets[:, 2:] = np.maximum(dets[:, 2:], dets[:, :2] + 1)
        gt_boxes.append(boxes)
        gt_labels.append(labels)
        gt_ignore.append(rng.random(n) < 0.1)
        det_boxes.append(dets)
        det_scores.append(np.round(np.array(scores) * 20) / 20)
        det_labels.append(np.array(dlabels, np.int64))
    return gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap50_and_pr_curve_agree_with_pycocotools(seed):
    gb, gl, gi, db, ds, dl = random_case(seed)
    names = ["a", "b", "c", "d"]
    coco = evaluate_detections(gb, gl, gi, [(320, 320)] * len(gb), db, ds, dl, names)
    curves = class_curves(gb, gl, gi, db, ds, dl, len(names))
    assert np.isfinite(curves.ap50).all() and 0.1 < curves.ap50.min() and curves.ap50.max() < 0.99  # imperfect
    for k, name in enumerate(names):
        assert curves.ap50[k] == pytest.approx(coco.per_class_ap50[name], abs=5e-4)
        np.testing.assert_allclose(curves.pr_precision[k], pr_curve(coco, k)[1], atol=1e-9)
    assert np.mean(curves.ap50) == pytest.approx(coco.map50, abs=5e-4)
    # counts: images holding the class and instances that count (ignored ones left out)
    for k in range(len(names)):
        assert curves.num_gt[k] == sum(int(((l == k) & ~i).sum()) for l, i in zip(gl, gi))
        assert curves.num_images[k] == sum(int(((l == k) & ~i).any()) for l, i in zip(gl, gi))
    # AP50:95 per class read from COCOeval: their mean is COCO's mAP
    assert np.mean([per_class_map(coco.precision, k) for k in range(len(names))]) == pytest.approx(coco.map, abs=1e-9)


def box(x, y, w=10, h=10):
    return [x, y, x + w, y + h]


def hand_case():
    """Two classes (circle 0, square 1). Image 0: circles A, B; image 1: square C, an ignored circle D.
    Circle detections, high score first: on A 0.93 (TP), on A again 0.82 (FP: A taken), on nothing 0.71 (FP),
    on C 0.52 (FP: wrong class), on D 0.44 (not counted), on B 0.33 (TP), on nothing 0.10 (FP).
    Square detection: on C 0.66 (TP)."""
    gt_boxes = [np.array([box(0, 0), box(20, 20)]), np.array([box(50, 50), box(80, 80)])]
    gt_labels = [np.array([0, 0]), np.array([1, 0])]
    gt_ignore = [np.array([False, False]), np.array([False, True])]
    det_boxes = [np.array([box(0, 0), box(1, 0), box(60, 0), box(20, 21), box(40, 0)]),
                 np.array([box(50, 50), box(50, 51), box(80, 80)])]
    det_scores = [np.array([0.93, 0.82, 0.71, 0.33, 0.10]), np.array([0.66, 0.52, 0.44])]
    det_labels = [np.array([0, 0, 0, 0, 0]), np.array([1, 0, 0])]
    return gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels


@pytest.mark.parametrize("conf, circle_tp, circle_fp, square_tp, square_fp", [
    (0.95, 0, 0, 0, 0), (0.85, 1, 0, 0, 0), (0.75, 1, 1, 0, 0), (0.68, 1, 2, 0, 0), (0.60, 1, 2, 1, 0),
    (0.50, 1, 3, 1, 0), (0.40, 1, 3, 1, 0), (0.30, 2, 3, 1, 0), (0.05, 2, 4, 1, 0)])
def test_precision_recall_f1_counts_by_hand(conf, circle_tp, circle_fp, square_tp, square_fp):
    curves = class_curves(*hand_case(), num_classes=2, grid_points=101)
    i = int(np.argmin(np.abs(curves.confidence - conf)))
    assert curves.tp[:, i].tolist() == [circle_tp, square_tp] and curves.fp[:, i].tolist() == [circle_fp, square_fp]
    assert curves.num_gt.tolist() == [2, 1] and curves.num_images.tolist() == [1, 1]  # D is ignored
    for k, (tp, fp, n) in enumerate([(circle_tp, circle_fp, 2), (square_tp, square_fp, 1)]):
        p = tp / (tp + fp) if tp + fp else math.nan  # no detection left: precision undefined
        r = tp / n
        assert curves.precision[k, i] == pytest.approx(p, nan_ok=True) and curves.recall[k, i] == pytest.approx(r)
        assert curves.f1[k, i] == pytest.approx(2 * p * r / (p + r) if tp else 0.0)


def test_ap_and_best_f1_confidence_by_hand():
    curves = class_curves(*hand_case(), num_classes=2, grid_points=101)
    # circle: TP FP FP FP TP FP -> envelope precision 1 up to recall 0.5, then 2/5 up to recall 1
    assert curves.ap50[0] == pytest.approx((51 * 1.0 + 50 * 0.4) / 101)
    assert curves.ap50[1] == pytest.approx(1.0)
    # mean F1 is highest with both circle TPs and the square kept but the 0.10 FP dropped: conf in (0.10, 0.33]
    assert curves.best_conf == pytest.approx(0.11)
    rows = per_class_rows(curves, ["circle", "square"])
    assert rows[0]["precision"] == pytest.approx(2 / 5) and rows[0]["recall"] == 1.0 and rows[1]["precision"] == 1.0


def test_confusion_matrix_by_hand():
    """Classes circle 0, square 1, triangle 2; index 3 = background. Rows true, columns predicted."""
    gt_boxes = [np.array([box(0, 0), box(20, 20), box(40, 40)]),        # circle A, square B, triangle T
                np.array([box(0, 0), box(60, 60)]),                     # ignored circle D, square E
                np.array([box(0, 0), box(2, 0)])]                       # circle G, square H (overlapping)
    gt_labels = [np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 1])]
    gt_ignore = [np.array([False, False, False]), np.array([True, False]), np.array([False, False])]
    det_boxes = [np.array([box(0, 0), box(40, 40), box(24, 20), box(100, 100), box(1, 0), box(20, 20), box(40, 40)]),
                 np.array([box(0, 0)]),
                 np.array([box(2, 0), box(1.5, 0)])]
    det_scores = [np.array([0.9, 0.8, 0.7, 0.9, 0.6, 0.2, 0.3]), np.array([0.9]), np.array([0.5, 0.9])]
    det_labels = [np.array([0, 1, 0, 2, 0, 1, 2]), np.array([0]), np.array([1, 0])]
    matrix = confusion_matrix(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, 3,
                              conf=0.25, iou_thres=0.45)
    expected = np.array([
        # circle square triangle background   (predicted)
        [2, 0, 0, 0],   # circle: A found; G found (the greedy-by-IoU pairing, not score-first)
        [0, 1, 0, 2],   # square: H found; B missed (its detection has IoU 0.43, and 0.2 < conf), E missed
        [0, 1, 0, 0],   # triangle T detected as a square
        [2, 0, 1, 0],   # background: the shifted circle and the duplicate on A; the triangle on nothing
    ])  # the box on T is listed twice (square 0.8, triangle 0.3: multi-label): one box, counted as a square
    np.testing.assert_array_equal(matrix, expected)
    # a score-first pairing would swap image 2's pair into two confusions; the lower threshold keeps the 0.2 box
    low = confusion_matrix(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, 3, conf=0.1)
    assert low[1, 1] == 2 and low[1, 3] == 1
    normalized = normalize_rows(matrix)
    np.testing.assert_allclose(normalized[1], [0, 1 / 3, 0, 2 / 3])
    np.testing.assert_allclose(normalized.sum(axis=1), 1.0)


def test_crowd_rules_agree_with_pycocotools():
    """A detection on a counted GT stays a TP even when an ignored (crowd) region covers it better; a detection
    inside a crowd region (intersection / its own area >= 0.5) is forgiven; a crowd region takes many detections."""
    gt_boxes = [np.array([box(0, 0, 20, 20), box(0, 0, 60, 60), box(100, 100, 50, 50)])]
    gt_labels, gt_ignore = [np.array([0, 0, 0])], [np.array([False, True, True])]
    det_boxes = [np.array([box(2, 2, 20, 20), box(30, 30, 8, 8), box(110, 110, 5, 5), box(120, 120, 5, 5),
                           box(200, 200)])]
    det_scores, det_labels = [np.array([0.9, 0.8, 0.7, 0.6, 0.5])], [np.array([0, 0, 0, 0, 0])]
    coco = evaluate_detections(gt_boxes, gt_labels, gt_ignore, [(320, 320)], det_boxes, det_scores, det_labels,
                               ["a"])
    curves = class_curves(gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels, 1, grid_points=101)
    assert curves.tp[0, 0] == 1 and curves.fp[0, 0] == 1  # the last box only is a false positive
    assert curves.ap50[0] == pytest.approx(coco.per_class_ap50["a"], abs=1e-9)
    np.testing.assert_allclose(curves.pr_precision[0], pr_curve(coco, 0)[1], atol=1e-9)
