"""Records and image files: the `Record` every reader produces, image decoding and size checks, and the helpers
the readers share (voc.py, coco.py, yolo_txt.py each read one format into a list of records).

Box convention used everywhere in the project: float x1, y1, x2, y2 in *continuous* pixel coordinates of the
original image. Pixel (column c, row r) covers the square [c, c+1) x [r, r+1), so a box that covers pixel columns
0..9 has x1=0, x2=10 and width x2 - x1 = 10. Each reader converts its format's convention to this one.

Bad input follows the rules of checks.py: every reader takes a `Problems` collector, records what it skips or
repairs there, and raises DataError only when the dataset itself cannot be read. Called without one, a reader makes
its own and finishes it: one summary line, and DataError when a split is (mostly) unusable.

Images are read lazily: a reader only opens the file header for the real size (plus a cheap truncation check);
`load_image_rgb` decodes later.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from loguru import logger
from PIL import Image

from .checks import DataError, DataFileNotFound, Problems

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)  # what PIL raises on bad files


@dataclass
class Record:
    image_path: str
    width: int  # real image size (the image file wins over what an annotation claims)
    height: int
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in original-image pixels (continuous, see module doc)
    labels: np.ndarray  # (N,) int64 index into class_names
    difficult: np.ndarray  # (N,) bool; kept out of training targets, ignored by the metric (VOC difficult, COCO crowd)


# ----------------------------------------------------------------------------------------------------- images


def load_image_rgb(path: str, max_side: int | None = None) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; grayscale, palette, CMYK, RGBA and 16-bit files are converted.

    No EXIF rotation is applied: annotations refer to the stored pixel grid, the same one `read_image_size` sees.
    max_side: a copy no larger than this per side (aspect kept), for pictures; a JPEG then decodes at reduced scale.
    """
    if not os.path.isfile(path):
        raise DataFileNotFound(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            if max_side is not None:
                image.draft(None, (max_side, max_side))  # JPEG: decode at 1/2 .. 1/8 scale, a fraction of the memory
            rgb = rgb_array(image)
    except IMAGE_ERRORS as e:
        raise DataError(f"cannot read image {path}: {_image_error(e)}") from e
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        small = Image.fromarray(rgb)
        small.thumbnail((max_side, max_side))  # in place, keeps the aspect ratio
        rgb = np.array(small)
    return rgb


def rgb_array(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of an open image. PIL's convert("RGB") clips the integer modes at 255, which turns a 16-bit
    grayscale image (I;16, I;16B, or I as older PIL opens 16-bit PNGs) white; those are scaled by their bit depth
    instead: the high byte (value >> 8), which is what PIL itself does to 16-bit RGB PNGs, so a 16-bit file looks as
    its 8-bit export would. Not min-max: that would brighten a dark image and make one scene differ between files."""
    if not image.mode.startswith("I"):
        return np.array(image.convert("RGB"))  # np.array, not asarray: PIL's buffer would be read-only
    values = np.asarray(image)
    if values.size and (values.min() < 0 or values.max() > 0xFFFF):  # a 32-bit image: no bit depth to scale by
        raise ValueError(f"pixel values {values.min()} .. {values.max()} lie outside the 16-bit range 0 .. 65535 "
                         f"(mode {image.mode}); convert it to an 8- or 16-bit image")
    gray = (values.astype(np.uint32) >> 8).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _image_error(error: Exception) -> str:
    """PIL's reason, with what to do when the image is over PIL's pixel limit (2 x Image.MAX_IMAGE_PIXELS)."""
    if isinstance(error, Image.DecompressionBombError):
        return f"too large to decode: {error} (PIL.Image.MAX_IMAGE_PIXELS); downscale the image"
    return str(error)


def read_image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header only; no pixel decoding."""
    if not os.path.isfile(path):
        raise DataFileNotFound(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.size
    except IMAGE_ERRORS as e:
        raise DataError(f"cannot read image header of {path}: {_image_error(e)}") from e


def checked_image_size(path: str, problems: Problems, decode: bool = False) -> tuple[int, int] | None:
    """(width, height) of a usable image, or None after recording in `problems` why it is not.

    Loading reads the header and the file's last bytes only: a truncated JPEG lacks its end marker, a truncated
    PNG its IEND chunk, and only such suspects are decoded. decode=True (--task check) decodes every image.
    """
    if not os.path.isfile(path):
        problems.add("missing image", path, "image file not found")
        return None
    try:
        with Image.open(path) as image:
            size = image.size
            if decode or _looks_truncated(path, image.format):
                image.load()
                if image.mode.startswith("I"):
                    rgb_array(image)  # the range check of the integer modes, as training will meet it
    except IMAGE_ERRORS as e:
        problems.add("unreadable image", path, f"cannot read image: {_image_error(e)}")
        return None
    return size


def _looks_truncated(path: str, image_format: str | None) -> bool:
    if image_format not in ("JPEG", "PNG"):
        return False
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 16))
        tail = f.read()
    # some cameras append data after the JPEG end marker: those files are only suspects, decoding decides
    return not tail.rstrip(b"\x00").endswith(b"\xff\xd9") if image_format == "JPEG" else b"IEND" not in tail


# ---------------------------------------------------------------------------------------------- shared helpers


def class_index(class_names) -> dict[str, int]:
    """Lower-cased, stripped name -> index (VOC names are lower-case; users write 'Person' or 'person ')."""
    if isinstance(class_names, str) or len(class_names) == 0:
        raise DataError(f"class_names must be a non-empty list of names, got {class_names!r}")
    index = {}
    for i, name in enumerate(class_names):
        key = str(name).strip().lower()
        if key in index:
            raise DataError(f"class_names has a duplicate (after strip/lower-case): {name!r}")
        index[key] = i
    return index


def resolve_path(root: str, path: str) -> str:
    """A relative path is looked up inside root first (so one split_file works for a list of roots), then cwd."""
    if os.path.isabs(path):
        return path
    in_root = os.path.join(root, path)
    return path if (not os.path.exists(in_root) and os.path.exists(path)) else in_root


def finish_reading(problems: Problems, own: bool, records: list, what: str) -> list:
    """A reader's last step: the summary (and fatal check) when the reader made its own collector, and one log line."""
    if own:
        problems.finish(len(records))
    logger.info(f"{what}: {len(records)} images, {sum(len(r.boxes) for r in records)} boxes")
    return records


def require_class_overlap(labels, dataset_names, path):
    """No dataset class in class_names at all is a wrong config, not bad data: say so instead of reading boxes."""
    if all(label is None for label in labels):
        raise DataError(f"none of the classes of {path} is in the config's class_names; the dataset's names are "
                        f"{list(dataset_names)}")
