"""Box geometry as figures (notebooks 02 and 03): IoU and the centred "shape IoU" of anchor matching, how well anchors
fit the boxes of a dataset, and one prediction decoded on its grid.

Every number drawn comes from the project's own functions (yolo.boxes, yolo.anchors, yolo.models.head.decode), so the
pictures show what the code does.
"""
import numpy as np
import torch

from ..anchors import anchor_fit
from ..boxes import box_iou, wh_iou
from ..models.head import decode, reach_in_cells


def iou_parts(box_a, box_b):
    """Intersection, union and IoU of two xyxy boxes (4,), with the intersection box (None when they do not
    overlap): IoU = |A ∩ B| / |A ∪ B|, |A ∪ B| = |A| + |B| - |A ∩ B|."""
    a, b = np.asarray(box_a, np.float64), np.asarray(box_b, np.float64)
    low, high = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.clip(high - low, 0, None).prod())
    union = float((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter)
    overlap = np.concatenate((low, high)) if inter > 0 else None
    return {"inter": inter, "union": union, "iou": inter / union, "overlap": overlap}


def centred(box, centre):
    """The xyxy box of the same size moved to centre (cx, cy)."""
    box = np.asarray(box, np.float64)
    half = (box[2:] - box[:2]) / 2
    return np.concatenate((np.asarray(centre) - half, np.asarray(centre) + half))


def draw_iou_geometry(gt_box=(40, 40, 140, 110), other_box=(100, 70, 170, 180)):
    """Three panels: IoU of two boxes where they are; the same two boxes centred on one point, the "shape IoU"
    (yolo.boxes.wh_iou) that matches anchors to GTs; and both as the second box slides horizontally.
    Boxes xyxy in pixels. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    gt_box, other_box = np.asarray(gt_box, np.float64), np.asarray(other_box, np.float64)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    where = iou_parts(gt_box, other_box)
    centre = (gt_box[:2] + gt_box[2:]) / 2
    shape = iou_parts(gt_box, centred(other_box, centre))
    size = lambda box: box[2:] - box[:2]  # noqa: E731
    shape_iou = float(wh_iou(torch.tensor(size(gt_box))[None], torch.tensor(size(other_box))[None]))
    for ax, parts, box, title in ((axes[0], where, other_box, "IoU where the boxes are"),
                                  (axes[1], shape, centred(other_box, centre), "shape IoU: both centred on one point")):
        for b, colour, name in ((gt_box, "tab:blue", "A"), (box, "tab:orange", "B")):
            ax.add_patch(Rectangle(b[:2], *size(b), fill=False, edgecolor=colour, linewidth=2.5))
            corner = (b[0] + 3, b[1] + 3) if name == "A" else (b[0] + 3, b[3] - 3)  # A's label top, B's bottom
            ax.text(*corner, f"{name} {size(b)[0]:.0f}x{size(b)[1]:.0f}", color=colour, fontsize=10, weight="bold",
                    va="top" if name == "A" else "bottom")
        if parts["overlap"] is not None:
            o = parts["overlap"]
            ax.add_patch(Rectangle(o[:2], *size(o), facecolor="tab:green", alpha=0.45, hatch="//"))
        ax.set_title(f"{title}\nIoU = |A∩B| / |A∪B| = {parts['inter']:.0f} / {parts['union']:.0f} = "
                     f"{parts['iou']:.3f}", fontsize=10)
        ax.set(xlim=(0, 200), ylim=(200, 0), aspect="equal")
        ax.grid(alpha=0.2)
    axes[1].plot(*centre, "k+", markersize=12)
    axes[1].text(5, 195, f"wh_iou(A, B) = {shape_iou:.3f}: sizes only", fontsize=9)
    # slide B along the line through its centre and A's: step 0 is where B is, step 1 centres it on A
    steps = np.linspace(-1.0, 3.0, 401)
    pull = np.tile(centre - (other_box[:2] + other_box[2:]) / 2, 2)
    moved = other_box[None] + steps[:, None] * pull[None]
    ious = box_iou(torch.tensor(moved), torch.tensor(gt_box)[None])[:, 0].numpy()
    axes[2].plot(steps, ious, label="IoU of A and B moved towards A's centre")
    axes[2].axhline(shape_iou, color="tab:red", linestyle="--", label="shape IoU (the best any position gives)")
    axes[2].axvline(0, color="grey", linewidth=0.8)
    axes[2].axvline(1, color="grey", linewidth=0.8, linestyle=":")
    axes[2].set(xlabel="position of B (0: where it is, 1: centred on A)", ylabel="IoU", ylim=(0, 1.02),
                title="IoU peaks at the shape IoU when the centres meet")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def fit_curves(wh, anchor_sets, thresholds):
    """{name: best-possible recall at each threshold} for named anchor sets (K, 2) on boxes wh (N, 2): the share of
    boxes whose best anchor has shape IoU >= the threshold (yolo.anchors.anchor_fit's 'bpr')."""
    return {name: np.array([anchor_fit(wh, anchors, t)["bpr"] for t in thresholds])
            for name, anchors in anchor_sets.items()}


def draw_anchor_fit(wh, anchor_sets, labels=None, class_names=None, iou_thres=0.3):
    """Three panels: every box's (w, h) with each anchor set on top; the best-possible recall (BPR) of each set
    against match_iou_thres; the aspect ratio w / h of the boxes per class.
    wh: (N, 2) letterboxed box sizes; anchor_sets: {name: (K, 2)}; labels: (N,) class of each box. Returns the figure."""
    import matplotlib.pyplot as plt

    wh = np.asarray(wh, np.float64)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    axes[0].scatter(wh[:, 0], wh[:, 1], s=4, alpha=0.25, color="grey", label=f"{len(wh)} boxes")
    markers = ("X", "o", "s", "D")
    for (name, anchors), marker in zip(anchor_sets.items(), markers):
        anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
        fit = anchor_fit(wh, anchors, iou_thres)
        axes[0].scatter(anchors[:, 0], anchors[:, 1], s=70, marker=marker, edgecolors="black",
                        label=f"{name}: mean best IoU {fit['mean_best_iou']:.3f}, BPR {fit['bpr']:.3f}")
    low, top = wh.min() * 0.8, wh.max() * 1.3
    axes[0].plot([low, top], [low, top], color="black", linewidth=0.8, linestyle=":", label="w = h")
    axes[0].set(xscale="log", yscale="log", xlabel="box width (px, letterboxed)", ylabel="box height (px)",
                title="box sizes and anchors")
    axes[0].legend(fontsize=7, loc="upper left")
    thresholds = np.round(np.arange(0.05, 0.951, 0.025), 3)
    for name, bpr in fit_curves(wh, {n: np.asarray(a).reshape(-1, 2) for n, a in anchor_sets.items()},
                                thresholds).items():
        axes[1].plot(thresholds, bpr, label=name)
    axes[1].axvline(iou_thres, color="grey", linestyle="--", label=f"match_iou_thres {iou_thres}")
    axes[1].set(xlabel="IoU threshold", ylabel="share of boxes", ylim=(0, 1.02),
                title="best-possible recall: best anchor's shape IoU >= threshold")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    ratio = wh[:, 0] / wh[:, 1]
    bins = np.linspace(max(ratio.min(), 0.1) * 0.97, min(ratio.max(), 10) * 1.03, 41)
    groups = [(class_names[k] if class_names else str(k), labels == k) for k in np.unique(labels)] \
        if labels is not None else [("all", np.ones(len(wh), bool))]
    axes[2].hist([ratio[mask] for _, mask in groups], bins=bins, stacked=True, label=[n for n, _ in groups])
    axes[2].set(xlabel="w / h", ylabel="boxes", title="aspect ratio of the boxes (1: square)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def decoded_prediction(logits, cell_xy, anchor_wh, stride, reach):
    """One prediction through yolo.models.head.decode: logits (4,) = tx, ty, tw, th at cell (x, y) with an anchor
    (w, h) px. Returns {'box': cx, cy, w, h px, 'window': xyxy px where the centre can land, 'max_box': the size at
    the logits' limit, 4x the anchor}."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    cell, anchor = torch.as_tensor(cell_xy, dtype=torch.float64), torch.as_tensor(anchor_wh, dtype=torch.float64)
    box = decode(logits, cell, anchor, stride, reach).numpy()
    lowest = decode(torch.full((4,), -1e3, dtype=torch.float64), cell, anchor, stride, reach).numpy()
    highest = decode(torch.full((4,), 1e3, dtype=torch.float64), cell, anchor, stride, reach).numpy()
    return {"box": box, "window": np.concatenate((lowest[:2], highest[:2])), "max_wh": highest[2:]}


def draw_decoding(ax, logits, cell_xy, anchor_wh, stride, reach, grid_hw, title=None, view_cells=7):
    """One prediction on its grid: the cell (filled), its anchor box centred in it (dashed), the window of centres
    the reach allows (shaded), the decoded box (solid) and its centre. reach: cells, as model.decoding.reach."""
    from matplotlib.patches import Rectangle

    reach_cells = reach_in_cells(reach, grid_hw)
    found = decoded_prediction(logits, cell_xy, anchor_wh, stride, reach_cells)
    (gx, gy), (aw, ah) = cell_xy, anchor_wh
    cx, cy, w, h = found["box"]
    half = view_cells / 2 * stride
    centre = ((gx + 0.5) * stride, (gy + 0.5) * stride)
    lines = np.arange(0, max(grid_hw) + 1) * stride
    ax.vlines(lines, 0, grid_hw[0] * stride, colors="0.75", linewidth=0.6)
    ax.hlines(lines, 0, grid_hw[1] * stride, colors="0.75", linewidth=0.6)
    x1, y1, x2, y2 = found["window"]
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, facecolor="tab:green", alpha=0.15, edgecolor="tab:green",
                           label=f"where the centre can land: ±{reach_cells:g} cells"))
    ax.add_patch(Rectangle((gx * stride, gy * stride), stride, stride, facecolor="tab:blue", alpha=0.35,
                           label=f"cell ({gx}, {gy})"))
    ax.add_patch(Rectangle((centre[0] - aw / 2, centre[1] - ah / 2), aw, ah, fill=False, edgecolor="tab:blue",
                           linestyle="--", linewidth=1.8, label=f"anchor {aw:g}x{ah:g} at the cell centre"))
    ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, edgecolor="tab:red", linewidth=2.2,
                           label=f"decoded box {w:.0f}x{h:.0f} at ({cx:.0f}, {cy:.0f})"))
    ax.annotate("", (cx, cy), centre, arrowprops=dict(arrowstyle="->", color="tab:red"))
    ax.plot(cx, cy, "o", color="tab:red")
    ax.set(xlim=(centre[0] - half, centre[0] + half), ylim=(centre[1] + half, centre[1] - half), aspect="equal")
    ax.set_xlabel("input pixels")
    t = ", ".join(f"{v:.1f}" for v in np.asarray(logits, np.float64))
    ax.set_title(title or f"t = ({t}), stride {stride}", fontsize=10)
    ax.legend(loc="lower left", fontsize=7, framealpha=0.85)
    return found

