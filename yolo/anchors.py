"""Anchors: k-means on the training boxes (`python main.py --task anchors`, yolo/tasks/anchors.py) and how well a set
of anchors fits them.

Anchors are matched to objects by shape alone (yolo.boxes.wh_iou: both boxes share a centre), so k-means uses the
distance 1 - IoU between (w, h) pairs as YOLOv2 proposed: with the Euclidean distance large boxes would dominate.
Boxes are measured after letterboxing to img_size, the sizes the network sees before augmentation zooms them.

Two numbers say how well anchors fit a set of boxes:
  mean best IoU   the IoU of each box with its best anchor, averaged (k-means maximises this)
  BPR             best-possible recall: the fraction of boxes whose best anchor reaches match_iou_thres, i.e. that
                  the assignment can match without its fallback (assign_unmatched_to_best)
"""
import numpy as np
import torch

from .boxes import wh_iou


def iou_matrix(wh, anchors) -> np.ndarray:
    """Shape IoU (N, 2) x (K, 2) -> (N, K), numpy in and out."""
    return wh_iou(torch.as_tensor(wh, dtype=torch.float64), torch.as_tensor(anchors, dtype=torch.float64)).numpy()


def anchor_fit(wh, anchors, iou_thres) -> dict:
    """{'mean_best_iou', 'bpr', 'above_per_box'} of anchors (K, 2) -- or the config's per-scale lists -- on boxes
    (N, 2); above_per_box is the mean number of anchors with IoU >= iou_thres per box (more = more positives)."""
    iou = iou_matrix(wh, np.asarray(anchors, dtype=np.float64).reshape(-1, 2))
    best = iou.max(1)
    return {"mean_best_iou": float(best.mean()), "bpr": float((best >= iou_thres).mean()),
            "above_per_box": float((iou >= iou_thres).sum(1).mean())}


def kmeans_anchors(wh, k=9, seed=0, restarts=5, max_iters=300, max_boxes=50_000) -> np.ndarray:
    """k anchors (k, 2), sorted by area, maximising the mean best IoU over the boxes wh (N, 2)."""
    wh = np.asarray(wh, dtype=np.float64)
    wh = wh[(wh > 0).all(1)]
    if len(wh) < k:
        raise ValueError(f"k-means needs at least {k} boxes, got {len(wh)}")
    rng = np.random.default_rng(seed)
    if len(wh) > max_boxes:  # a random subset: the centroids of 50k boxes are those of 1M
        wh = wh[rng.choice(len(wh), max_boxes, replace=False)]
    runs = [_kmeans_once(wh, k, rng, max_iters) for _ in range(restarts)]
    best = max(runs, key=lambda anchors: iou_matrix(wh, anchors).max(1).mean())
    return best[np.argsort(best.prod(1))]


def _kmeans_once(wh, k, rng, max_iters):
    centroids = _kmeans_plus_plus(wh, k, rng)
    assignment = None
    for _ in range(max_iters):
        iou = iou_matrix(wh, centroids)
        new_assignment = iou.argmax(1)
        if assignment is not None and (new_assignment == assignment).all():
            break
        assignment = new_assignment
        for c in range(k):
            members = wh[assignment == c]
            # median, not mean: a few huge boxes would drag a mean away from the shape most members share;
            # an empty cluster restarts at the box that the others fit worst
            centroids[c] = np.median(members, 0) if len(members) else wh[iou.max(1).argmin()]
    return centroids


def _kmeans_plus_plus(wh, k, rng):
    """Initial centroids spread out in the 1 - IoU distance (k-means++)."""
    centroids = [wh[rng.integers(len(wh))]]
    for _ in range(k - 1):
        distance = 1 - iou_matrix(wh, np.array(centroids)).max(1)
        weights = distance ** 2
        probabilities = weights / weights.sum() if weights.sum() > 0 else None
        centroids.append(wh[rng.choice(len(wh), p=probabilities)])
    return np.array(centroids, dtype=np.float64)


def split_into_scales(anchors, num_scales=3) -> list:
    """Anchors sorted by area -> num_scales lists of (w, h) integer pairs, smallest to the stride-8 scale."""
    anchors = np.asarray(anchors)[np.argsort(np.prod(anchors, 1))]
    per_scale = len(anchors) // num_scales
    return [[(max(1, int(round(w))), max(1, int(round(h)))) for w, h in anchors[s * per_scale:(s + 1) * per_scale]]
            for s in range(num_scales)]


def kmeans_scales(wh, anchors_per_scale, num_scales=3, seed=0) -> list:
    """k-means anchors for boxes wh (N, 2), as the config holds them: num_scales lists of (w, h)."""
    return split_into_scales(kmeans_anchors(wh, anchors_per_scale * num_scales, seed=seed), num_scales)


def refit_if_poor(wh, scales, iou_thres, min_bpr, seed=0):
    """Autoanchor (YOLOv5's check before training): when the anchors `scales` reach a best-possible recall below
    min_bpr on the boxes wh (N, 2), k-means anchors replace them -- if they fit better: on boxes no anchor set can
    match, the anchors that were chosen by hand stay. Returns (new scales or None, one line saying why)."""
    old = anchor_fit(wh, scales, iou_thres)
    summary = f"BPR@{iou_thres:g} {old['bpr']:.3f}, mean best IoU {old['mean_best_iou']:.3f}"
    if old["bpr"] >= min_bpr:
        return None, f"anchors kept: {summary} on {len(wh)} training boxes (auto_anchor_bpr {min_bpr:g})"
    try:
        new_scales = kmeans_scales(wh, len(scales[0]), len(scales), seed)
    except ValueError as e:  # too few boxes for k-means
        return None, f"anchors kept: {summary} is below auto_anchor_bpr {min_bpr:g}, but {e}"
    new = anchor_fit(wh, new_scales, iou_thres)
    if (new["bpr"], new["mean_best_iou"]) <= (old["bpr"], old["mean_best_iou"]):
        return None, f"anchors kept: {summary} is below auto_anchor_bpr {min_bpr:g}, but k-means fits no better"
    return new_scales, (f"anchors refit by k-means: {summary} -> BPR {new['bpr']:.3f}, mean best IoU "
                        f"{new['mean_best_iou']:.3f} on {len(wh)} training boxes; new anchors {new_scales}")


def format_anchors(scales, strides=(8, 16, 32)) -> str:
    """The config line to paste."""
    rows = [f"[{', '.join(f'({w}, {h})' for w, h in anchors)}]" for anchors in scales]
    lines = [f"{'        self.anchors = [' if i == 0 else ' ' * 24}{row}{']' if i == len(rows) - 1 else ','}  # stride {s}"
             for i, (row, s) in enumerate(zip(rows, strides))]
    return "\n".join(lines)
