"""Boxes on images: one image with its detections (PIL's built-in font, nothing downloaded), a grid of predictions
(TensorBoard, notebooks) and a grid of augmented training images with their labels (--task show_batch)."""
import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.records import load_image_rgb


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
        boxes, scores, labels = detections[index]
        keep = scores >= conf
        image = draw_detections(load_image_rgb(rec.image_path), boxes[keep], labels[keep], class_names, scores[keep])
        image.thumbnail((side, side))  # in place, keeps the aspect ratio
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
