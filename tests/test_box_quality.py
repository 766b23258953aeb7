"""yolo/box_quality.py: AP per IoU and object size against pycocotools (its summary and a COCOeval run at IoU 0.9
alone), the matched IoUs against boxes worked out by hand, the size buckets at COCO's bounds, the histogram's legend,
and box_quality.csv as the evaluation writes it."""
import contextlib
import csv
import io
import math

import numpy as np
import pytest

from yolo.box_quality import ap_by_iou_and_size, matched_ious, size_names
from yolo.data.records import Record
from yolo.engine.artifacts import write_eval_artifacts
from yolo.metrics import evaluate_detections
from yolo.viz.curves import iou_histogram_figure

NAMES = ["a", "b", "c"]


def random_case(seed, num_images=12, size=320):
    """GT boxes from 8 to 150 px a side (small, medium and large), a few ignored; detections jittered by 1 to 10 % of a
    side (so AP falls from IoU 0.5 to 0.9), some missed, some with the wrong class, some on nothing."""
    rng = np.random.default_rng(seed)
    gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels = [], [], [], [], [], []
    for _ in range(num_images):
        n = int(rng.integers(1, 6))
        wh = rng.uniform(8, 150, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (size - wh)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, len(NAMES), n)
        keep = rng.random(n) < 0.85
        side = np.tile(wh[keep], 2)
        spread = rng.uniform(0.01, 0.1, (int(keep.sum()), 1))  # some boxes tight, some loose
        dets = boxes[keep] + rng.normal(0, 1, (int(keep.sum()), 4)) * spread * side
        corner = rng.uniform(0, size - 40, (2, 2))
        dets = np.concatenate([dets, np.concatenate([corner, corner + 30], axis=1)])  # two on nothing
        dets[:, 2:] = np.maximum(dets[:, 2:], dets[:, :2] + 1)
        gt_boxes.append(boxes)
        gt_labels.append(labels)
        gt_ignore.append(rng.random(n) < 0.1)
        det_boxes.append(dets)
        det_scores.append(rng.uniform(0.05, 1.0, len(dets)))
        det_labels.append(np.concatenate([np.where(rng.random(int(keep.sum())) < 0.9, labels[keep], 0),
                                          rng.integers(0, len(NAMES), 2)]))
    return gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels


