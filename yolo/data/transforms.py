"""Augmentation (albumentations) and the letterbox.

Train and val share the same geometry: the image is letterboxed (longest side resized to `img_size`, aspect kept,
the rest padded with the ImageNet mean colour) and *then* augmented, so the network sees objects with the same
proportions in training and evaluation. Normalisation is not done here: loaders ship uint8 images (4x less to
copy between processes) and the model normalises on its own device (yolo/models/detector.py).
"""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_FILL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)  # grey: padding does not shift the input mean


def letterbox_ops(img_size):
    return [A.LongestMaxSize(max_size=img_size, interpolation=cv2.INTER_LINEAR),
            A.PadIfNeeded(img_size, img_size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=PAD_FILL)]


def bbox_params(min_box_size=1.0):
    # clip: boxes pushed partly outside by the affine are cut at the border; min_visibility drops boxes that
    # mostly left the image (their remaining sliver no longer looks like the object)
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, min_visibility=0.3,
                        min_width=min_box_size, min_height=min_box_size)


def build_transform(cfg, train):
    ops = letterbox_ops(cfg.img_size)
    if train:
        ops += [A.HorizontalFlip(p=cfg.hflip_prob),
                A.Affine(scale=tuple(cfg.affine_scale), translate_percent=(-cfg.affine_translate, cfg.affine_translate),
                         border_mode=cv2.BORDER_CONSTANT, fill=PAD_FILL, p=1.0)]
        if cfg.color_jitter > 0:
            j = cfg.color_jitter
            ops.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.02, p=0.8))
    return A.Compose(ops, bbox_params=bbox_params(cfg.min_box_size if train else 0.0))


def letterbox_params(width, height, img_size):
    """(scale_x, scale_y, pad_x, pad_y) mapping original pixels to the letterboxed image, as albumentations does it:
    the longest side becomes img_size, the other is rounded, and the padding is split evenly (floor on the left)."""
    scale = img_size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return new_w / width, new_h / height, (img_size - new_w) // 2, (img_size - new_h) // 2


def boxes_to_original(boxes_xyxy, width, height, img_size):
    """Undo the letterbox: (K, 4) boxes in network-input pixels -> original-image pixels, clipped to the image."""
    sx, sy, px, py = letterbox_params(width, height, img_size)
    out = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    out[:, [0, 2]] = ((out[:, [0, 2]] - px) / sx).clip(0, width)
    out[:, [1, 3]] = ((out[:, [1, 3]] - py) / sy).clip(0, height)
    return out
