"""COCO-style detection metrics (mAP@[.5:.95], AP50, per-class AP50, PR curves).

The heavy lifting is done by pycocotools, or by faster-coco-eval (a C++ port with the same numbers)
when the config asks for it. We only translate our per-image numpy arrays into in-memory COCO
objects, silence the libraries' prints, and format the summary ourselves.

    result = evaluate_detections(gt_boxes, gt_labels, gt_ignore, image_sizes,
                                 det_boxes, det_scores, det_labels, class_names)
    print(result.table); result.map, result.map50
"""

import contextlib
import io
import math
from dataclasses import dataclass, field

import numpy as np

from .config_checks import EVAL_BACKENDS

# The 12 numbers COCOeval.summarize() produces, in its order: (AP or AR, IoU, area, maxDets).
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds
SUMMARY_LINES = [
    ("AP", None, "all", 100), ("AP", 0.5, "all", 100), ("AP", 0.75, "all", 100),
    ("AP", None, "small", 100), ("AP", None, "medium", 100), ("AP", None, "large", 100),
    ("AR", None, "all", 1), ("AR", None, "all", 10), ("AR", None, "all", 100),
    ("AR", None, "small", 100), ("AR", None, "medium", 100), ("AR", None, "large", 100),
]


@dataclass
class EvalResult:
    stats: list[float]                 # the 12 COCO numbers; -1 means "no GT in that area range"
    map: float                         # AP@[.5:.95], area=all, maxDets=100
    map50: float                       # AP@.5
    per_class_ap50: dict[str, float]   # class name -> AP@.5 (nan for classes without GT)
    table: str                         # COCO 12-line summary + per-class AP50 table
    precision: np.ndarray              # (T, R, K, A, M) from COCOeval; -1 where a class has no GT
    iou_thresholds: np.ndarray = field(default_factory=lambda: np.linspace(0.5, 0.95, 10))  # (T,)
    recall_thresholds: np.ndarray = field(default_factory=lambda: np.linspace(0.0, 1.0, 101))  # (R,)


# ---------------------------------------------------------------------------------------------
# public API


