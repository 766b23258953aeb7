"""The bad-input rules, shared by loading (train, val, predict) and `python main.py --task check`.

Every problem found in a dataset is one `Problem`: its kind, the file, the detail. What happens to the data depends
on the kind alone, the same way on every path (PROBLEM_KINDS below):

    unreadable image      image skipped     cannot be opened or decoded, or truncated
    missing image         image skipped     the annotation names an image file that does not exist
    missing annotation    image skipped     VOC: an id of the split file has no xml
    malformed annotation  image skipped     xml that does not parse, label file that is not text, broken json entry
    malformed box         box skipped       missing or non-numeric coordinate, wrong field count, NaN / inf
    unknown class         box skipped       a class name / id / category that is not in class_names
    zero/negative area    box dropped       nothing left after clipping to the image
    box outside image     box clipped       the part inside the image is kept (warned beyond OUTSIDE_TOLERANCE)
    duplicate box         box dropped       same class, all four coordinates within DUPLICATE_TOLERANCE pixels
    size mismatch         real size used    the annotation's image size disagrees with the image file
    orphan annotation     ignored           YOLO label file without an image, COCO annotation of an unknown image

These are *safe*: each costs at most the box or the image it concerns, and loading goes on after logging the first
few of each kind and one summary line. *Fatal* problems raise `DataError` with the file and the reason: the dataset
itself cannot be read (missing root, split file, json or data.yaml; a json that does not parse; bad class names),
a split lists no images, or more than half of its images are unusable, which means a wrong path rather than a few
bad files. `--task check` runs the same readers but collects everything, fatal problems included.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from loguru import logger

PROBLEM_KINDS = {
    "unreadable image": "image skipped",
    "missing image": "image skipped",
    "missing annotation": "image skipped",
    "malformed annotation": "image skipped",
    "malformed box": "box skipped",
    "unknown class": "box skipped",
    "zero/negative area": "box dropped",
    "box outside image": "box clipped",
    "duplicate box": "box dropped",
    "size mismatch": "real size used",
    "orphan annotation": "ignored",
    "fatal": "stops loading",
}
DUPLICATE_TOLERANCE = 0.5  # pixels: annotation tools write a double click as two boxes a fraction of a pixel apart
OUTSIDE_TOLERANCE = 0.5  # pixels: normalised labels (YOLO txt) overshoot the border by rounding; clipped, not warned
MAX_UNUSABLE_FRACTION = 0.5  # more unusable images than this in a split is fatal: a wrong folder, not bad files


class DataError(ValueError):
    """A fatal data problem; the message names the file and the reason."""


class DataFileNotFound(DataError, FileNotFoundError):
    """A file or folder the dataset needs (root, split file, json, data.yaml) does not exist."""


@dataclass
class Problem:
    kind: str    # a key of PROBLEM_KINDS
    file: str    # the file to fix (for COCO: the json, with the image's file name in brackets)
    detail: str

    def __str__(self):
        return f"{self.file}: {self.detail} ({PROBLEM_KINDS[self.kind]})"


class Problems:
    """Collects the problems of one split. Logs the first `show_per_kind` of each kind as they come (a 100k-image
    dataset with one systematic problem gives a readable log, not 100k lines), then `finish` logs one summary.
    decode_images: readers decode every image completely instead of checking header and end (--task check)."""

    def __init__(self, source: str, show_per_kind: int = 10, decode_images: bool = False):
        self.source, self.show_per_kind, self.decode_images = source, show_per_kind, decode_images
        self.items: list[Problem] = []
        self.count = Counter()

    def add(self, kind: str, file, detail: str):
        if kind not in PROBLEM_KINDS:
            raise KeyError(f"unknown problem kind {kind!r}; add it to PROBLEM_KINDS")
        problem = Problem(kind, str(file), detail)
        self.items.append(problem)
        self.count[kind] += 1
        if self.count[kind] <= self.show_per_kind:
            logger.warning(str(problem))

    @property
    def num_unusable_images(self) -> int:
        return sum(n for kind, n in self.count.items() if PROBLEM_KINDS[kind] == "image skipped")

    def summary(self, num_images: int) -> str:
        """One line: the images kept and every kind of problem with its count and effect."""
        kinds = ", ".join(f"{n} {kind} ({PROBLEM_KINDS[kind]})" for kind, n in self.count.most_common())
        hidden = sum(max(0, n - self.show_per_kind) for n in self.count.values())
        more = f"; {hidden} not shown above" if hidden and self.show_per_kind else ""
        return (f"{self.source}: {num_images} images kept, {len(self.items)} data problems: {kinds}{more} "
                f"(python main.py --task check lists them all)")

    def fatal_reason(self, num_images: int) -> str | None:
        """Why this split cannot be trained on (no usable image, or most images unusable), or None."""
        listed = num_images + self.num_unusable_images
        if num_images > 0 and self.num_unusable_images <= MAX_UNUSABLE_FRACTION * listed:
            return None
        examples = "\n  ".join(str(p) for p in self.items if PROBLEM_KINDS[p.kind] == "image skipped")
        reason = "lists no images" if listed == 0 else f"has {num_images} usable images of {listed}"
        return f"{self.source} {reason}; check the paths in the config.\n  {examples[:3000]}".rstrip()

    def finish(self, num_images: int):
        """End of loading: log the summary line; raise DataError when the split cannot be trained on."""
        if self.items:
            logger.warning(self.summary(num_images))
        reason = self.fatal_reason(num_images)
        if reason:
            raise DataError(reason)


def clean_boxes(boxes, labels, difficult, width, height, file, problems: Problems):
    """Apply the box rules to the boxes of one image, recording what they change. Returns (boxes (N, 4) float32
    x1, y1, x2, y2, labels (N,) int64, difficult (N,) bool).

    In order: non-finite boxes are skipped (malformed), boxes are clipped to the image (warned), boxes without area
    after clipping are dropped, and of duplicate boxes the first is kept.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    difficult = np.asarray(difficult, dtype=bool).reshape(-1)
    with np.errstate(invalid="ignore"):  # NaN boxes are reported below, not warned about by numpy
        clipped = np.clip(boxes, 0, [width, height, width, height])
        finite = np.isfinite(boxes).all(1)
        has_area = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        moved = has_area & (np.abs(clipped - boxes) > OUTSIDE_TOLERANCE).any(1)
    if not has_area.all() or moved.any():  # a clean image costs the vector operations above, no loop
        for i in np.flatnonzero(~finite):
            problems.add("malformed box", file, f"box {_fmt(boxes[i])} is not finite")
        for i in np.flatnonzero(finite & ~has_area):
            problems.add("zero/negative area", file, f"box {_fmt(boxes[i])} has no area inside the "
                         f"{width}x{height} image")
        for i in np.flatnonzero(moved):
            problems.add("box outside image", file, f"box {_fmt(boxes[i])} clipped to the {width}x{height} "
                         f"image: {_fmt(clipped[i])}")
        clipped, labels, difficult = clipped[has_area], labels[has_area], difficult[has_area]

    duplicate = duplicate_boxes(clipped, labels)
    if duplicate.any():
        for i in np.flatnonzero(duplicate):
            problems.add("duplicate box", file, f"box {_fmt(clipped[i])} repeats an earlier box of the same class")
        clipped, labels, difficult = clipped[~duplicate], labels[~duplicate], difficult[~duplicate]
    return clipped.astype(np.float32), labels, difficult


def duplicate_boxes(boxes, labels, tolerance=DUPLICATE_TOLERANCE) -> np.ndarray:
    """(N,) bool: True where an earlier box has the same class and all four coordinates within `tolerance`."""
    if len(boxes) < 2:
        return np.zeros(len(boxes), bool)
    close = (np.abs(boxes[:, None] - boxes[None]) <= tolerance).all(-1) & (labels[:, None] == labels[None])  # (N, N)
    return np.tril(close, k=-1).any(1)  # only j < i counts: the first of a group survives


def _fmt(box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in np.round(np.asarray(box, dtype=np.float64), 1)) + "]"
