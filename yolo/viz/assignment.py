"""Label assignment drawn on the grid (python main.py --task debug, notebook 02): for one image and each scale, the
cell grid, the GT boxes and every positive anchor box at its cell."""
import colorsys

import numpy as np


# marker of anchor index k at the cell centre: its digit, so it cannot be mistaken for a class shape (circle, square ...)
ANCHOR_MARKERS = tuple(f"${k}$" for k in range(10))
STRATEGY_NOTES = {
    "single_grid": "single_grid (YOLOv3): only the cell holding the GT centre; each of its anchors whose shape IoU with "
                   "the GT is >= the threshold learns it",
    "nearby_grid": "nearby_grid: the same shape test in the 3x3 cells around the centre cell, so every object gets up "
                   "to 9x the positives",
    "all_grid": "all_grid: every anchor of every cell, by the IoU of the anchor box placed at its cell with the GT box",
}


def gt_colour(index):
    """A distinct colour per GT (matplotlib RGB in 0..1), cycling through 10 well-separated hues."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.1 + 0.03) % 1.0, 0.9, 1.0)
    return r, g, b


def assignment_of_image(targets, scale_assignment, image_index):
    """Rows of one image: (its targets (n, 6), its positives as numpy arrays anchor, gy, gx, gt) with `gt`
    renumbered to index the returned targets."""
    rows = (targets[:, 0] == image_index).nonzero(as_tuple=True)[0]
    local = {int(r): k for k, r in enumerate(rows)}
    mine = (scale_assignment.batch == image_index).nonzero(as_tuple=True)[0]
    gt = np.array([local[int(g)] for g in scale_assignment.gt[mine]], dtype=np.int64)
    positives = {"anchor": scale_assignment.anchor[mine].cpu().numpy(), "gy": scale_assignment.gy[mine].cpu().numpy(),
                 "gx": scale_assignment.gx[mine].cpu().numpy(), "gt": gt}
    return targets[rows].cpu().numpy(), positives


def draw_assignment(ax, image, targets_of_image, positives, anchors_wh, stride, class_names=None, title=None,
                    legend=True, font=6):
    """One scale on a matplotlib Axes: the image, the cell grid of `stride`, the GT boxes (one colour each) and
    every positive anchor drawn as its anchor box centred on its cell, in its GT's colour, with its anchor index as
    the marker at the cell centre. legend: the anchor sizes in a corner; font: size of the GT captions.

    image: (H, W, 3) uint8; targets_of_image: (n, 6) rows (batch, class, cx, cy, w, h) in pixels;
    positives: dict of equal-length arrays anchor, gy, gx, gt (gt indexes targets_of_image);
    anchors_wh: (A, 2) pixels of this scale.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    height, width = image.shape[:2]
    ax.imshow(image)
    ax.vlines(np.arange(0, width + 1, stride), 0, height, colors="white", linewidths=0.4, alpha=0.45)
    ax.hlines(np.arange(0, height + 1, stride), 0, width, colors="white", linewidths=0.4, alpha=0.45)
    anchors_wh = np.asarray(anchors_wh, dtype=np.float64)
    anchor, gt = np.asarray(positives["anchor"], dtype=np.int64), np.asarray(positives["gt"], dtype=np.int64)
    cx, cy = (np.asarray(positives["gx"]) + 0.5) * stride, (np.asarray(positives["gy"]) + 0.5) * stride
    colours = [gt_colour(int(g)) for g in gt]
    if len(gt):  # one collection for all anchor boxes: hundreds of single patches would be slow to draw
        boxes = [Rectangle((x - anchors_wh[a, 0] / 2, y - anchors_wh[a, 1] / 2), *anchors_wh[a])
                 for x, y, a in zip(cx, cy, anchor)]
        ax.add_collection(PatchCollection(boxes, facecolors="none", edgecolors=colours, linewidths=0.7,
                                          linestyles="--", alpha=0.6))
    num_anchors = len(anchors_wh)
    for k in range(num_anchors):
        mine = anchor == k
        if mine.any():  # markers side by side in the cell, so the anchors of one cell do not hide each other
            shift = (k - (num_anchors - 1) / 2) * stride / (num_anchors + 1)
            ax.scatter(cx[mine] + shift, cy[mine], s=font ** 2, marker=ANCHOR_MARKERS[k % len(ANCHOR_MARKERS)],
                       c="white", edgecolors="black", linewidths=0.6, zorder=3)
    for g, (_, label, cx, cy, w, h) in enumerate(targets_of_image):
        colour = gt_colour(g)
        ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, edgecolor=colour, linewidth=2.0))
        name = class_names[int(label)] if class_names else str(int(label))
        ax.text(cx - w / 2, cy - h / 2 - 2, f"{g}:{name}", color="black", fontsize=font,
                bbox=dict(facecolor=colour, edgecolor="none", pad=0.5))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=font + 2)
    if legend:
        ax.legend(handles=anchor_handles(anchors_wh), loc="lower right", fontsize=5, framealpha=0.6)


