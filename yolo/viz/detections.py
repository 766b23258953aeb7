"""Boxes on images: one image with its detections (PIL's built-in font, nothing downloaded), a grid of predictions
(TensorBoard, notebooks) and a grid of augmented training images with their labels (--task show_batch)."""
import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.records import load_image_rgb

OVERVIEW_MAX_SIDE = 1000  # pixels per side drawn in an overview panel: a 144-megapixel photo would need GBs of RAM


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


def prediction_grid(records, detections, class_names, conf=0.3, num_images=8, columns=4, side=256):
    """The first `num_images` records with their detections (score >= conf) drawn, tiled: (H, W, 3) uint8."""
    if not records:
        return None
    tiles = []
    for index, rec in enumerate(records[:num_images]):
        if index not in detections:  # failed to decode in the loader (which warned)
            continue
        boxes, scores, labels = detections[index]
        keep = scores >= conf
        image = load_image_rgb(rec.image_path, side)  # a copy at tile size: the boxes are scaled to it
        scale = image.shape[1] / rec.width
        image = draw_detections(image, boxes[keep] * scale, labels[keep], class_names, scores[keep])
        tile = np.zeros((side, side, 3), np.uint8)
        tile[:image.height, :image.width] = np.asarray(image)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros((side, side, 3), np.uint8))
    rows = [np.concatenate(tiles[i:i + columns], 1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, 0)


def batch_grid(images, targets, class_names, columns=None, gap=4):
    """images (B, 3, S, S) uint8 tensor, targets (N, 6) batch, class, cx, cy, w, h -> one PIL image, B tiles."""
    count, side = len(images), images.shape[-1]
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    grid = Image.new("RGB", (columns * (side + gap) - gap, rows * (side + gap) - gap), (255, 255, 255))
    targets = targets.numpy()
    for i in range(count):
        mine = targets[targets[:, 0] == i]
        xyxy = np.concatenate((mine[:, 2:4] - mine[:, 4:6] / 2, mine[:, 2:4] + mine[:, 4:6] / 2), 1)
        tile = draw_detections(images[i].permute(1, 2, 0).numpy(), xyxy, mine[:, 1].astype(int), class_names)
        grid.paste(tile, ((i % columns) * (side + gap), (i // columns) * (side + gap)))
    return grid


def prediction_figure(records, detections, class_names, conf=0.3, num_images=4, panel_inches=4.2):
    """The first `num_images` records side by side with their detections (score >= conf: solid, in the class colour,
    one caption "class score" per box) and their ground truth (dashed white). Captions that would cover an earlier
    caption move inside their box. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    shown = records[:num_images]
    fig, axes = plt.subplots(1, len(shown), figsize=(panel_inches * len(shown), panel_inches + 0.6), squeeze=False)
    for ax, (index, rec) in zip(axes[0], enumerate(shown)):
        boxes, scores, labels = detections[index]
        keep = np.asarray(scores) >= conf
        # a downscaled copy spread over the original size: boxes and captions stay in original-image pixels
        ax.imshow(load_image_rgb(rec.image_path, OVERVIEW_MAX_SIDE), extent=(0, rec.width, rec.height, 0))
        for x1, y1, x2, y2 in rec.boxes:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linestyle="--",
                                   linewidth=1.4))
        taken = []  # caption rectangles already placed, in image pixels
        for box, score, label in sorted(zip(boxes[keep], scores[keep], labels[keep]), key=lambda d: -d[1]):
            colour = np.array(class_colour(int(label), len(class_names))) / 255
            x1, y1, x2, y2 = (float(v) for v in box)
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=2.0))
            caption = f"{class_names[int(label)]} {float(score):.2f}"
            width, height = 6.2 * len(caption) * rec.width / 420, 14 * rec.height / 420  # about, at this font
            spot = (x1, y1 - height)
            if spot[1] < 0 or any(_overlaps((*spot, width, height), other) for other in taken):
                spot = (x1, y2 - height)  # inside the box, at its bottom
            taken.append((*spot, width, height))
            ax.text(spot[0], spot[1] + height, caption, fontsize=7, va="bottom", color="black",
                    bbox=dict(facecolor=colour, edgecolor="none", pad=0.8, alpha=0.9))
        count = lambda n, word: f"{n} {word}{'' if n == 1 else 's'}"  # noqa: E731
        ax.set_title(f"{Path(rec.image_path).stem}: {count(int(keep.sum()), 'detection')}, "
                     f"{count(len(rec.boxes), 'object')}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"detections with score >= {conf} (solid, caption: class and score); ground truth dashed white",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _overlaps(a, b):
    """Two (x, y, w, h) rectangles intersect."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
