"""Augmentation and the letterbox.

Train and val share the same geometry: the image is letterboxed (longest side resized to `img_size`, aspect kept,
the rest padded with the ImageNet mean colour) and *then* augmented, so the network sees objects with the same
proportions in training and evaluation. Normalisation is not done here: loaders ship uint8 images (4x less to
copy between processes) and the model normalises on its own device (yolo/models/detector.py).

Two train pipelines, chosen by the config field `augmentations`:
- None (the default): LetterboxAugment, the basic set (flip, zoom and shift, colour jitter) described by
  hflip_prob, affine_scale, affine_translate and color_jitter, done in one warp and one colour matrix. It draws the
  same geometry as albumentations' LongestMaxSize + PadIfNeeded + HorizontalFlip + Affine (tests/test_augment.py
  compares them) at a quarter of the cost, which keeps a 2-core CPU busy with the model (bench/pipeline.py).
- a list of (albumentations transform name, probability, keyword arguments) entries, applied in order after the
  letterbox by albumentations. PHOTO_AUGMENTATIONS is a heavier set for photos, used by the real-data configs.
The 4-image mosaic (mosaic.py) runs before either. Val and predict use the letterbox alone (albumentations).
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
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601 grey, as PIL and torchvision's ColorJitter use

# a heavier set for real photos: photometric augmentations on the letterboxed image, then flip and zoom/shift (no rotation or
# shear: they would inflate the axis-aligned boxes of rotated objects)
PHOTO_AUGMENTATIONS = [
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


def plain_letterbox(img_size, min_box_size=0.0, min_visibility=0.3):
    """The letterbox alone: evaluation's transform, and training's for its last augment_off_epochs epochs."""
    return A.Compose(letterbox_ops(img_size), bbox_params=bbox_params(min_box_size, min_visibility))


def build_transform(cfg, train):
    """Val: the letterbox. Train: LetterboxAugment, or the letterbox then the `augmentations` list. Either is called
    as transform(image=, bboxes=, labels=) and reseeded with transform.set_random_seed(seed)."""
    if train and cfg.augmentations is None:
        return LetterboxAugment(cfg.img_size, cfg.hflip_prob, cfg.affine_scale, cfg.affine_translate, cfg.color_jitter,
                                cfg.min_visibility, cfg.min_box_size)
    if not train:
        return plain_letterbox(cfg.img_size, 0.0, cfg.min_visibility)
    ops = letterbox_ops(cfg.img_size) + build_augmentations(cfg.augmentations)
    return A.Compose(ops, bbox_params=bbox_params(cfg.min_box_size, cfg.min_visibility))


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


def clip_visible(boxes, labels, width, height, min_visibility, min_size):
    """Clip boxes to the width x height window; keep those with >= min_visibility of their area left inside and
    both sides >= min_size pixels (the rule albumentations applies after its geometric transforms)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (w >= min_size) & (h >= min_size) & (w * h >= min_visibility * np.maximum(area, 1e-9))
    return clipped[keep], labels[keep]


