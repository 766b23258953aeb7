"""YOLO txt (Ultralytics / Roboflow): images/<split>/*, labels/<split>/<stem>.txt with normalised `class cx cy w h`
lines, class names in data.yaml. Follows the bad-input rules of checks.py (see records.py). A data.yaml given as
config field `data`, whose entries name the split folders or image lists, is read by data_yaml.py."""
from __future__ import annotations

import math
import os

import numpy as np
import yaml

from .checks import DataError, DataFileNotFound, Problems, clean_boxes
from .records import (IMAGE_EXTENSIONS, Record, checked_image_size, class_index, finish_reading,
                      require_class_overlap)

def read_yolo_txt(root: str, split: str, class_names: list[str] | None = None,
                  problems: Problems | None = None) -> tuple[list[Record], list[str]]:
    """Read the Ultralytics layout root/images/<split>/*, root/labels/<split>/<stem>.txt, or Roboflow's
    root/<split>/images, root/<split>/labels; class names from root/data.yaml (`names`). Returns (records, names).

    A label line is `class cx cy w h`, normalised to [0, 1] by the image size (a longer line is a segmentation
    polygon `class x1 y1 x2 y2 ...`; its bounding box is used). An image without a label file is a background image;
    a label file without an image is reported. class_names: the config's classes; dataset classes are matched by
    name and those not in the list are skipped (None = the data.yaml names as they are).
    """
    own = problems is None
    problems = problems or Problems(f"YOLO txt {root} [{split}]")
    yaml_path = os.path.join(root, "data.yaml")
    names = yaml_names(yaml_path)
    image_dir, label_dir = _yolo_dirs(root, split)
    image_names = sorted(n for n in os.listdir(image_dir) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    report_orphans(label_dir, {os.path.splitext(n)[0] for n in image_names}, problems)
    pairs = [(os.path.join(image_dir, n), os.path.join(label_dir, os.path.splitext(n)[0] + ".txt"))
             for n in image_names]
    records, class_names = read_labelled_images(pairs, names, class_names, yaml_path, problems)
    return finish_reading(problems, own, records, f"YOLO txt {root} [{split}]"), class_names


def report_orphans(label_dir: str, image_stems: set, problems: Problems):
    """Record every label file of label_dir whose image is not among image_stems."""
    for name in sorted(os.listdir(label_dir)) if os.path.isdir(label_dir) else []:
        if name.endswith(".txt") and name[:-4] not in image_stems:
            problems.add("orphan annotation", os.path.join(label_dir, name), "label file without an image, ignored")


def read_labelled_images(pairs, names: list[str], class_names: list[str] | None, yaml_path: str,
                         problems: Problems) -> tuple[list[Record], list[str]]:
    """Records of (image path, label file path) pairs; names: the dataset's classes (of yaml_path), class_names: the
    config's (None = names). Unusable images and lines are recorded in `problems` and skipped."""
    class_names = names if class_names is None else class_names
    index = class_index(class_names)
    label_of_id = [index.get(name.strip().lower()) for name in names]  # dataset class id -> config index or None
    require_class_overlap(label_of_id, names, yaml_path)
    records = []
    for image_path, label_path in pairs:
        size = checked_image_size(image_path, problems, problems.decode_images)
        if size is None:
            continue
        width, height = size
        objects = _read_yolo_label_file(label_path, label_of_id, names, width, height, problems)
        if objects is None:
            continue
        boxes, labels = objects
        boxes, labels, difficult = clean_boxes(boxes, labels, np.zeros(len(labels), bool), width, height,
                                               label_path, problems)
        records.append(Record(image_path, int(width), int(height), boxes, labels, difficult))
    return records, list(class_names)


def _yolo_dirs(root: str, split: str) -> tuple[str, str]:
    """(image folder, label folder): the label folder is the image folder with its 'images' part made 'labels'."""
    for images, labels in ((("images", split), ("labels", split)), ((split, "images"), (split, "labels"))):
        if os.path.isdir(os.path.join(root, *images)):
            return os.path.join(root, *images), os.path.join(root, *labels)
    raise DataFileNotFound(f"image folder not found: {os.path.join(root, 'images', split)} "
                           f"(nor {os.path.join(root, split, 'images')})")


def _read_yolo_label_file(path, label_of_id, names, width, height, problems):
    """(boxes in pixels, labels) of one label file; no file = a background image; None = unreadable file."""
    boxes, labels = [], []
    if not os.path.isfile(path):
        return boxes, labels
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (UnicodeDecodeError, OSError) as e:
        problems.add("malformed annotation", path, f"label file is not readable text: {e}")
        return None
    for line_number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            class_id, box = _yolo_line(line)
        except ValueError as e:
            problems.add("malformed box", path, f"line {line_number}: {e}")
            continue
        label = label_of_id[class_id] if 0 <= class_id < len(label_of_id) else None
        if label is None:
            what = f"class {class_id}" + (f" ({names[class_id]!r})" if 0 <= class_id < len(names) else "")
            problems.add("unknown class", path, f"line {line_number}: {what} is not in class_names "
                         f"(data.yaml has {len(names)} names)")
            continue
        boxes.append([box[0] * width, box[1] * height, box[2] * width, box[3] * height])
        labels.append(label)
    return boxes, labels


def _yolo_line(line: str) -> tuple[int, list[float]]:
    """`class cx cy w h` or `class x1 y1 x2 y2 x3 y3 ...` -> (class id, normalised x1, y1, x2, y2)."""
    fields = line.split()
    try:
        class_value, coords = float(fields[0]), np.array(fields[1:], dtype=np.float64)
    except ValueError:
        raise ValueError(f"expected 'class cx cy w h' numbers, got {line.strip()!r}") from None
    if not math.isfinite(class_value) or class_value != int(class_value):
        raise ValueError(f"class {fields[0]!r} is not an integer")
    if len(coords) == 4:
        cx, cy, w, h = coords
        return int(class_value), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    if len(coords) >= 6 and len(coords) % 2 == 0:  # polygon -> its bounding box
        return int(class_value), [coords[0::2].min(), coords[1::2].min(), coords[0::2].max(), coords[1::2].max()]
    raise ValueError(f"expected 'class cx cy w h' (or a polygon), got {len(fields)} fields: {line.strip()!r}")


def read_yaml(path: str) -> dict:
    """The mapping of a data.yaml (PyYAML's safe loader: plain data, no code)."""
    if not os.path.isfile(path):
        raise DataFileNotFound(f"data.yaml not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not a text file: {e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise DataError(f"{path} is not valid YAML{line}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must be a mapping of keys (names:, train:, val: ...), got {type(data).__name__}")
    return data


def yaml_names(path: str, data: dict | None = None) -> list[str]:
    """The class names of a data.yaml's `names:`, a list (names: [a, b], or one `- a` per line) or a mapping of
    the ids 0 .. n-1 (names: {0: a, 1: b}, or one `0: a` per line). data: the file's mapping when read already."""
    names = read_yaml(path).get("names") if data is None else data.get("names")
    if names is None:
        raise DataError(f"{path}: no top-level 'names:' entry")
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):
            raise DataError(f"{path}: 'names:' indices must be 0..{len(names) - 1}, got {sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    elif not isinstance(names, list):
        raise DataError(f"{path}: cannot read 'names: {names}' (expected a list or a mapping)")
    if not names:
        raise DataError(f"{path}: 'names:' is empty")
    for i, name in enumerate(names):  # YAML reads a bare no / yes / null / 1.5 as no name: those must be quoted
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
            raise DataError(f"{path}: class {i} of 'names:' is {name!r}, not a name; quote it ('{name}')")
    return [str(name) for name in names]
