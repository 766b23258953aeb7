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
