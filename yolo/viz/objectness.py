"""Objectness as figures: what a model's objectness says on each scale (notebook 04), and which cells the loss
leaves out of the objectness term for a GT, YOLOv3's ignore rule (notebook 03; the rule itself: yolo.loss.ignore_mask).
"""
import numpy as np
import torch

from ..boxes import box_iou, cxcywh_to_xyxy
from ..models.head import decode_boxes, encode, make_grid


def objectness_maps(outputs, image_index=0):
    """σ(objectness) of one image on every scale, the most confident anchor of each cell: a list of (H, W) arrays.
    outputs: the model's raw outputs, a list of (B, A, H, W, 5 + C)."""
    return [raw[image_index, ..., 4].float().sigmoid().amax(0).cpu().numpy() for raw in outputs]


def draw_objectness(image, outputs, strides, gt_boxes=None, image_index=0):
    """The image (with its GT boxes xyxy dashed, in input pixels) and one heatmap per scale: σ(objectness) of the
    most confident anchor of every cell, drawn over the image. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    maps = objectness_maps(outputs, image_index)
    height, width = image.shape[:2]
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(4.2 * (len(maps) + 1), 4.6))
    axes[0].imshow(image)
    axes[0].set_title("input, GT boxes dashed", fontsize=10)
    for ax, heat, stride in zip(axes[1:], maps, strides):
        ax.imshow(image, alpha=0.55)
        shown = ax.imshow(heat, extent=(0, width, height, 0), cmap="magma", vmin=0, vmax=1, alpha=0.7,
                          interpolation="nearest")
        ax.set_title(f"stride {stride}: {heat.shape[0]}x{heat.shape[1]} cells, peak {heat.max():.2f}", fontsize=10)
    for ax in axes:
        for x1, y1, x2, y2 in ([] if gt_boxes is None else np.asarray(gt_boxes).reshape(-1, 4)):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linestyle="--",
                                   linewidth=1.2))
        ax.set(xticks=[], yticks=[])
    fig.colorbar(shown, ax=axes.tolist(), fraction=0.015, pad=0.01, label="σ(objectness), best anchor of the cell")
    return fig


def ignored_cells(raw, anchors_wh, stride, reach, gt_row, thres):
    """The ignore rule for one GT, by brute force: decode every anchor of every cell of the GT's image and compare
    its box with the GT. Returns (A, H, W) bool, True where the predicted box overlaps the GT by IoU > thres -- an
    anchor the objectness loss would leave out if it were a negative (positives always count).
    raw: (B, A, H, W, 5 + C) one scale; gt_row: (6,) image index, class, cx, cy, w, h in pixels."""
    image = int(gt_row[0])
    boxes = decode_boxes(raw[image:image + 1].float(), anchors_wh, stride, reach)[0]  # (A, H, W, 4) cx, cy, w, h
    iou = box_iou(cxcywh_to_xyxy(boxes.reshape(-1, 4)), cxcywh_to_xyxy(gt_row[None, 2:6].float()))
    return (iou[:, 0] > thres).view(boxes.shape[:3])


def outputs_predicting(gt_row, decoding, grid_sizes, num_classes):
    """Raw outputs (one image, every scale) in which every anchor of every cell predicts the box of gt_row as closely
    as its reach and its anchor allow (yolo.models.head.encode, logits clipped where the box is out of reach), with
    objectness and classes at 0: the most any cell could overlap that GT, for drawing the ignore rule's extent."""
    outputs = []
    for (h, w), anchors_wh, stride in zip(grid_sizes, decoding.anchors, decoding.strides):
        a = len(anchors_wh)
        raw = torch.zeros(1, a, h, w, 5 + num_classes)
        cell_xy, anchor_wh = make_grid(h, w, raw.device), anchors_wh.float().view(1, a, 1, 1, 2)
        raw[..., :4] = encode(gt_row[2:6].float().expand(1, a, h, w, 4), cell_xy, anchor_wh, stride,
                              decoding.reach_at((h, w)))
        outputs.append(raw)
    return outputs


def draw_ignore_rule(image, outputs, decoding, gt_row, thres, positives=None):
    """One panel per scale: the grid, one GT (solid), the cells with at least one ignored anchor (shaded by how many),
    and the GT's positive anchors (X at their cells). positives: one (gy, gx) array pair per scale, or None.
    Returns (figure, ignored per scale as (A, H, W) bool)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    height, width = image.shape[:2]
    fig, axes = plt.subplots(1, len(outputs), figsize=(4.6 * len(outputs), 4.8))
    ignored = []
    cx, cy, w, h = gt_row[2:6].tolist()
    for s, (ax, raw) in enumerate(zip(axes, outputs)):
        stride, anchors_wh = decoding.strides[s], decoding.anchors[s]
        mask = ignored_cells(raw, anchors_wh, stride, decoding.reach_at(raw.shape[2:4]), gt_row, thres)
        ignored.append(mask)
        count = mask.sum(0).numpy()
        ax.imshow(image, alpha=0.6)
        ax.imshow(np.ma.masked_equal(count, 0), extent=(0, width, height, 0), cmap="Reds", vmin=0,
                  vmax=len(anchors_wh), alpha=0.75, interpolation="nearest")
        ax.vlines(np.arange(0, width + 1, stride), 0, height, colors="white", linewidths=0.4, alpha=0.5)
        ax.hlines(np.arange(0, height + 1, stride), 0, width, colors="white", linewidths=0.4, alpha=0.5)
        ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, edgecolor="tab:blue", linewidth=2.2))
        if positives is not None and len(positives[s][0]):
            gy, gx = positives[s]
            ax.scatter((np.asarray(gx) + 0.5) * stride, (np.asarray(gy) + 0.5) * stride, marker="X", s=60,
                       color="lime", edgecolors="black", linewidths=0.6, zorder=3)
        n_pos = 0 if positives is None else len(positives[s][0])
        ax.set_title(f"stride {stride}: {int(mask.sum())} anchors ignored in {int((count > 0).sum())} cells, "
                     f"{n_pos} positives", fontsize=9)
        ax.set(xlim=(0, width), ylim=(height, 0), xticks=[], yticks=[])
    handles = [Rectangle((0, 0), 1, 1, color="tab:red", alpha=0.6, label="ignored (darker: more anchors)"),
               plt.Line2D([], [], marker="X", color="lime", markeredgecolor="black", linestyle="none",
                          label="positive anchor of this GT"),
               plt.Line2D([], [], color="tab:blue", linewidth=2.2, label="the GT")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig, ignored
