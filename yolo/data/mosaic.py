"""4-image mosaic: four training images tiled around a random centre into one img_size x img_size sample.

Each image is first resized as the letterbox would (longest side img_size), so objects keep their training scale.
The four images meet at a random centre in the middle half of the S x S output (S = img_size): image 0 lies to its
top-left, 1 top-right, 2 bottom-left, 3 bottom-right, each touching the centre with its inner corner, and the output
shows the parts that fall inside it (YOLOv5 does the same on a 2S x 2S canvas cut back to S x S). A centre near a
corner gives one image most of the sample; the middle gives each a quarter. Boxes move with their image and are
clipped to the output; those keeping less than `min_visibility` of their area, or thinner than `min_size` pixels,
are dropped, the rule albumentations applies after the other geometric transforms.

The sample then goes through the usual train transform (its letterbox is a no-op on an S x S image, then flip,
affine, colours), so a mosaic can be zoomed and shifted like any image.
"""
import numpy as np

from .transforms import PAD_FILL, clip_visible


def mosaic4(samples, img_size, rng, min_visibility=0.3, min_size=2.0):
    """samples: 4 tuples (image (h, w, 3) uint8 with max(h, w) == img_size, boxes (n, 4) x1 y1 x2 y2, labels (n,)).
    rng: numpy Generator for the centre. Returns (image (S, S, 3) uint8, boxes (m, 4) float32, labels (m,))."""
    s = img_size
    cx, cy = (int(v) for v in rng.integers(s // 4, s - s // 4 + 1, size=2))  # centre, away from the very border
    canvas = np.empty((s, s, 3), np.uint8)
    canvas[:] = PAD_FILL
    all_boxes, all_labels = [], []
    for quadrant, (image, boxes, labels) in enumerate(samples):
        h, w = image.shape[:2]
        # top-left corner of the image in window coordinates: it touches the centre with its inner corner
        x0 = cx - w if quadrant in (0, 2) else cx
        y0 = cy - h if quadrant in (0, 1) else cy
        # the part of the image inside the window
        wx1, wy1, wx2, wy2 = max(x0, 0), max(y0, 0), min(x0 + w, s), min(y0 + h, s)
        if wx2 > wx1 and wy2 > wy1:
            canvas[wy1:wy2, wx1:wx2] = image[wy1 - y0:wy2 - y0, wx1 - x0:wx2 - x0]
        all_boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4) + np.float32([x0, y0, x0, y0]))
        all_labels.append(np.asarray(labels).reshape(-1))
    boxes, labels = np.concatenate(all_boxes), np.concatenate(all_labels)
    boxes, labels = clip_visible(boxes, labels, s, s, min_visibility, min_size)
    return canvas, boxes, labels

