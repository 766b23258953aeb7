"""Drawing: detections on images (PIL's built-in font, nothing downloaded)."""
import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_colour(index, num_classes):
    r, g, b = colorsys.hsv_to_rgb((index / max(num_classes, 1)) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image, boxes, labels, class_names, scores=None, width=2):
    """image: (H, W, 3) uint8; boxes (K, 4) xyxy pixels. Returns a new PIL image with boxes and captions."""
    canvas = Image.fromarray(np.asarray(image)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (box, label) in enumerate(zip(np.asarray(boxes), np.asarray(labels))):
        colour = class_colour(int(label), len(class_names))
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        caption = class_names[int(label)] + (f" {float(scores[k]):.2f}" if scores is not None else "")
        tx, ty = x1, max(0.0, y1 - 12)
        text_box = draw.textbbox((tx, ty), caption, font=font)
        draw.rectangle(text_box, fill=colour)
        draw.text((tx, ty), caption, fill=(0, 0, 0), font=font)
    return canvas


# ---------------------------------------------------------------- label assignment (python main.py --task debug)
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


# ---------------------------------------------------------------- multi-task branching (notebooks/05_multitask)
def draw_branching(groups, task_names, block_names):
    """The branching tree as a figure: columns backbone, neck blocks 0..7 (one box per copy, placed at the rows of
    the tasks it serves), one head per task; a line joins a copy to the copies of the next block it feeds.
    groups: neck_groups(branching, num_tasks). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    num_tasks = len(task_names)
    everyone = list(range(num_tasks))
    columns = ([("backbone", [everyone])] + [(f"{j} {name}", g) for j, (name, g) in enumerate(zip(block_names, groups))]
               + [("head", [[t] for t in everyone])])
    fig, ax = plt.subplots(figsize=(1.25 * len(columns), 0.8 * num_tasks + 1.4))
    row = {t: num_tasks - 1 - t for t in everyone}  # task 0 on top
    previous = None
    for x, (title, column_groups) in enumerate(columns):
        centres = [(x, float(np.mean([row[t] for t in group]))) for group in column_groups]
        if previous is not None:
            for (px, py), parent in zip(*previous):
                for (cx, cy), group in zip(centres, column_groups):
                    if set(group) <= set(parent):
                        ax.plot([px, cx], [py, cy], color="0.6", zorder=1)
        for (cx, cy), group in zip(centres, column_groups):
            shared = len(group) > 1
            colour = "0.85" if len(group) == num_tasks and num_tasks > 1 else (
                "#f6d7a7" if shared else tuple(c / 255 for c in class_colour(group[0], num_tasks)))
            ax.text(cx, cy, "\n".join(task_names[t] for t in group), ha="center", va="center", fontsize=8, zorder=2,
                    bbox=dict(boxstyle="round", facecolor=colour, edgecolor="0.3"))
        ax.text(x, num_tasks - 0.35, title, ha="center", va="bottom", fontsize=9, weight="bold")
        previous = (centres, column_groups)
    ax.set(xlim=(-0.6, len(columns) - 0.4), ylim=(-0.7, num_tasks + 0.1))
    ax.axis("off")
    ax.set_title("which tasks share each part (grey: all tasks, orange: some, coloured: one)", fontsize=10)
    fig.tight_layout()
    return fig
