"""How detections are counted, as figures (notebook 04): non-maximum suppression step by step, average precision
worked through a handful of ranked detections, and mAP@0.5:0.95 as the mean of AP over ten IoU thresholds.

The numbers come from the project's metric code (yolo.metrics.ranked_ap, COCOeval's precision table in EvalResult)
and torchvision's NMS, which the tests compare these steps with.
"""
import numpy as np
import torch

from ..boxes import box_iou
from ..metrics import ranked_ap


def nms_steps(boxes, scores, iou_thres):
    """Greedy NMS written out: repeatedly keep the best remaining box and drop every remaining box that overlaps it by
    IoU > iou_thres. Returns a list of steps {'keep': index, 'dropped': [(index, IoU with the kept box)], 'left':
    indices still in play afterwards}; the kept indices equal torchvision.ops.nms (tests). boxes (N, 4) xyxy."""
    boxes, scores = torch.as_tensor(boxes, dtype=torch.float64), torch.as_tensor(scores, dtype=torch.float64)
    iou = box_iou(boxes, boxes)
    remaining = torch.argsort(scores, descending=True, stable=True).tolist()
    steps = []
    while remaining:
        best, rest = remaining[0], remaining[1:]
        dropped = [(i, float(iou[best, i])) for i in rest if iou[best, i] > iou_thres]
        remaining = [i for i in rest if iou[best, i] <= iou_thres]
        steps.append({"keep": best, "dropped": dropped, "left": list(remaining)})
    return steps


def draw_nms_steps(image, boxes, scores, iou_thres, max_panels=4):
    """The cluster before NMS, then one panel per step (kept box solid green, boxes it drops dashed red with their
    IoU, boxes still in play grey), then the result. image: (H, W, 3) uint8; boxes xyxy in its pixels.
    Returns (figure, steps)."""
    import matplotlib.pyplot as plt

    boxes = np.asarray(boxes, np.float64)
    steps = nms_steps(boxes, scores, iou_thres)
    shown = steps[:max_panels]
    fig, axes = plt.subplots(1, len(shown) + 2, figsize=(3.6 * (len(shown) + 2), 4.2))
    x1, y1 = boxes[:, :2].min(0) - 12
    x2, y2 = boxes[:, 2:].max(0) + 12
    for ax in axes:
        ax.imshow(image)
        ax.set(xlim=(x1, x2), ylim=(y2, y1), xticks=[], yticks=[])
    for i, box in enumerate(boxes):
        _outline(axes[0], box, "yellow", f"{scores[i]:.2f}")
    axes[0].set_title(f"before NMS: {len(boxes)} boxes (score)", fontsize=10)
    kept_so_far = []
    for n, (ax, step) in enumerate(zip(axes[1:], shown), 1):
        for i in kept_so_far:
            _outline(ax, boxes[i], "lime", linewidth=1.0)
        for i, overlap in step["dropped"]:
            _outline(ax, boxes[i], "red", f"IoU {overlap:.2f}", style="--")
        for i in step["left"]:
            _outline(ax, boxes[i], "0.8", linewidth=0.8)
        _outline(ax, boxes[step["keep"]], "lime", f"keep {scores[step['keep']]:.2f}", linewidth=2.5)
        kept_so_far.append(step["keep"])
        ax.set_title(f"step {n}: keep the best left,\ndrop {len(step['dropped'])} with IoU > {iou_thres}", fontsize=10)
    kept = [s["keep"] for s in steps]
    for i in kept:
        _outline(axes[-1], boxes[i], "lime", f"{scores[i]:.2f}", linewidth=2.0)
    axes[-1].set_title(f"after NMS: {len(kept)} boxes kept", fontsize=10)
    fig.tight_layout()
    return fig, steps


def _outline(ax, box, colour, text=None, style="-", linewidth=1.6):
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = box
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linestyle=style,
                           linewidth=linewidth))
    if text:
        ax.text(x1 + 1, y1 + 1, text, color="black", fontsize=7, va="top",
                bbox=dict(facecolor=colour, edgecolor="none", pad=0.6, alpha=0.85))


def draw_toy_ap(is_tp, scores, num_gt):
    """AP of one class worked through a few ranked detections: the table (rank, score, TP / FP, precision, recall
    after it) and the precision-recall points with the envelope COCO reads at 101 recall levels; the AP in the
    title is their mean (yolo.metrics.ranked_ap). Returns (figure, AP)."""
    import matplotlib.pyplot as plt

    order = np.argsort(-np.asarray(scores), kind="stable")
    is_tp, scores = np.asarray(is_tp, bool)[order], np.asarray(scores, np.float64)[order]
    ap, precision, recall, interpolated = ranked_ap(is_tp, num_gt)
    fig, (ax_table, ax) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": (1, 1.25)})
    rows = [[str(k + 1), f"{s:.2f}", "TP" if t else "FP", f"{int(is_tp[:k + 1].sum())}/{k + 1} = {p:.2f}",
             f"{int(is_tp[:k + 1].sum())}/{num_gt} = {r:.2f}"]
            for k, (s, t, p, r) in enumerate(zip(scores, is_tp, precision, recall))]
    table = ax_table.table(cellText=rows, colLabels=["rank", "score", "match", "precision", "recall"], loc="center",
                           cellLoc="center")
    table.scale(1, 1.6)
    for k, t in enumerate(is_tp):
        table[k + 1, 2].set_facecolor("#c8f0c8" if t else "#f6c6c6")
    ax_table.axis("off")
    ax_table.set_title(f"{len(is_tp)} detections of one class, best score first; {num_gt} objects", fontsize=10)
    levels = np.linspace(0, 1, len(interpolated))
    ax.fill_between(levels, interpolated, step="post", alpha=0.2, color="tab:blue")
    ax.step(levels, interpolated, where="post", color="tab:blue",
            label="envelope: best precision at this recall or higher")
    ax.plot(recall, precision, "o--", color="tab:orange", label="after each detection")
    for k, (r, p) in enumerate(zip(recall, precision)):
        ax.annotate(str(k + 1), (r, p), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.05),
           title=f"AP = mean of the envelope at 101 recall levels = {ap:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig, ap


def ap_per_iou_threshold(result):
    """AP of an EvalResult at each of its IoU thresholds (0.5, 0.55, ..., 0.95), averaged over the classes with GT
    as COCO does; the mean of these is result.map (mAP@0.5:0.95). Returns (thresholds (T,), AP (T,))."""
    precision = result.precision[:, :, :, 0, -1]  # (T, R, K): area all, the largest maxDets
    per_class = np.where(precision > -1, precision, np.nan)
    valid = ~np.isnan(per_class).all(1)  # (T, K): classes that have GT
    ap = np.array([np.nanmean(per_class[t][:, valid[t]]) if valid[t].any() else 0.0 for t in range(len(precision))])
    return result.iou_thresholds, ap


def draw_ap_vs_iou(result, title=None):
    """AP against the IoU a detection needs to count, with its mean, mAP@0.5:0.95. Returns the figure."""
    import matplotlib.pyplot as plt

    thresholds, ap = ap_per_iou_threshold(result)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(thresholds, ap, width=0.04, color="tab:blue", alpha=0.75, label="AP at this IoU threshold")
    ax.axhline(ap.mean(), color="tab:red", linestyle="--", label=f"mean = mAP@0.5:0.95 = {ap.mean():.3f}")
    ax.set(xlabel="IoU a detection needs to count as a true positive", ylabel="AP (mean over classes)",
           ylim=(0, 1), xticks=thresholds, title=title or f"mAP@0.5 = {ap[0]:.3f}: the first bar")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
