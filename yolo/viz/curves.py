"""Evaluation pictures: the PR curve, F1 / precision / recall against confidence, the confusion matrix, and the
IoU histogram of the matched boxes per object size.

Each function takes the numbers of yolo/metrics_curves.py (or yolo/box_quality.py) and returns a matplotlib figure
(the caller saves it and hands it to TensorBoard); nothing is computed here beyond means and medians.
"""
import warnings

import matplotlib.pyplot as plt
import numpy as np

from ..box_quality import SIZES, size_names
from ..metrics import RECALL_POINTS
from ..metrics_curves import normalize_rows

MAX_LEGEND_CLASSES = 20  # more classes than this: one line each still, but only the mean in the legend
MEAN_STYLE = dict(color="tab:blue", lw=3)
AXIS_NAME = {"f1": "F1", "precision": "precision", "recall": "recall"}


def _class_lines(ax, x, per_class, class_names, has_gt, labels=None):
    """One thin line per class with GT, labelled when there are few classes."""
    few = len(class_names) <= MAX_LEGEND_CLASSES
    for k, name in enumerate(class_names):
        if has_gt[k]:
            label = (labels[k] if labels else name) if few else None
            ax.plot(x, per_class[k], lw=1, alpha=0.8 if few else 0.3, color=None if few else "grey", label=label)


def pr_figure(curves, class_names, title=""):
    """Interpolated precision against recall at IoU 0.5 per class and the mean over classes; AP50 in the legend."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    has_gt = curves.has_gt
    labels = [f"{name} {ap:.3f}" for name, ap in zip(class_names, curves.ap50)]
    _class_lines(ax, RECALL_POINTS, curves.pr_precision, class_names, has_gt, labels)
    if has_gt.any():
        ax.plot(RECALL_POINTS, curves.pr_precision[has_gt].mean(axis=0), **MEAN_STYLE,
                label=f"all classes {np.mean(curves.ap50[has_gt]):.3f} mAP@0.5")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=title or "precision-recall at IoU 0.5 (COCO 101-point interpolation)")
    _finish(ax, "lower left")
    return fig


def confidence_figure(curves, class_names, kind, title=""):
    """kind = "f1" | "precision" | "recall" against the confidence threshold, per class and the mean; the
    confidence of the best mean F1 marked (P and R of per_class.csv are read there)."""
    values = getattr(curves, kind)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    has_gt = curves.has_gt
    _class_lines(ax, curves.confidence, values, class_names, has_gt)
    best = curves.best_conf
    if has_gt.any():
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: no detection of any class left
            mean = np.nanmean(values[has_gt], axis=0)  # over the classes that still have detections
        ax.plot(curves.confidence, mean, **MEAN_STYLE,
                label=f"all classes: {mean[curves.best_index]:.2f} at {best:.3f}")
    ax.axvline(best, color="black", ls="--", lw=1, label=f"best F1 confidence {best:.3f}")
    ax.set(xlabel="confidence threshold", ylabel=AXIS_NAME[kind],
           xlim=(0, 1), ylim=(0, 1.02), title=title or f"{AXIS_NAME[kind]} against confidence at IoU 0.5")
    # where the curves usually are not: F1 peaks in the middle, precision rises and recall falls with confidence
    _finish(ax, {"f1": "upper right", "precision": "lower right", "recall": "upper right"}[kind])
    return fig


def confusion_figure(matrix, class_names, conf, iou, title=""):
    """The (C+1, C+1) matrix (rows true, columns predicted, last = background): normalised per true class on the
    left, counts on the right."""
    names = list(class_names) + ["background"]
    size = min(4 + 0.45 * len(names), 16)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), layout="constrained")
    annotate = len(names) <= 30
    for ax, values, what in zip(axes, (normalize_rows(matrix), matrix), ("normalised per true class", "counts")):
        # no colour bar: every non-zero cell carries its number (up to 30 classes)
        ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if what != "counts" else max(values.max(), 1))
        if annotate:
            high = values.max() / 2 if values.max() else 1
            for (i, j), v in np.ndenumerate(values):
                if v:
                    ax.text(j, i, f"{v:.2f}" if what != "counts" else f"{int(v)}", ha="center", va="center",
                            fontsize=8, color="white" if v > high else "black")
        ticks = range(len(names))
        fontsize = max(4, 9 - len(names) // 10)
        ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, names, fontsize=fontsize)
        ax.set(xlabel="predicted", ylabel="true", title=what)
    fig.suptitle(title or f"confusion matrix: detections with confidence >= {conf:g}, matched at IoU >= {iou:g}")
    return fig


def iou_histogram_figure(ious, areas, conf=None, bins=20, title=""):
    """Histogram of the matched IoUs (yolo.box_quality.matched_ious), one per COCO size, 0.5 to 1 in `bins` bins;
    each size's count and median IoU in its legend; sizes without a match are left out. Mass near 0.5-0.7: objects
    found, boxes loosely placed (what mAP@0.5:0.95 punishes and mAP@0.5 does not see)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ious, names = np.asarray(ious, np.float64), size_names(areas)
    edges = np.linspace(0.5, 1.0, bins + 1)
    for size, colour in zip(SIZES, ("tab:red", "tab:orange", "tab:blue")):
        picked = ious[names == size]
        if len(picked):
            ax.hist(np.clip(picked, 0.5, 1.0), bins=edges, histtype="step", lw=2, color=colour,
                    label=f"{size}: {len(picked)} matched, median IoU {np.median(picked):.3f}")
    at = "" if conf is None else f" (confidence >= {conf:.3f})"
    ax.set(xlabel="IoU with the matched GT", ylabel="true positives", xlim=(0.5, 1.0),
           title=title or f"how tightly found boxes sit{at}")
    _finish(ax, "upper left")
    return fig


def _finish(ax, legend_loc):
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=legend_loc, fontsize=8)
    # fixed margins: a layout engine would draw the figure once more just to measure it (about 40% slower)
    ax.figure.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.93)