class LetterboxAugment:
    """The default train transform: letterbox, horizontal flip, zoom and shift as ONE affine warp of the image, then
    colour jitter as ONE 3 x 4 colour matrix -- the same augmentations as the albumentations pipeline
    LongestMaxSize, PadIfNeeded, HorizontalFlip, Affine(scale, translate_percent), ColorJitter, but without its
    per-transform box bookkeeping (about 0.5 ms of a 2.7 ms image at 256 px) and with colours done by one
    matrix product instead of colour-space round trips (0.05 instead of 0.9 ms).

    Geometry (continuous pixel coordinates, the image already resized to longest side S = img_size): pad to S x S
    (centred), mirror x -> S - x with probability hflip_prob, zoom about the centre by sx, sy drawn independently
    from `scale` (as albumentations' Affine does: a mild aspect jitter), shift by tx, ty drawn from
    +-translate * S. Without rotation boxes stay axis-aligned, so moving their corners moves them exactly.
    Colour (probability color_prob): brightness, contrast (about the mean grey), saturation, each a factor in
    [1 - j, 1 + j], then a hue rotation of up to +-hue turns about the grey axis. All are linear in RGB, so
    they compose into one matrix (Haeberli, "Matrix operations for image processing", 1993).

    Call as transform(image=, bboxes=, labels=) -> {"image", "bboxes", "labels"}, like an albumentations Compose;
    set_random_seed(seed) and random_generator behave like Compose's too (the trainer reseeds per epoch/worker).
    """

    def __init__(self, img_size, hflip_prob=0.5, scale=(0.75, 1.25), translate=0.1, color_jitter=0.3,
                 min_visibility=0.3, min_box_size=2.0, color_prob=0.8, hue=0.02):
        self.img_size, self.hflip_prob, self.scale, self.translate = img_size, hflip_prob, tuple(scale), translate
        self.color_jitter, self.color_prob, self.hue = color_jitter, color_prob, hue
        self.min_visibility, self.min_box_size = min_visibility, min_box_size
        self.set_random_seed(None)

    def set_random_seed(self, seed):
        self.random_generator = np.random.default_rng(seed)

    def __repr__(self):
        return (f"LetterboxAugment(img_size={self.img_size}, hflip_prob={self.hflip_prob}, scale={self.scale}, "
                f"translate={self.translate}, color_jitter={self.color_jitter} (p={self.color_prob}, hue={self.hue}))")

    def __call__(self, *, image, bboxes, labels):
        rng = self.random_generator
        flip = rng.random() < self.hflip_prob
        zoom = rng.uniform(*self.scale, size=2)
        shift = rng.uniform(-self.translate, self.translate, size=2) * self.img_size
        image, boxes, labels = self.warp(image, bboxes, labels, flip, zoom, shift)
        if self.color_jitter > 0 and rng.random() < self.color_prob:
            image = cv2.transform(image, self.draw_color_matrix(image, rng))  # rounds and saturates to uint8
        return {"image": image, "bboxes": boxes, "labels": labels}

    def warp(self, image, boxes, labels, flip, zoom, shift):
        """Letterbox, mirror if flip, zoom (sx, sy) about the centre, shift (tx, ty) pixels: one cv2.warpAffine.
        Returns (image (S, S, 3), boxes (m, 4) clipped, labels (m,)) without the boxes that left the image."""
        size = self.img_size
        if max(image.shape[:2]) != size:  # cached and mosaic images already are; others resize as the letterbox does
            image, boxes = resize_longest(image, boxes, size)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels).reshape(-1)
        (sx, sy), (tx, ty) = zoom, shift
        pad_x, pad_y = (size - image.shape[1]) // 2, (size - image.shape[0]) // 2  # letterbox_params' padding
        # output x = ax * x + bx: pad, mirror (x -> S - x), zoom about the centre S / 2, shift; y alike, no mirror
        ax, bx = (-sx, sx * (size / 2 - pad_x)) if flip else (sx, sx * (pad_x - size / 2))
        bx, ay, by = bx + size / 2 + tx, sy, sy * (pad_y - size / 2) + size / 2 + ty
        # cv2 puts pixel centres on integers, continuous coordinates on +0.5: u_idx = a * x_idx + b + (a - 1) / 2
        matrix = np.float32([[ax, 0, bx + (ax - 1) / 2], [0, ay, by + (ay - 1) / 2]])
        image = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=PAD_FILL)
        xs, ys = boxes[:, [0, 2]] * ax + bx, boxes[:, [1, 3]] * ay + by
        boxes = np.stack((xs.min(1), ys.min(1), xs.max(1), ys.max(1)), 1)  # a mirror swaps x1 and x2
        boxes, labels = clip_visible(boxes, labels, size, size, self.min_visibility, self.min_box_size)
        return image, boxes, labels

    def draw_color_matrix(self, image, rng):
        """(3, 4) float32 [M | offset]: rgb -> M @ rgb + offset."""
        low, high = 1 - self.color_jitter, 1 + self.color_jitter
        brightness, contrast, saturation = rng.uniform(low, high, size=3)
        angle = 2 * np.pi * rng.uniform(-self.hue, self.hue)
        # contrast blends with the mean grey of the brightened image; saturation with each pixel's own grey
        mean_grey = brightness * float(np.dot(LUMA, cv2.mean(image)[:3]))
        saturate = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), LUMA)
        axis = np.full(3, 1 / np.sqrt(3))  # the grey axis; rotating about it turns hue, leaves greys grey
        cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotate = np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(axis, axis)
        # both keep grey (1, 1, 1) fixed, so the contrast offset passes through them unchanged
        matrix = rotate @ saturate * (brightness * contrast)
        return np.hstack((matrix, np.full((3, 1), (1 - contrast) * mean_grey))).astype(np.float32)


def letterboxed_box_sizes(records, img_size) -> np.ndarray:
    """(N, 2) width and height of every non-difficult box after letterboxing its image to img_size."""
    sizes = []
    for r in records:
        sx, sy, _, _ = letterbox_params(r.width, r.height, img_size)
        boxes = r.boxes[~r.difficult].astype(np.float64)
        sizes.append(np.stack(((boxes[:, 2] - boxes[:, 0]) * sx, (boxes[:, 3] - boxes[:, 1]) * sy), 1))
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))
