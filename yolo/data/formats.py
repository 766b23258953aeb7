"""Dataset readers (Pascal VOC xml, COCO json, Ultralytics YOLO txt): each format becomes a list of `Record`s,
one per image.

Box convention used everywhere in the project: float x1, y1, x2, y2 in *continuous* pixel coordinates of the
original image. Pixel (column c, row r) covers the square [c, c+1) x [r, r+1), so a box that covers pixel columns
0..9 has x1=0, x2=10 and width x2 - x1 = 10. Each reader converts its format's convention to this one.

Images are read lazily: a reader only opens the file header for the real size; `load_image_rgb` decodes later.
"""
from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from loguru import logger
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Record:
    image_path: str
    width: int  # real image size (the image file wins over what an annotation claims)
    height: int
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in original-image pixels (continuous, see module doc)
    labels: np.ndarray  # (N,) int64 index into class_names
    difficult: np.ndarray  # (N,) bool; kept out of training targets, ignored by the metric


# ----------------------------------------------------------------------------------------------------- images


def load_image_rgb(path: str) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; grayscale, palette, CMYK and RGBA files are converted.

    No EXIF rotation is applied: annotations refer to the stored pixel grid, the same one `read_image_size` sees.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # np.array, not asarray: PIL's buffer would be read-only
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def read_image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header only; no pixel decoding."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image header of {path}: {e}") from e


# ---------------------------------------------------------------------------------------------- shared helpers


class _ProblemLog:
    """Per-file data problems: logs the first few of each kind, then one summary, so a 20k-image dataset with a
    systematic problem gives a readable log instead of 20k lines."""

    def __init__(self, source: str, shown_per_kind: int = 10):
        self.source, self.shown_per_kind = source, shown_per_kind
        self.count = defaultdict(int)

    def warn(self, kind: str, message: str):
        self.count[kind] += 1
        if self.count[kind] <= self.shown_per_kind:
            logger.warning(message)

    def summarize(self):
        for kind, n in self.count.items():
            if n > self.shown_per_kind:
                logger.warning(f"{self.source}: {n} files had {kind} ({n - self.shown_per_kind} not shown above)")


def _class_index(class_names) -> dict[str, int]:
    """Lower-cased, stripped name -> index (VOC names are lower-case; users write 'Person' or 'person ')."""
    if isinstance(class_names, str) or len(class_names) == 0:
        raise ValueError(f"class_names must be a non-empty list of names, got {class_names!r}")
    index = {}
    for i, name in enumerate(class_names):
        key = str(name).strip().lower()
        if key in index:
            raise ValueError(f"class_names has a duplicate (after strip/lower-case): {name!r}")
        index[key] = i
    return index


def _clip_and_filter(boxes, labels, difficult, width, height, file, problems: _ProblemLog) -> Record:
    """Clip boxes to the image and drop empty ones, warning about both; returns the cleaned arrays as a Record."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    was_clipped = (clipped != boxes).any(axis=1)
    has_area = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if (was_clipped & has_area).any():
        problems.warn(
            "boxes outside the image",
            f"{file}: clipped {int((was_clipped & has_area).sum())} box(es) to the image {width}x{height}: "
            f"{boxes[was_clipped & has_area].tolist()}",
        )
    if (~has_area).any():
        problems.warn(
            "zero/negative-area boxes",
            f"{file}: dropped {int((~has_area).sum())} box(es) with zero/negative area (after clipping to "
            f"{width}x{height}): {boxes[~has_area].tolist()}",
        )
    return (
        clipped[has_area],
        np.asarray(labels, dtype=np.int64)[has_area],
        np.asarray(difficult, dtype=bool)[has_area],
    )


def _resolve_path(root: str, path: str) -> str:
    """A relative path is looked up inside root first (so one split_file works for a list of roots), then cwd."""
    if os.path.isabs(path):
        return path
    in_root = os.path.join(root, path)
    return path if (not os.path.exists(in_root) and os.path.exists(path)) else in_root


# ------------------------------------------------------------------------------------------------ Pascal VOC


def read_voc(
    root: str | list[str],
    split: str,
    class_names: list[str],
    ann_dir: str = "Annotations",
    img_dir: str = "JPEGImages",
    split_file: str | None = None,
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
    become continuous coordinates as x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax.
    """
    if isinstance(root, (list, tuple)):
        return [rec for one in root for rec in read_voc(one, split, class_names, ann_dir, img_dir, split_file)]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"VOC root directory not found: {root}")
    class_index = _class_index(class_names)
    problems = _ProblemLog(f"{root} [{split}]")
    records = []
    for image_id, image_file in _voc_split_entries(root, split, split_file):
        xml_path = os.path.join(root, ann_dir, image_id + ".xml")
        image_dir = os.path.join(root, img_dir)
        records.append(_read_voc_xml(xml_path, image_dir, image_id, image_file, class_index, problems))
    problems.summarize()
    num_boxes = sum(len(r.boxes) for r in records)
    logger.info(f"VOC {root} [{split}]: {len(records)} images, {num_boxes} boxes")
    return records