def coco_stats_at(iou, gb, gl, gi, db, ds, dl):
    """COCOeval's 12 summary numbers with its IoU thresholds cut to [iou]: its first (AP, all sizes) and
    the small/medium/large APs are then the APs at that one IoU. Built here from pycocotools directly."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def dataset(annotations):
        return {"images": [{"id": i + 1, "width": 320, "height": 320} for i in range(len(gb))],
                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)], "annotations": annotations}

    def coco(annotations):
        c = COCO()
        c.dataset = dataset(annotations)
        c.createIndex()
        return c

    gts, dets = [], []
    for i in range(len(gb)):
        for box, label, ignored in zip(gb[i], gl[i], gi[i]):
            w, h = box[2:] - box[:2]
            gts.append({"id": len(gts) + 1, "image_id": i + 1, "category_id": int(label) + 1, "iscrowd": int(ignored),
                        "bbox": [box[0], box[1], w, h], "area": w * h})
        for box, score, label in zip(db[i], ds[i], dl[i]):
            w, h = box[2:] - box[:2]
            dets.append({"id": len(dets) + 1, "image_id": i + 1, "category_id": int(label) + 1, "iscrowd": 0,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco(gts), coco(dets), "bbox")
        evaluator.params.iouThrs = np.array([iou])
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_by_iou_and_size_agrees_with_pycocotools(seed):
    case = random_case(seed)
    result = evaluate_detections(*case[:3], [(320, 320)] * len(case[0]), *case[3:], NAMES)
    rows = ap_by_iou_and_size(result.precision, result.iou_thresholds)
    assert [r["area"] for r in rows] == ["all", "small", "medium", "large"]
    assert list(rows[0]) == ["area", "ap50", "ap75", "ap90"]
    assert rows[0]["ap50"] == pytest.approx(result.stats[1], abs=1e-12)
    assert rows[0]["ap75"] == pytest.approx(result.stats[2], abs=1e-12)
    assert 0 < rows[0]["ap90"] < rows[0]["ap75"] < rows[0]["ap50"]  # the jitter costs AP at tight IoUs

    # AP@0.9 per size: COCOeval run with 0.9 as its only IoU threshold
    at_09 = coco_stats_at(0.9, *case)
    for row, coco in zip(rows, [at_09[0], *at_09[3:6]]):
        assert row["ap90"] == pytest.approx(coco, abs=1e-12), row["area"]

    # every threshold: the mean over them is COCO's AP@[.5:.95] per area range (stats 0, 3, 4, 5)
    all_rows = ap_by_iou_and_size(result.precision, result.iou_thresholds, ious=result.iou_thresholds)
    assert list(all_rows[0])[1:] == [f"ap{p}" for p in range(50, 100, 5)]
    for row, stat in zip(all_rows, [result.stats[0], *result.stats[3:6]]):
        assert np.mean([row[k] for k in row if k != "area"]) == pytest.approx(stat, abs=1e-12), row["area"]


def test_ap_by_iou_and_size_skips_classes_without_gt_and_refuses_unknown_ious():
    precision = np.full((10, 101, 2, 4, 3), -1.0)
    precision[:, :, 0] = np.linspace(0, 1, 101)[None, :, None, None]  # class 0: mean 0.5 at every IoU and size
    precision[:, :, 1, 0] = 1.0                                          # class 1: GT only in the 'all' range
    precision[:, :, :, 3] = -1.0                                         # no large GT at all
    rows = ap_by_iou_and_size(precision, np.linspace(0.5, 0.95, 10))
    assert rows[0]["ap50"] == pytest.approx(0.75)   # (0.5 + 1) / 2
    assert rows[1]["ap75"] == pytest.approx(0.5)    # class 1's -1 left out, not averaged in
    assert all(math.isnan(rows[3][k]) for k in ("ap50", "ap75", "ap90"))
    with pytest.raises(ValueError, match="0.52"):
        ap_by_iou_and_size(precision, np.linspace(0.5, 0.95, 10), ious=(0.5, 0.52))


def test_matched_ious_by_hand():
    square = [0, 0, 10, 10]
    images = [
        # (GT boxes, GT labels, ignored, det boxes, det scores, det labels)
        ([square], [0], [False], [[0, 0, 10, 5]], [0.9], [0]),                      # IoU 50 / 100
        ([square], [1], [False], [[1, 1, 11, 11]], [0.8], [1]),                     # IoU 81 / 119
        # two detections on one GT: the tighter one (0.9) wins although the looser (1296 / 1904) scores higher
        ([[0, 0, 40, 40]], [0], [False], [[4, 4, 44, 44], [0, 0, 40, 36]], [0.95, 0.5], [0, 0]),
        ([[0, 0, 100, 100]], [0], [False], [[0, 0, 100, 100]], [0.9], [1]),       # wrong class
        ([[0, 0, 100, 100]], [0], [False], [[0, 0, 100, 99]], [0.2], [0]),        # below conf
        ([[0, 0, 20, 20]], [0], [True], [[0, 0, 20, 20]], [0.9], [0]),            # ignored GT
        # one box listed with two classes counts with its best one: right here, wrong in the next image
        ([[0, 0, 32, 32]], [0], [False], [[0, 0, 32, 32]] * 2, [0.7, 0.5], [0, 1]),
        ([[0, 0, 96, 96]], [1], [False], [[0, 0, 96, 96]] * 2, [0.9, 0.8], [0, 1]),
        ([], [], [], [[0, 0, 5, 5]], [0.9], [2]),                                   # no GT
        ([[0, 0, 5, 5]], [2], [False], [], [], []),                                 # no detection
    ]
    columns = [[np.array(image[j], dtype=np.int64 if j in (1, 5) else bool if j == 2 else np.float64)
                for image in images] for j in range(6)]
    ious, areas = matched_ious(*columns, conf=0.3)
    assert ious.shape == areas.shape == (4,)
    np.testing.assert_allclose(ious, [0.5, 81 / 119, 0.9, 1.0], rtol=1e-12)
    np.testing.assert_allclose(areas, [100, 100, 1600, 1024])
    # iou_thres: the 0.5 pair is gone at 0.6
    assert len(matched_ious(*columns, conf=0.3, iou_thres=0.6)[0]) == 3
    # conf 0.1 lets the 0.2 detection in
    assert 0.99 in np.round(matched_ious(*columns, conf=0.1)[0], 6)


def test_size_names_at_cocos_bounds():
    # COCOeval's ranges are closed ([0, 32^2], [32^2, 96^2], [96^2, 1e5^2]); a bound goes to the smaller size
    areas = [0, 1023.9, 1024, 1024.1, 9215.9, 9216, 9216.1, 1e6]
    assert size_names(areas).tolist() == ["small"] * 3 + ["medium"] * 3 + ["large"] * 2
    assert size_names([]).tolist() == []


def test_iou_histogram_legend_has_counts_and_medians_of_the_sizes_present():
    fig = iou_histogram_figure(np.array([0.6, 0.9, 0.7, 0.8, 0.95]), np.array([100, 500, 20000, 30000, 40000]))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["small: 2 matched, median IoU 0.750", "large: 3 matched, median IoU 0.800"]


class FakeConfig:
    class_names = NAMES
    confusion_conf = 0.25
    confusion_iou = 0.45


def test_box_quality_csv(tmp_path, log_lines):
    gb, gl, gi, db, ds, dl = random_case(2)
    records = [Record(f"{i}.jpg", 320, 320, b, l, g) for i, (b, l, g) in enumerate(zip(gb, gl, gi))]
    detections = {i: (db[i], ds[i], dl[i]) for i in range(len(records))}
    result = evaluate_detections(gb, gl, gi, [(320, 320)] * len(gb), db, ds, dl, NAMES)
    write_eval_artifacts(tmp_path, result, records, detections, FakeConfig())
    with open(tmp_path / "box_quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["area", "ap50", "ap75", "ap90", "matched", "median_iou"]
    assert [r["area"] for r in rows] == ["all", "small", "medium", "large"]
    assert float(rows[0]["ap50"]) == pytest.approx(result.map50, abs=1e-6)
    assert float(rows[0]["ap75"]) == pytest.approx(result.stats[2], abs=1e-6)
    matched = [int(r["matched"]) for r in rows]
    assert matched[0] == sum(matched[1:]) > 0 and all(m > 0 for m in matched[1:])
    assert all(0.5 <= float(r["median_iou"]) <= 1 for r in rows)
    assert (tmp_path / "iou_histogram.png").is_file()
    line = next(m for m in log_lines if "AP50/AP75/AP90" in m)
    assert f"all {float(rows[0]['ap50']):.3f}/{float(rows[0]['ap75']):.3f}/{float(rows[0]['ap90']):.3f}" in line
