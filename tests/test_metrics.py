"""Tests for yolo/metrics.py against hand-computed APs and a direct, on-disk pycocotools run."""

import contextlib
import io
import json
import math
import sys

import numpy as np
import pytest

from yolo.config_checks import EVAL_BACKENDS
from yolo.metrics import (coco_results_json, evaluate_detections, format_summary, pr_curve)

CLASSES = ["cat", "dog", "bird", "car"]


def _empty_dets(num_images):
    return [np.zeros((0, 4))] * num_images, [np.zeros(0)] * num_images, [np.zeros(0, int)] * num_images


def _random_dataset(seed, num_images=40, num_classes=4, width=640, height=480):
    """GTs of all sizes (some ignored, some images empty) and detections with jitter, misses,
    wrong labels, duplicates and pure false positives, in shuffled order."""
    rng = np.random.default_rng(seed)
    gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels = [], [], [], [], [], []
    for _ in range(num_images):
        n = rng.integers(0, 9) if rng.random() > 0.1 else 0
        wh = np.exp(rng.uniform(np.log(6), np.log(300), size=(n, 2)))
        xy = rng.uniform(0, 1, size=(n, 2)) * (np.array([width, height]) - wh)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, num_classes, size=n)
        gt_boxes.append(boxes)
        gt_labels.append(labels)
        gt_ignore.append(rng.random(n) < 0.1)

        dets, scores, dlabels = [], [], []
        for box, label in zip(boxes, labels):
            for _copy in range(rng.choice([0, 1, 1, 1, 2])):  # miss, hit, or duplicate
                size = box[2:] - box[:2]
                dets.append(box + rng.normal(0, 0.08, 4) * np.tile(size, 2))
                scores.append(rng.uniform(0.2, 1.0))
                dlabels.append(label if rng.random() > 0.1 else rng.integers(0, num_classes))
        for _fp in range(rng.integers(0, 6)):
            xy = rng.uniform(0, 1, 2) * [width - 50, height - 50]
            dets.append(np.concatenate([xy, xy + rng.uniform(5, 50, 2)]))
            scores.append(rng.uniform(0.0, 0.8))
            dlabels.append(rng.integers(0, num_classes))
        order = rng.permutation(len(dets))
        dets = np.array(dets, dtype=np.float64).reshape(-1, 4)[order]
        dets[:, 2:] = np.maximum(dets[:, 2:], dets[:, :2] + 1)  # keep xyxy valid after jitter
        det_boxes.append(dets.astype(np.float32))
        det_scores.append(np.array(scores, dtype=np.float32)[order])
        det_labels.append(np.array(dlabels, dtype=np.int64)[order])
    sizes = [(width, height)] * num_images
    return gt_boxes, gt_labels, gt_ignore, sizes, det_boxes, det_scores, det_labels