def _voc_split_entries(root: str, split: str, split_file: str | None) -> list[tuple[str, str | None]]:
    """(image id, image file name or None) pairs in file order, duplicates removed."""
    path = _resolve_path(root, split_file) if split_file else os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path} (expected ImageSets/Main/<split>.txt or split_file=)")
    if path.lower().endswith(".csv"):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "filename" not in (reader.fieldnames or []):
                raise ValueError(f"split csv {path} has no 'filename' column (columns: {reader.fieldnames})")
            names = [os.path.basename(row["filename"].strip()) for row in reader if row["filename"].strip()]
    else:
        with open(path) as f:
            names = [line.split()[0] for line in f if line.strip() and not line.lstrip().startswith("#")]
    entries = {}
    for name in names:
        is_file = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        image_id = os.path.splitext(name)[0] if is_file else name
        entries.setdefault(image_id, name if is_file else None)
    if not entries:
        logger.warning(f"split file {path} lists no images")
    return list(entries.items())


def _read_voc_xml(xml_path, image_dir, image_id, image_file, class_index, problems) -> Record:
    if not os.path.isfile(xml_path):
        raise FileNotFoundError(f"annotation not found: {xml_path}")
    try:
        annotation = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"malformed XML in {xml_path}: {e}") from e

    image_path = _find_voc_image(xml_path, image_dir, image_id, image_file, annotation.findtext("filename"))
    width, height = read_image_size(image_path)
    claimed = tuple(int(_xml_number(annotation, f"size/{k}", xml_path, 0)) for k in ("width", "height"))
    if claimed != (0, 0) and claimed != (width, height):
        problems.warn(
            "a <size> that disagrees with the image",
            f"{xml_path}: <size> says {claimed[0]}x{claimed[1]} but {image_path} is {width}x{height}; "
            "using the real size",
        )

    boxes, labels, difficult = [], [], []
    for obj in annotation.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if name not in class_index:
            problems.warn("unknown classes", f"{xml_path}: unknown class {name!r} (not in class_names), box skipped")
            continue
        if obj.find("bndbox") is None:
            raise ValueError(f"{xml_path}: object {name!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (_xml_number(obj, f"bndbox/{k}", xml_path) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])  # 1-based inclusive -> 0-based continuous
        labels.append(class_index[name])
        difficult.append(_xml_number(obj, "difficult", xml_path, 0) != 0)
    boxes, labels, difficult = _clip_and_filter(boxes, labels, difficult, width, height, xml_path, problems)
    return Record(image_path, int(width), int(height), boxes, labels, difficult)


def _xml_number(element, tag: str, xml_path: str, default=None) -> float:
    text = element.findtext(tag)
    if text is None or not text.strip():
        if default is None:
            raise ValueError(f"{xml_path}: missing <{tag}>")
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{xml_path}: <{tag}> is not a number: {text!r}") from None


def _find_voc_image(xml_path, image_dir, image_id, image_file, xml_filename) -> str:
    """The split file's name, else <id>.<common extension>, else the XML's own <filename>."""
    candidates = [image_file] if image_file else [image_id + ext for ext in (".jpg", ".jpeg", ".png", ".JPG")]
    if xml_filename and xml_filename.strip():
        candidates.append(os.path.basename(xml_filename.strip()))
    for name in candidates:
        path = os.path.join(image_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"image for {xml_path} not found in {image_dir} (tried {', '.join(candidates)})")


# ------------------------------------------------------------------------------------------------ COCO JSON


def read_coco(ann_json: str, img_dir: str, class_names: list[str] | None = None) -> tuple[list[Record], list[str]]:
    """Read a COCO detection json. Returns (records, class_names).

    Category ids (sparse in COCO: 1..90) become contiguous indices in category-id order, or the order of
    `class_names` when given (categories not in it are skipped with a warning). COCO boxes [x, y, w, h] are already
    continuous pixel coordinates: x1 = x, x2 = x + w. iscrowd boxes are kept with difficult=True, so they are
    neither trained on nor counted as misses. Images without annotations are kept as background images.
    """
    data = _load_coco_json(ann_json)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    if class_names is None:
        class_names = [c["name"] for c in categories]
    class_index = _class_index(class_names)
    label_of_category = {c["id"]: class_index.get(str(c["name"]).strip().lower()) for c in categories}
    problems = _ProblemLog(ann_json)

    objects_of_image = defaultdict(list)
    for ann in data["annotations"]:
        objects_of_image[ann["image_id"]].append(ann)
    image_ids = {image["id"] for image in data["images"]}
    unmatched = sum(len(anns) for image_id, anns in objects_of_image.items() if image_id not in image_ids)
    if unmatched:
        logger.warning(f"{ann_json}: {unmatched} annotations refer to image ids that are not in 'images'; skipped")

    records = []
    for image in data["images"]:
        image_path = os.path.join(img_dir, image["file_name"])
        width, height = read_image_size(image_path)
        if (image.get("width"), image.get("height")) not in ((width, height), (None, None)):
            problems.warn("a size that disagrees with the image",
                          f"{ann_json}: image {image['file_name']} claims {image.get('width')}x{image.get('height')} "
                          f"but the file is {width}x{height}; using the real size")
        boxes, labels, difficult = [], [], []
        for ann in objects_of_image[image["id"]]:
            label = label_of_category.get(ann["category_id"])
            if label is None:
                problems.warn("unknown classes", f"{ann_json}: image {image['file_name']}: category "
                              f"{ann['category_id']} not in class_names, box skipped")
                continue
            x, y, w, h = ann["bbox"]
            boxes.append([x, y, x + w, y + h])
            labels.append(label)
            difficult.append(bool(ann.get("iscrowd", 0)))
        boxes, labels, difficult = _clip_and_filter(boxes, labels, difficult, width, height,
                                                    f"{ann_json} [{image['file_name']}]", problems)
        records.append(Record(image_path, int(width), int(height), boxes, labels, difficult))
    problems.summarize()
    logger.info(f"COCO {ann_json}: {len(records)} images, {sum(len(r.boxes) for r in records)} boxes")
    return records, list(class_names)


def _load_coco_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError(f"malformed JSON in {path}: {e}") from e
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise ValueError(f"{path} is not a COCO detection file: no {missing} key(s)")
    for kind, keys in (("images", ("id", "file_name")), ("annotations", ("image_id", "category_id", "bbox")),
                       ("categories", ("id", "name"))):
        for entry in data[kind]:
            if any(key not in entry for key in keys) or (kind == "annotations" and len(entry["bbox"]) != 4):
                raise ValueError(f"{path}: an entry of '{kind}' lacks one of {keys} (or bbox is not 4 numbers): "
                                 f"{str(entry)[:200]}")
    return data


# ----------------------------------------------------------------------------------------- YOLO txt (Ultralytics)


def read_yolo_txt(root: str, split: str) -> tuple[list[Record], list[str]]:
    """Read the Ultralytics layout: root/data.yaml (`names`), root/images/<split>/*, root/labels/<split>/<stem>.txt.
    Returns (records, class_names).

    A label line is `class cx cy w h`, normalised to [0, 1] by the image size (a longer line is a segmentation
    polygon `class x1 y1 x2 y2 ...`; its bounding box is used). An image without a label file is a background image;
    a label file without an image is reported with a warning.
    """
    class_names = _yaml_names(os.path.join(root, "data.yaml"))
    image_dir, label_dir = os.path.join(root, "images", split), os.path.join(root, "labels", split)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    image_names = sorted(n for n in os.listdir(image_dir) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    stems = {os.path.splitext(n)[0] for n in image_names}
    label_names = os.listdir(label_dir) if os.path.isdir(label_dir) else []
    orphans = sorted(n for n in label_names if n.endswith(".txt") and n[:-4] not in stems)
    if orphans:
        logger.warning(f"{label_dir}: {len(orphans)} label files have no image, ignored: {orphans[:10]}")

    problems = _ProblemLog(f"{root} [{split}]")
    records = []
    for name in image_names:
        image_path = os.path.join(image_dir, name)
        width, height = read_image_size(image_path)
        label_path = os.path.join(label_dir, os.path.splitext(name)[0] + ".txt")
        boxes, labels = _read_yolo_label_file(label_path, len(class_names), width, height, problems)
        boxes, labels, difficult = _clip_and_filter(boxes, labels, np.zeros(len(labels), bool), width, height,
                                                    label_path, problems)
        records.append(Record(image_path, int(width), int(height), boxes, labels, difficult))
    problems.summarize()
    logger.info(f"YOLO txt {root} [{split}]: {len(records)} images, {sum(len(r.boxes) for r in records)} boxes")
    return records, class_names


def _read_yolo_label_file(path, num_classes, width, height, problems):
    """(boxes (N, 4) in pixels, labels (N,)) of one label file; no file = no objects."""
    boxes, labels = [], []
    if not os.path.isfile(path):
        return boxes, labels
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                label, *coords = line.split()
                label, coords = int(label), np.array(coords, dtype=np.float64)
            except ValueError:
                raise ValueError(f"{path}, line {line_number}: expected 'class cx cy w h', got {line.strip()!r}")
            if len(coords) == 4:
                cx, cy, w, h = coords
                box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            elif len(coords) >= 6 and len(coords) % 2 == 0:  # polygon -> its bounding box
                box = [coords[0::2].min(), coords[1::2].min(), coords[0::2].max(), coords[1::2].max()]
            else:
                raise ValueError(f"{path}, line {line_number}: expected 'class cx cy w h', got {line.strip()!r}")
            if not 0 <= label < num_classes:
                problems.warn("unknown classes", f"{path}, line {line_number}: class {label} is not in data.yaml "
                              f"names (0..{num_classes - 1}), box skipped")
                continue
            boxes.append([box[0] * width, box[1] * height, box[2] * width, box[3] * height])
            labels.append(label)
    return boxes, labels


def _yaml_names(path: str) -> list[str]:
    """The `names:` entry of an Ultralytics data.yaml, without a YAML library. Accepted forms:
    names: [a, b]  |  names: {0: a, 1: b}  |  names:\n  - a\n  - b  |  names:\n  0: a\n  1: b."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data.yaml not found: {path}")
    with open(path) as f:
        lines = [line.split(" #")[0].rstrip() for line in f]
    starts = [i for i, line in enumerate(lines) if line.startswith("names:")]
    if not starts:
        raise ValueError(f"{path}: no top-level 'names:' entry")
    first = starts[0]
    inline = lines[first].split(":", 1)[1].strip()
    unquote = lambda text: text.strip().strip("'\"")  # noqa: E731
    if inline.startswith("["):
        text, i = inline, first
        while "]" not in text and i + 1 < len(lines):  # an inline list may wrap over lines
            i += 1
            text += " " + lines[i].strip()
        names = [unquote(n) for n in text.strip("[] ").split(",") if n.strip()]
    elif inline and not inline.startswith("{"):
        raise ValueError(f"{path}: cannot read 'names: {inline}' (expected a list or a mapping)")
    else:
        block = [item.strip() for item in inline.strip("{} ").split(",") if item.strip()]  # {0: a, 1: b}
        for line in lines[first + 1:] if not inline else []:
            if line and not line[0].isspace():  # the next top-level key ends the block
                break
            if line.strip():
                block.append(line.strip())
        if all(item.startswith("-") for item in block):
            names = [unquote(item[1:]) for item in block]
        else:
            try:
                mapping = {int(k): unquote(v) for k, v in (item.split(":", 1) for item in block)}
            except ValueError:
                raise ValueError(f"{path}: cannot read the 'names:' block {block[:5]}") from None
            if sorted(mapping) != list(range(len(mapping))):
                raise ValueError(f"{path}: 'names:' indices must be 0..{len(mapping) - 1}, got {sorted(mapping)}")
            names = [mapping[i] for i in range(len(mapping))]
    if not names:
        raise ValueError(f"{path}: 'names:' is empty")
    return names
