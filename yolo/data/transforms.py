"""Augmentation (albumentations) and the letterbox.

Train and val share the same geometry: the image is letterboxed (longest side resized to `img_size`, aspect kept,
the rest padded with the ImageNet mean colour) and *then* augmented, so the network sees objects with the same
proportions in training and evaluation. Normalisation is not done here: loaders ship uint8 images (4x less to
copy between processes) and the model normalises on its own device (yolo/models/detector.py).

The train augmentations are a list in the config, `augmentations`: (albumentations transform name, probability,
keyword arguments) entries applied in order after the letterbox. None means the basic pipeline (flip, zoom and
shift, colour jitter) described by hflip_prob, affine_scale, affine_translate and color_jitter. SEED_AUGMENTATIONS
is seed 004's heavier set, used by the real-data configs. The 4-image mosaic (mosaic.py) runs before all of this.
"""
import difflib
import inspect
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_FILL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)  # grey: padding does not shift the input mean

# seed 004's augmentations: photometric ones on the letterboxed image, then flip and zoom/shift (no rotation or
# shear: they would inflate the axis-aligned boxes of rotated objects)
SEED_AUGMENTATIONS = [
    ("MultiplicativeNoise", 0.2, {"multiplier": (0.9, 1.1), "per_channel": True}),
    ("CLAHE", 0.1, {"clip_limit": 2.0}),
    ("Posterize", 0.1, {"num_bits": (4, 6)}),
    ("ToGray", 0.05, {}),
    ("RandomBrightnessContrast", 0.3, {"brightness_limit": 0.2, "contrast_limit": 0.2}),
    ("RGBShift", 0.2, {"r_shift_limit": 15, "g_shift_limit": 15, "b_shift_limit": 15}),
    ("ColorJitter", 0.5, {"brightness": 0.2, "contrast": 0.2, "saturation": 0.4, "hue": 0.02}),
    ("GaussNoise", 0.1, {"std_range": (0.02, 0.06)}),
    ("RandomFog", 0.02, {"fog_coef_range": (0.3, 0.5)}),  # about 0.3 s per 320 px image: keep it rare
    ("HorizontalFlip", 0.5, {}),
    ("Affine", 1.0, {"scale": (0.6, 1.4), "translate_percent": (-0.15, 0.15)}),
]


def basic_augmentations(cfg):
    """The default pipeline as an augmentation list: the one the shapes benchmark is tuned with."""
    ops = [("HorizontalFlip", cfg.hflip_prob, {}),
           ("Affine", 1.0, {"scale": tuple(cfg.affine_scale),
                            "translate_percent": (-cfg.affine_translate, cfg.affine_translate)})]
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        ops.append(("ColorJitter", 0.8, {"brightness": j, "contrast": j, "saturation": j, "hue": 0.02}))
    return ops


def build_augmentations(spec):
    """[(name, probability, kwargs), ...] -> albumentations transforms. Geometric transforms that uncover the
    border fill it with the mean colour, as the letterbox does, unless the entry says otherwise."""
    ops = []
    for position, entry in enumerate(spec):
        name, prob, kwargs = entry
        where = f"config field 'augmentations', entry {position} {tuple(entry)!r}"
        cls = getattr(A, name, None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            close = difflib.get_close_matches(name, [n for n in dir(A) if not n.startswith("_")], n=1)
            raise ValueError(f"{where}: albumentations has no transform {name!r}"
                             + (f"; did you mean {close[0]!r}?" if close else ""))
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}  # json turns tuples to lists
        accepted = inspect.signature(cls).parameters
        if "fill" in accepted and "border_mode" in accepted:
            kwargs = {"border_mode": cv2.BORDER_CONSTANT, "fill": PAD_FILL, **kwargs}
        try:
            ops.append(cls(**kwargs, p=prob))
        except Exception as e:  # albumentations validates its arguments with pydantic
            raise ValueError(f"{where}: {e}") from None
    return ops


def letterbox_ops(img_size):
    return [A.LongestMaxSize(max_size=img_size, interpolation=cv2.INTER_LINEAR),
            A.PadIfNeeded(img_size, img_size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=PAD_FILL)]


def bbox_params(min_box_size=1.0, min_visibility=0.3):
    # clip: boxes pushed partly outside by the affine are cut at the border; min_visibility drops boxes that
    # mostly left the image (their remaining sliver no longer looks like the object)
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, min_visibility=min_visibility,
                        min_width=min_box_size, min_height=min_box_size)


def build_transform(cfg, train):
    """Letterbox, then (train) the augmentation list. Call as transform(image=, bboxes=, labels=)."""
    ops = letterbox_ops(cfg.img_size)
    if train:
        spec = basic_augmentations(cfg) if cfg.augmentations is None else cfg.augmentations
        ops += build_augmentations(spec)
        return A.Compose(ops, bbox_params=bbox_params(cfg.min_box_size, cfg.min_visibility))
    return A.Compose(ops, bbox_params=bbox_params(0.0, cfg.min_visibility))


def resize_longest(image, boxes, img_size):
    """Resize so the longest side is img_size (the letterbox without its padding), boxes with it; the same size
    and interpolation as letterbox_ops, so a cached or mosaic image is what the letterbox would have made."""
    height, width = image.shape[:2]
    sx, sy, _, _ = letterbox_params(width, height, img_size)
    new_w, new_h = max(1, round(width * sx)), max(1, round(height * sy))
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return image, np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.float32([sx, sy, sx, sy])


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