def anchor_handles(anchors_wh, prefix=""):
    """Legend entries: the marker of each anchor index with its size."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker=ANCHOR_MARKERS[k % len(ANCHOR_MARKERS)], linestyle="none", color="black",
                   markersize=9, label=f"{prefix}anchor {k}: {w:g}x{h:g}") for k, (w, h) in enumerate(anchors_wh)]


def assignment_figure(image, targets, assignments, image_index, anchors, strides, class_names=None, title=None,
                      panel_inches=5.2, strategy=None):
    """A 2 x 2 matplotlib figure for image `image_index` of a batch: one panel per scale and a panel that explains
    the drawing (and the strategy, when given), with the anchors of every scale.

    image: (H, W, 3) uint8; targets: (N, 6) of the whole batch; assignments: the list of ScaleAssignment that
    yolo.assign.assign returned; anchors: (S, A, 2). The caller saves and closes the figure.
    """
    import matplotlib.pyplot as plt

    columns = 2
    rows = -(-(len(strides) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel_inches * columns, panel_inches * rows + 0.5))
    for ax, scale_assignment, anchors_wh, stride in zip(axes.flat, assignments, anchors, strides):
        targets_of_image, positives = assignment_of_image(targets, scale_assignment, image_index)
        per_gt = np.bincount(positives["gt"], minlength=len(targets_of_image))
        draw_assignment(ax, image, targets_of_image, positives, anchors_wh, stride, class_names,
                        f"stride {stride}, {image.shape[0] // stride}x{image.shape[1] // stride} cells: "
                        f"{len(positives['gt'])} positives,\n{int((per_gt > 0).sum())} of {len(targets_of_image)} "
                        f"GTs have at least one here", legend=False, font=8)
    key = axes.flat[len(strides)]
    key.axis("off")
    text = ["How to read it:",
            "- solid box: a ground-truth object (GT), 'n:class',",
            "  one colour per GT",
            "- dashed box: the anchor box of a positive, centred",
            "  on its cell, in the colour of the GT it learns",
            "- digit at a cell centre: which anchor of the cell",
            "  is positive (sizes below)"]
    text += ["", "Anchors (w x h px) of each scale, by digit:"]
    text += [f"  stride {stride}: " + ", ".join(f"{k} = {w:g}x{h:g}" for k, (w, h) in enumerate(anchors_wh))
             for anchors_wh, stride in zip(anchors, strides)]
    if strategy in STRATEGY_NOTES:
        text += ["", *_wrap(STRATEGY_NOTES[strategy], 50)]
    key.text(0.0, 1.0, "\n".join(text), va="top", ha="left", fontsize=10, transform=key.transAxes)
    for ax in list(axes.flat)[len(strides) + 1:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(h_pad=0.6, w_pad=0.6, rect=(0, 0, 1, 0.96 if title else 1))
    return fig


def _wrap(text, width):
    import textwrap

    return textwrap.wrap(text, width)
