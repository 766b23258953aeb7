"""Label assignment drawn on the grid (python main.py --task debug, notebook 02): for one image and each scale, the
cell grid, the GT boxes and every positive anchor box at its cell."""
import colorsys
import io

import numpy as np
from PIL import Image


ANCHOR_MARKERS = "os^Dvp*h"  # marker of anchor index k at the cell centre


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


def draw_assignment(ax, image, targets_of_image, positives, anchors_wh, stride, class_names=None, title=None):
    """One scale on a matplotlib Axes: the image, the cell grid of `stride`, the GT boxes (one colour each) and
    every positive anchor drawn as its anchor box centred on its cell, in its GT's colour, with a marker per
    anchor index at the cell centre.

    image: (H, W, 3) uint8; targets_of_image: (n, 6) rows (batch, class, cx, cy, w, h) in pixels;
    positives: dict of equal-length arrays anchor, gy, gx, gt (gt indexes targets_of_image);
    anchors_wh: (A, 2) pixels of this scale.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.lines import Line2D
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
            ax.scatter(cx[mine] + shift, cy[mine], s=10, marker=ANCHOR_MARKERS[k % len(ANCHOR_MARKERS)],
                       c=[colours[i] for i in np.flatnonzero(mine)], edgecolors="black", linewidths=0.4, zorder=3)
    for g, (_, label, cx, cy, w, h) in enumerate(targets_of_image):
        colour = gt_colour(g)
        ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, edgecolor=colour, linewidth=2.0))
        name = class_names[int(label)] if class_names else str(int(label))
        ax.text(cx - w / 2, cy - h / 2 - 2, f"{g}:{name}", color="black", fontsize=6,
                bbox=dict(facecolor=colour, edgecolor="none", pad=0.5))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    handles = [Line2D([], [], marker=ANCHOR_MARKERS[k % len(ANCHOR_MARKERS)], linestyle="none", color="grey",
                      markeredgecolor="black", label=f"anchor {k}: {w:g}x{h:g}") for k, (w, h) in enumerate(anchors_wh)]
    ax.legend(handles=handles, loc="lower right", fontsize=5, framealpha=0.6)


def assignment_figure(image, targets, assignments, image_index, anchors, strides, class_names=None, title=None,
                      panel_inches=4.0):
    """A matplotlib figure with the scales side by side for image `image_index` of a batch.

    image: (H, W, 3) uint8; targets: (N, 6) of the whole batch; assignments: the list of ScaleAssignment that
    yolo.assign.assign returned; anchors: (S, A, 2). The caller saves and closes the figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(strides), figsize=(panel_inches * len(strides), panel_inches + 0.4))
    for ax, scale_assignment, anchors_wh, stride in zip(axes, assignments, anchors, strides):
        targets_of_image, positives = assignment_of_image(targets, scale_assignment, image_index)
        per_gt = np.bincount(positives["gt"], minlength=len(targets_of_image))
        draw_assignment(ax, image, targets_of_image, positives, anchors_wh, stride, class_names,
                        f"stride {stride}: {len(positives['gt'])} positives, {int((per_gt > 0).sum())}"
                        f"/{len(targets_of_image)} GTs")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_assignment_figure(fig, path, dpi=100, palette=False):
    """Save and close a figure. palette=True stores 256 colours (README images: about 3x smaller files, and the
    noisy shapes backgrounds do not need more)."""
    import matplotlib.pyplot as plt

    if palette:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    else:
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