def _reference_pycocotools(tmp_path, gt_boxes, gt_labels, gt_ignore, sizes, det_boxes, det_scores, det_labels):
    """Independent construction: write COCO json files, run COCO/loadRes/COCOeval as the docs show."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (w, h) in enumerate(sizes):
        images.append({"id": i + 1, "width": w, "height": h, "file_name": f"{i}.jpg"})
        for box, label, ignored in zip(gt_boxes[i], gt_labels[i], gt_ignore[i]):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": int(ignored)})
        for box, score, label in zip(det_boxes[i], det_scores[i], det_labels[i]):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": i + 1, "category_id": int(label) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "res.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    res_file.write_text(json.dumps(results))

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_gt = COCO(str(gt_file))
        coco_dt = coco_gt.loadRes(str(res_file))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        printed.truncate(0), printed.seek(0)
        evaluator.summarize()
    return evaluator, printed.getvalue()


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", EVAL_BACKENDS)
def test_perfect_predictions_score_one(backend):
    gt_boxes, gt_labels, gt_ignore, sizes, *_ = _random_dataset(seed=0)
    gt_ignore = [np.zeros(len(b), bool) for b in gt_boxes]
    scores = [np.ones(len(b)) for b in gt_boxes]
    result = evaluate_detections(gt_boxes, gt_labels, gt_ignore, sizes, gt_boxes, scores, gt_labels, CLASSES,
                                 backend=backend)
    assert result.map == pytest.approx(1.0)
    assert result.map50 == pytest.approx(1.0)
    assert all(ap == pytest.approx(1.0) for ap in result.per_class_ap50.values())


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_direct_pycocotools_run(tmp_path, seed):
    data = _random_dataset(seed)
    reference, printed = _reference_pycocotools(tmp_path, *data)
    result = evaluate_detections(*data, CLASSES, backend="pycocotools")

    assert 0.1 < result.map < 0.9  # a non-trivial case
    np.testing.assert_allclose(result.stats, reference.stats, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.precision, reference.eval["precision"], rtol=0, atol=1e-12)
    assert result.map == pytest.approx(reference.stats[0], abs=1e-12)
    assert result.map50 == pytest.approx(reference.stats[1], abs=1e-12)
    # Our summary text is the one pycocotools prints.
    assert format_summary(result.stats) == printed.rstrip("\n")
    assert result.table.startswith(printed.rstrip("\n"))
    # Per-class AP50: the mean over 101 recall points of that class's PR curve.
    for k, name in enumerate(CLASSES):
        expected = reference.eval["precision"][0, :, k, 0, 2].mean()
        assert result.per_class_ap50[name] == pytest.approx(expected, abs=1e-12)
        assert name in result.table


@pytest.mark.parametrize("seed", [1, 3])
def test_faster_coco_eval_agrees_with_pycocotools(seed):
    data = _random_dataset(seed)
    slow = evaluate_detections(*data, CLASSES, backend="pycocotools")
    fast = evaluate_detections(*data, CLASSES, backend="faster_coco_eval")
    np.testing.assert_allclose(fast.stats, slow.stats, rtol=0, atol=1e-4)
    for name in CLASSES:
        assert fast.per_class_ap50[name] == pytest.approx(slow.per_class_ap50[name], abs=1e-4)
    assert fast.precision.shape == slow.precision.shape == (10, 101, len(CLASSES), 4, 3)


def _two_box_case(ignore_second: bool, drop_second: bool = False, detect_second: bool = True):
    gts = np.array([[10, 10, 50, 50], [100, 100, 160, 140]], float)
    dets = np.array([[100, 100, 160, 140], [10, 10, 50, 50]], float)  # the higher score sits on GT 2
    keep_gt = [True, not drop_second]
    keep_det = [detect_second, True]
    return ([gts[keep_gt]], [np.zeros(sum(keep_gt), int)], [np.array([False, ignore_second])[keep_gt]],
            [(200, 200)], [dets[keep_det]], [np.array([0.95, 0.9])[keep_det]], [np.zeros(sum(keep_det), int)])


@pytest.mark.parametrize("backend", EVAL_BACKENDS)
def test_detection_on_ignored_gt_is_not_a_false_positive(backend):
    # GT 2 is 'difficult': the 0.95 detection on it is neither TP nor FP -> precision stays 1.
    ignored = evaluate_detections(*_two_box_case(ignore_second=True), ["cat"], backend=backend)
    assert ignored.map50 == pytest.approx(1.0)
    # Same detections without GT 2: that detection is now a FP ranked first -> P = 1/2 at full recall.
    missing = evaluate_detections(*_two_box_case(ignore_second=False, drop_second=True), ["cat"], backend=backend)
    assert missing.map50 == pytest.approx(0.5)
    # An ignored GT nobody detects is not a miss either.
    undetected = evaluate_detections(*_two_box_case(ignore_second=True, detect_second=False), ["cat"],
                                     backend=backend)
    assert undetected.map50 == pytest.approx(1.0)
    assert "     1" in ignored.table  # the per-class table counts only the non-ignored GT


@pytest.mark.parametrize("backend", EVAL_BACKENDS)
def test_empty_detections_give_zeros(backend):
    gt_boxes, gt_labels, gt_ignore, sizes, *_ = _random_dataset(seed=4, num_classes=3)
    result = evaluate_detections(gt_boxes, gt_labels, gt_ignore, sizes, *_empty_dets(len(gt_boxes)), CLASSES,
                                 backend=backend)
    assert result.map == 0.0 and result.map50 == 0.0
    assert all(s in (0.0, -1.0) for s in result.stats)  # -1: no GT in that area range (COCO's marker)
    assert [result.per_class_ap50[c] for c in CLASSES[:3]] == [0.0, 0.0, 0.0]
    assert math.isnan(result.per_class_ap50["car"])  # class 3 never appears in the GT
    assert "n/a" in result.table


@pytest.mark.parametrize("backend", EVAL_BACKENDS)
def test_no_ground_truth_at_all(backend):
    dets = [np.array([[0, 0, 10, 10]], float)], [np.array([0.5])], [np.array([1])]
    result = evaluate_detections([np.zeros((0, 4))], [np.zeros(0, int)], [np.zeros(0, bool)], [(64, 64)],
                                 *dets, CLASSES, backend=backend)
    assert result.stats == [-1.0] * 12
    assert result.map == 0.0 and result.map50 == 0.0
    assert all(math.isnan(ap) for ap in result.per_class_ap50.values())


@pytest.mark.parametrize("backend", EVAL_BACKENDS)
def test_hand_computed_ap(backend):
    # 1 class, 2 GTs, 3 detections ranked by score:
    #   d1 0.9 = GT1 exactly (IoU 1)           -> TP at every IoU threshold
    #   d2 0.8 overlaps nothing                -> FP
    #   d3 0.7 covers 72% of GT2 (IoU 0.72)    -> TP for IoU thresholds .50-.70, FP for .75-.95
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    dets = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 27.2]], float)
    args = ([gt], [np.zeros(2, int)], [np.zeros(2, bool)], [(100, 100)],
            [dets], [np.array([0.9, 0.8, 0.7])], [np.zeros(3, int)], ["thing"])
    result = evaluate_detections(*args, backend=backend)

    # IoU .5: (P, R) after each det = (1, .5), (.5, .5), (2/3, 1). Interpolated precision (max to the
    # right) is 1 for recall <= .5 and 2/3 above. Of the 101 points r = 0, .01, ..., 1:
    # 51 have r <= .5 and 50 have r > .5.
    recall_points = [i / 100 for i in range(101)]
    ap_low_iou = sum(1.0 if r <= 0.5 else 2 / 3 for r in recall_points) / 101
    assert ap_low_iou == pytest.approx((51 + 50 * 2 / 3) / 101)
    # IoU >= .75: only d1 is a TP, recall tops out at .5 -> precision 1 up to r=.5, then 0.
    ap_high_iou = sum(1.0 if r <= 0.5 else 0.0 for r in recall_points) / 101
    assert result.map50 == pytest.approx(ap_low_iou, abs=1e-9)
    assert result.map == pytest.approx((5 * ap_low_iou + 5 * ap_high_iou) / 10, abs=1e-9)
    assert result.per_class_ap50["thing"] == pytest.approx(ap_low_iou, abs=1e-9)
    # AR@100 over 10 thresholds: recall 1 at 5 thresholds, .5 at the other 5.
    assert result.stats[8] == pytest.approx(0.75)

    recall, precision = pr_curve(result, 0, iou=0.5)
    np.testing.assert_allclose(recall, recall_points)
    np.testing.assert_allclose(precision, [1.0] * 51 + [2 / 3] * 50, atol=1e-9)
    _, precision_75 = pr_curve(result, 0, iou=0.75)
    np.testing.assert_allclose(precision_75, [1.0] * 51 + [0.0] * 50, atol=1e-9)


def test_pr_curve_of_class_without_gt_is_nan():
    result = evaluate_detections(*_two_box_case(ignore_second=False), ["cat", "dog"])
    _, precision = pr_curve(result, 1)
    assert np.isnan(precision).all()
    with pytest.raises(ValueError, match="iou"):
        pr_curve(result, 0, iou=0.42)


def test_coco_results_json():
    results = coco_results_json([7, 9], [np.array([[10, 20, 40, 80]], np.float32), np.zeros((0, 4))],
                                [np.array([0.5], np.float32), np.zeros(0)], [np.array([2]), np.zeros(0, int)])
    assert results == [{"image_id": 7, "category_id": 3, "bbox": [10.0, 20.0, 30.0, 60.0], "score": 0.5}]
    json.dumps(results)  # plain python types only


def test_bad_inputs_raise_clear_errors():
    args = list(_two_box_case(ignore_second=False))
    with pytest.raises(ValueError, match="backend"):
        evaluate_detections(*args, ["cat"], backend="detectron")
    with pytest.raises(ValueError, match="det_boxes"):
        evaluate_detections(*args[:4], [], *args[5:], ["cat"])
    with pytest.raises(ValueError, match=r"gt_labels\[0\].*class index"):
        evaluate_detections(args[0], [np.array([0, 5])], *args[2:], ["cat"])
    with pytest.raises(ValueError, match=r"det_boxes\[0\].*\(N, 4\)"):
        evaluate_detections(*args[:4], [np.zeros((2, 5))], *args[5:], ["cat"])
    with pytest.raises(ValueError, match=r"gt_boxes\[0\].*x2 < x1"):
        evaluate_detections([np.array([[10, 10, 5, 20], [0, 0, 1, 1]], float)], *args[1:], ["cat"])


def test_missing_backend_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install faster-coco-eval"):
        evaluate_detections(*_two_box_case(ignore_second=False), ["cat"], backend="faster_coco_eval")
