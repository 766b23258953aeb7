"""Dataset readers: each format becomes a list of `Record`s, one per image. This file: the record, image loading,
helpers shared by the readers, and Pascal VOC xml. COCO json and YOLO txt are in formats_coco_yolo.py.

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

import csv
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from loguru import logger
from PIL import Image

from .checks import DataError, DataFileNotFound, Problems, clean_boxes

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


def load_image_rgb(path: str) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; grayscale, palette, CMYK and RGBA files are converted.

    No EXIF rotation is applied: annotations refer to the stored pixel grid, the same one `read_image_size` sees.
    """
    if not os.path.isfile(path):
        raise DataFileNotFound(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # np.array, not asarray: PIL's buffer would be read-only
    except IMAGE_ERRORS as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def read_image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header only; no pixel decoding."""
    if not os.path.isfile(path):
        raise DataFileNotFound(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.size
    except IMAGE_ERRORS as e:
        raise DataError(f"cannot read image header of {path}: {e}") from e


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
    except IMAGE_ERRORS as e:
        problems.add("unreadable image", path, f"cannot read image: {e}")
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


# ------------------------------------------------------------------------------------------------ Pascal VOC


def read_voc(
    root: str | list[str],
    split: str,
    class_names: list[str],
    ann_dir: str = "Annotations",
    img_dir: str = "JPEGImages",
    split_file: str | None = None,
    problems: Problems | None = None,
) -> list[Record]:
    """Read a Pascal VOC-layout dataset: root/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt}.

    root: one root, or a list of roots (e.g. VOC2007 + VOC2012) whose records are concatenated.
    split_file: replaces ImageSets/Main/<split>.txt (then `split` is only a name in the log). Relative paths are
        looked up inside root first. Either a .txt with one image id per line (first token; an entry with an image
        extension is taken as a file name), or a .csv whose `filename` column lists image files (one row per box
        is fine, duplicates are merged), e.g. the raccoon dataset's data/train_labels.csv.
    class_names: objects whose <name> is not in this list (compared stripped and lower-case) are skipped with a
        warning, so a subset of classes can be trained.

    VOC coordinates are 1-based inclusive pixel indices (xmin=1 is the first column, xmax=W the last one); they
    become continuous coordinates as x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax. `difficult` objects are
    kept with difficult=True: not trained on, and neither a hit nor a miss for the metric, as VOC's devkit does.
    """
    roots = list(root) if isinstance(root, (list, tuple)) else [root]
    own = problems is None
    problems = problems or Problems(f"VOC {', '.join(map(str, roots))} [{split}]")
    index = class_index(class_names)
    records = []
    for one in roots:
        if not os.path.isdir(one):
            raise DataFileNotFound(f"VOC root directory not found: {one}")
        for image_id, image_file in _voc_split_entries(one, split, split_file):
            xml_path = os.path.join(one, ann_dir, image_id + ".xml")
            record = _read_voc_xml(xml_path, os.path.join(one, img_dir), image_id, image_file, index, problems)
            if record is not None:
                records.append(record)
    return finish_reading(problems, own, records, f"VOC {', '.join(map(str, roots))} [{split}]")


def _voc_split_entries(root: str, split: str, split_file: str | None) -> list[tuple[str, str | None]]:
    """(image id, image file name or None) pairs in file order, duplicates removed."""
    path = resolve_path(root, split_file) if split_file else os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise DataFileNotFound(f"split file not found: {path} (expected ImageSets/Main/<split>.txt or split_file=)")
    try:
        if path.lower().endswith(".csv"):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if "filename" not in (reader.fieldnames or []):
                    raise DataError(f"split csv {path} has no 'filename' column (columns: {reader.fieldnames})")
                names = [os.path.basename(row["filename"].strip()) for row in reader if (row["filename"] or "").strip()]
        else:
            with open(path) as f:
                names = [line.split()[0] for line in f if line.strip() and not line.lstrip().startswith("#")]
    except UnicodeDecodeError as e:
        raise DataError(f"split file {path} is not a text file: {e}") from None
    entries = {}
    for name in names:
        is_file = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        image_id = os.path.splitext(name)[0] if is_file else name
        entries.setdefault(image_id, name if is_file else None)
    if not entries:
        raise DataError(f"split file {path} lists no images")
    return list(entries.items())


def _read_voc_xml(xml_path, image_dir, image_id, image_file, class_index, problems) -> Record | None:
    """The record of one annotation file, or None (recorded in `problems`) when the image cannot be used."""
    if not os.path.isfile(xml_path):
        problems.add("missing annotation", xml_path, "annotation file not found")
        return None
    try:
        annotation = ET.parse(xml_path).getroot()
    except (ET.ParseError, UnicodeDecodeError, OSError) as e:
        problems.add("malformed annotation", xml_path, f"XML does not parse: {e}")
        return None
    if annotation.tag != "annotation":
        problems.add("malformed annotation", xml_path, f"root element is <{annotation.tag}>, expected <annotation>")
        return None

    candidates = _voc_image_names(image_id, image_file, annotation.findtext("filename"))
    image_path = next((p for p in (os.path.join(image_dir, n) for n in candidates) if os.path.isfile(p)), None)
    if image_path is None:
        problems.add("missing image", xml_path, f"no image in {image_dir} (tried {', '.join(candidates)})")
        return None
    size = checked_image_size(image_path, problems, problems.decode_images)
    if size is None:
        return None
    width, height = size
    _check_voc_size(annotation, xml_path, image_path, width, height, problems)

    boxes, labels, difficult = [], [], []
    for obj in annotation.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            problems.add("malformed box", xml_path, "object without a <name>")
            continue
        if name.lower() not in class_index:
            problems.add("unknown class", xml_path, f"class {name!r} is not in class_names")
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            problems.add("malformed box", xml_path, f"object {name!r} has no <bndbox>")
            continue
        try:
            box = [_xml_number(bndbox, k) for k in ("xmin", "ymin", "xmax", "ymax")]
            is_difficult = _xml_flag(obj, "difficult")
        except ValueError as e:
            problems.add("malformed box", xml_path, f"object {name!r}: {e}")
            continue
        boxes.append([box[0] - 1, box[1] - 1, box[2], box[3]])  # 1-based inclusive -> 0-based continuous
        labels.append(class_index[name.lower()])
        difficult.append(is_difficult)
    boxes, labels, difficult = clean_boxes(boxes, labels, difficult, width, height, xml_path, problems)
    return Record(image_path, int(width), int(height), boxes, labels, difficult)


def _check_voc_size(annotation, xml_path, image_path, width, height, problems):
    """<size> is optional; when present it must agree with the image file (which wins)."""
    texts = [annotation.findtext(f"size/{k}") for k in ("width", "height")]
    if all(t is None or not t.strip() for t in texts):
        return
    try:
        claimed = tuple(int(float(t)) for t in texts)
    except (TypeError, ValueError):
        problems.add("size mismatch", xml_path, f"<size> is not two numbers: {texts}; using the real size "
                     f"{width}x{height}")
        return
    if claimed != (0, 0) and claimed != (width, height):
        problems.add("size mismatch", xml_path, f"<size> says {claimed[0]}x{claimed[1]} but {image_path} is "
                     f"{width}x{height}; using the real size")


def _xml_number(element, tag: str) -> float:
    text = element.findtext(tag)
    if text is None or not text.strip():
        raise ValueError(f"missing <{tag}>")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"<{tag}> is not a number: {text!r}") from None


def _xml_flag(element, tag: str) -> bool:
    """A 0/1 flag such as <difficult>; absent means 0."""
    text = (element.findtext(tag) or "0").strip().lower()
    if text in ("0", "1", "0.0", "1.0", "true", "false"):
        return text in ("1", "1.0", "true")
    raise ValueError(f"<{tag}> is {text!r}, expected 0 or 1")


def _voc_image_names(image_id, image_file, xml_filename) -> list[str]:
    """Where the image may be, in order: the split file's name, else <id>.<common extension>; then <filename>."""
    candidates = [image_file] if image_file else [image_id + ext for ext in (".jpg", ".jpeg", ".png", ".JPG")]
    if xml_filename and xml_filename.strip():
        candidates.append(os.path.basename(xml_filename.strip()))
    return candidates