def evaluate_detections(gt_boxes, gt_labels, gt_ignore, image_sizes,
                        det_boxes, det_scores, det_labels, class_names,
                        backend: str = "pycocotools") -> EvalResult:
    """COCO bbox evaluation of per-image detections (xyxy boxes in original-image pixels)."""
    COCO, COCOeval = _load_backend(backend)
    num_classes = len(class_names)
    gt_boxes, gt_labels, gt_ignore = _check_gt(gt_boxes, gt_labels, gt_ignore, image_sizes, num_classes)
    det_boxes, det_scores, det_labels = _check_dets(det_boxes, det_scores, det_labels, len(gt_boxes), num_classes)

    image_ids = list(range(1, len(gt_boxes) + 1))  # COCO ids start at 1; 0 reads as "unmatched" inside COCOeval
    gt_dataset = _gt_dataset(image_ids, gt_boxes, gt_labels, gt_ignore, image_sizes, class_names)
    det_dataset = _det_dataset(gt_dataset, coco_results_json(image_ids, det_boxes, det_scores, det_labels))

    # pycocotools prints progress on stdout; the caller gets our own table instead.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_from_dict(COCO, gt_dataset)
        coco_det = _coco_from_dict(COCO, det_dataset)
        evaluator = COCOeval(coco_gt, coco_det, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    stats = [float(s) for s in evaluator.stats[:12]]
    precision = np.array(evaluator.eval["precision"], dtype=np.float64)  # (T, R, K, A, M)
    iou_thresholds = np.array(evaluator.params.iouThrs, dtype=np.float64)
    per_class_ap50 = _per_class_ap(precision, iou_thresholds, class_names, iou=0.5)
    num_gt = np.bincount(np.concatenate([l[~ig] for l, ig in zip(gt_labels, gt_ignore)] + [np.zeros(0, int)]),
                         minlength=num_classes)
    table = format_summary(stats) + "\n" + _format_per_class(per_class_ap50, num_gt)
    return EvalResult(
        stats=stats,
        # -1 only happens when there is no (non-ignored) GT at all; 0 keeps "best mAP" comparisons simple.
        map=max(stats[0], 0.0),
        map50=max(stats[1], 0.0),
        per_class_ap50=per_class_ap50,
        table=table,
        precision=precision,
        iou_thresholds=iou_thresholds,
        recall_thresholds=np.array(evaluator.params.recThrs, dtype=np.float64),
    )


def pr_curve(result: EvalResult, class_index: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at COCO's 101 recall points for one class (area=all, maxDets=100).

    Returns (recall, precision), both (101,). Precision is nan everywhere if the class has no GT.
    """
    t = iou_index(result.iou_thresholds, iou)
    precision = result.precision[t, :, class_index, 0, -1].copy()  # (R,)
    precision[precision < 0] = np.nan
    return result.recall_thresholds.copy(), precision


def coco_results_json(image_ids, det_boxes, det_scores, det_labels) -> list[dict]:
    """Detections in the COCO results format: xywh boxes, category_id = label + 1."""
    results = []
    for image_id, boxes, scores, labels in zip(image_ids, det_boxes, det_scores, det_labels):
        xywh = _xyxy_to_xywh(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        for box, score, label in zip(xywh.tolist(), np.asarray(scores).tolist(), np.asarray(labels).tolist()):
            results.append({"image_id": int(image_id), "category_id": int(label) + 1,
                            "bbox": box, "score": float(score)})
    return results


def match_detections(det_boxes, det_labels, gt_boxes, gt_labels, iou_thres=0.5):
    """Greedy matching of one image's detections, as VOC and COCO count them: detections in the order given (best
    score first), each is a true positive when it overlaps a not yet matched GT of its class by IoU >= iou_thres
    (the free GT it overlaps most), otherwise a false positive. COCOeval does the same inside pycocotools but does
    not expose it. boxes xyxy (D, 4), (G, 4). Returns (is_true_positive (D,) bool, is_missed (G,) bool)."""
    det_boxes, gt_boxes = _as_boxes(det_boxes, "det_boxes"), _as_boxes(gt_boxes, "gt_boxes")
    iou = box_iou_numpy(det_boxes, gt_boxes)
    iou[np.asarray(det_labels).reshape(-1, 1) != np.asarray(gt_labels).reshape(1, -1)] = 0.0  # same class only
    is_tp, matched = np.zeros(len(det_boxes), bool), np.zeros(len(gt_boxes), bool)
    for d in range(len(det_boxes)):
        free = np.where(matched, -1.0, iou[d])
        if free.size and free.max() >= iou_thres:
            is_tp[d] = matched[free.argmax()] = True
    return is_tp, ~matched


def ranked_ap(is_tp, num_gt):
    """AP of one class from its detections ranked best first (is_tp (D,) bool) and its number of GTs, as COCO
    computes it: precision and recall after each detection, precision made non-increasing from the right (the
    best precision at this recall or any higher one), read at the 101 RECALL_POINTS (0 where recall is never
    reached), averaged. Returns (AP, precision (D,), recall (D,), interpolated (101,))."""
    is_tp = np.asarray(is_tp, bool)
    tp, count = np.cumsum(is_tp), np.arange(1, len(is_tp) + 1)
    interpolated = interpolated_precision(tp, count, max(num_gt, 1))
    return float(interpolated.mean()), tp / count, tp / max(num_gt, 1), interpolated


def interpolated_precision(tp_cum, det_count, num_gt):
    """COCO's PR curve: precision made non-increasing in recall (its upper envelope), then read at the 101
    RECALL_POINTS (0 beyond the highest recall reached). tp_cum, det_count: (D,) after each detection."""
    precision = tp_cum / np.maximum(det_count, 1)
    recall = tp_cum / num_gt
    envelope = np.append(np.maximum.accumulate(precision[::-1])[::-1], 0.0)  # 0 past the last detection
    at = np.searchsorted(recall, RECALL_POINTS, side="left")  # first detection reaching each recall, or D
    return envelope[at]


def intersection_area(boxes1, boxes2):
    """Pairwise intersection areas of xyxy boxes (N, 4) x (M, 4) -> (N, M), numpy."""
    low = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    high = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    return np.clip(high - low, 0, None).prod(-1)


def box_iou_numpy(boxes1, boxes2):
    """Pairwise IoU of xyxy boxes (N, 4) x (M, 4) -> (N, M), numpy (the metrics stay torch-free); 0 for two
    empty boxes."""
    boxes1, boxes2 = np.asarray(boxes1, np.float64).reshape(-1, 4), np.asarray(boxes2, np.float64).reshape(-1, 4)
    inter = intersection_area(boxes1, boxes2)
    area1, area2 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1), (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    return inter / np.maximum(area1[:, None] + area2[None] - inter, 1e-12)


def format_summary(stats) -> str:
    """The 12-line text COCOeval.summarize() prints, rebuilt from its stats."""
    lines = []
    for (kind, iou, area, max_dets), value in zip(SUMMARY_LINES, stats):
        title = "Average Precision" if kind == "AP" else "Average Recall"
        iou_text = "0.50:0.95" if iou is None else f"{iou:0.2f}"
        lines.append(f" {title:<18} ({kind}) @[ IoU={iou_text:<9} | area={area:>6s} | maxDets={max_dets:>3d} ]"
                     f" = {value:0.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# building the in-memory COCO datasets


def _gt_dataset(image_ids, gt_boxes, gt_labels, gt_ignore, image_sizes, class_names) -> dict:
    images = [{"id": i, "width": int(w), "height": int(h)} for i, (w, h) in zip(image_ids, image_sizes)]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    annotations = []
    for image_id, boxes, labels, ignore in zip(image_ids, gt_boxes, gt_labels, gt_ignore):
        for (x, y, w, h), label, ignored in zip(_xyxy_to_xywh(boxes).tolist(), labels.tolist(), ignore.tolist()):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                "bbox": [x, y, w, h], "area": w * h,
                # pycocotools has no per-box "ignore" input: it overwrites any 'ignore' key with iscrowd.
                # A crowd GT is never a miss, and a detection matched to it is neither TP nor FP -
                # exactly how VOC treats 'difficult'. (Crowd matching uses intersection / detection
                # area instead of IoU, so a detection lying inside the ignored box is also forgiven.)
                "iscrowd": int(ignored),
            })
    return {"images": images, "categories": categories, "annotations": annotations}


def _det_dataset(gt_dataset: dict, results: list[dict]) -> dict:
    # What COCO.loadRes does for boxes, done by hand: loadRes in pycocotools crashes on an empty list.
    annotations = []
    for k, det in enumerate(results):
        w, h = det["bbox"][2], det["bbox"][3]
        annotations.append({**det, "id": k + 1, "area": w * h, "iscrowd": 0})
    return {"images": gt_dataset["images"], "categories": gt_dataset["categories"], "annotations": annotations}


def _coco_from_dict(COCO, dataset: dict):
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _load_backend(backend: str):
    if backend == "pycocotools":
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except ImportError as e:
            raise ImportError("metrics backend 'pycocotools' is not installed: pip install pycocotools") from e
        return COCO, COCOeval
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as e:
            raise ImportError(
                "metrics backend 'faster_coco_eval' is not installed: pip install faster-coco-eval") from e
        return COCO, COCOeval_faster
    raise ValueError(f"unknown metrics backend {backend!r}; expected one of {EVAL_BACKENDS}")


# ---------------------------------------------------------------------------------------------
# helpers


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)  # float64 so w, h match a json round trip exactly
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # (N, 4)


def iou_index(iou_thresholds: np.ndarray, iou: float) -> int:
    hits = np.flatnonzero(np.isclose(iou_thresholds, iou))
    if len(hits) == 0:
        raise ValueError(f"iou={iou} is not one of the evaluated thresholds {np.round(iou_thresholds, 2).tolist()}")
    return int(hits[0])


def _per_class_ap(precision, iou_thresholds, class_names, iou=0.5) -> dict[str, float]:
    t = iou_index(iou_thresholds, iou)
    per_class = {}
    for k, name in enumerate(class_names):
        p = precision[t, :, k, 0, -1]  # (R,) area=all, maxDets=100
        per_class[name] = float(p.mean()) if (p > -1).all() else math.nan  # -1 everywhere <=> no GT
    return per_class


def _format_per_class(per_class_ap50: dict[str, float], num_gt: np.ndarray) -> str:
    width = max([len("class")] + [len(name) for name in per_class_ap50])
    lines = [f"{'class':<{width}}  {'#gt':>6}  {'AP50':>6}"]
    for (name, ap), n in zip(per_class_ap50.items(), num_gt.tolist()):
        ap_text = "   n/a" if math.isnan(ap) else f"{ap:6.3f}"
        lines.append(f"{name:<{width}}  {n:>6d}  {ap_text}")
    return "\n".join(lines)


def _check_gt(gt_boxes, gt_labels, gt_ignore, image_sizes, num_classes):
    n = len(gt_boxes)
    if not (len(gt_labels) == len(gt_ignore) == len(image_sizes) == n):
        raise ValueError(f"ground truth lists differ in length: gt_boxes={n}, gt_labels={len(gt_labels)}, "
                         f"gt_ignore={len(gt_ignore)}, image_sizes={len(image_sizes)}")
    boxes = [_as_boxes(b, f"gt_boxes[{i}]") for i, b in enumerate(gt_boxes)]
    labels = [_as_labels(l, len(b), num_classes, f"gt_labels[{i}]") for i, (l, b) in enumerate(zip(gt_labels, boxes))]
    ignore = []
    for i, (ig, b) in enumerate(zip(gt_ignore, boxes)):
        ig = np.asarray(ig, dtype=bool).reshape(-1)
        if len(ig) != len(b):
            raise ValueError(f"gt_ignore[{i}] has {len(ig)} entries but gt_boxes[{i}] has {len(b)} boxes")
        ignore.append(ig)
    return boxes, labels, ignore


def _check_dets(det_boxes, det_scores, det_labels, num_images, num_classes):
    if not (len(det_boxes) == len(det_scores) == len(det_labels) == num_images):
        raise ValueError(f"detection lists must have one entry per image ({num_images}): det_boxes={len(det_boxes)}, "
                         f"det_scores={len(det_scores)}, det_labels={len(det_labels)}")
    boxes = [_as_boxes(b, f"det_boxes[{i}]") for i, b in enumerate(det_boxes)]
    labels = [_as_labels(l, len(b), num_classes, f"det_labels[{i}]") for i, (l, b) in enumerate(zip(det_labels, boxes))]
    scores = []
    for i, (s, b) in enumerate(zip(det_scores, boxes)):
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if len(s) != len(b) or not np.isfinite(s).all():
            raise ValueError(f"det_scores[{i}] must hold {len(b)} finite scores, got {s.tolist()[:5]}...")
        scores.append(s)
    return boxes, scores, labels


def _as_boxes(boxes, what: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4) xyxy, got {boxes.shape}")
    if not np.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError(f"{what} holds non-finite boxes or boxes with x2 < x1 / y2 < y1 (expected xyxy)")
    return boxes


def _as_labels(labels, count: int, num_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != count:
        raise ValueError(f"{what} has {len(labels)} labels for {count} boxes")
    if count and (not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels))):
        raise ValueError(f"{what} must hold integer class indices, got {labels[:5].tolist()}")
    labels = labels.astype(np.int64)
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what} has class index outside [0, {num_classes}): {sorted(set(labels.tolist()))[:10]}")
    return labels
