"""YOLO txt (Ultralytics / Roboflow): images/<split>/*, labels/<split>/<stem>.txt with normalised `class cx cy w h`
lines, class names in data.yaml. Follows the bad-input rules of checks.py (see records.py)."""
from __future__ import annotations

import math
import os

import numpy as np

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
    names = yaml_names(os.path.join(root, "data.yaml"))
    class_names = names if class_names is None else class_names
    index = class_index(class_names)
    label_of_id = [index.get(name.strip().lower()) for name in names]  # dataset class id -> config index or None
    require_class_overlap(label_of_id, names, os.path.join(root, "data.yaml"))
    image_dir, label_dir = _yolo_dirs(root, split)
    image_names = sorted(n for n in os.listdir(image_dir) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    stems = {os.path.splitext(n)[0] for n in image_names}
    label_names = sorted(os.listdir(label_dir)) if os.path.isdir(label_dir) else []
    for name in label_names:
        if name.endswith(".txt") and name[:-4] not in stems:
            problems.add("orphan annotation", os.path.join(label_dir, name), "label file without an image, ignored")

    records = []
    for name in image_names:
        image_path = os.path.join(image_dir, name)
        size = checked_image_size(image_path, problems, problems.decode_images)
        if size is None:
            continue
        width, height = size
        label_path = os.path.join(label_dir, os.path.splitext(name)[0] + ".txt")
        objects = _read_yolo_label_file(label_path, label_of_id, names, width, height, problems)
        if objects is None:
            continue
        boxes, labels = objects
        boxes, labels, difficult = clean_boxes(boxes, labels, np.zeros(len(labels), bool), width, height,
                                               label_path, problems)
        records.append(Record(image_path, int(width), int(height), boxes, labels, difficult))
    return finish_reading(problems, own, records, f"YOLO txt {root} [{split}]"), list(class_names)


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


def yaml_names(path: str) -> list[str]:
    """The `names:` entry of an Ultralytics data.yaml, without a YAML library. Accepted forms:
    names: [a, b]  |  names: {0: a, 1: b}  |  names:\n  - a\n  - b  |  names:\n  0: a\n  1: b."""
    if not os.path.isfile(path):
        raise DataFileNotFound(f"data.yaml not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split(" #")[0].rstrip() for line in f]
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not a text file: {e}") from None
    starts = [i for i, line in enumerate(lines) if line.startswith("names:")]
    if not starts:
        raise DataError(f"{path}: no top-level 'names:' entry")
    first = starts[0]
    inline = lines[first].split(":", 1)[1].strip()
    if inline.startswith("["):
        text, i = inline, first
        while "]" not in text and i + 1 < len(lines):  # an inline list may wrap over lines
            i += 1
            text += " " + lines[i].strip()
        names = [_unquote(n) for n in text.strip("[] ").split(",") if n.strip()]
    elif inline and not inline.startswith("{"):
        raise DataError(f"{path}: cannot read 'names: {inline}' (expected a list or a mapping)")
    else:
        block = [item.strip() for item in inline.strip("{} ").split(",") if item.strip()]  # {0: a, 1: b}
        for line in lines[first + 1:] if not inline else []:
            if line and not line[0].isspace():  # the next top-level key ends the block
                break
            if line.strip():
                block.append(line.strip())
        names = _names_from_block(block, path)
    if not names:
        raise DataError(f"{path}: 'names:' is empty")
    return names


def _names_from_block(block: list[str], path: str) -> list[str]:
    if all(item.startswith("-") for item in block):
        return [_unquote(item[1:]) for item in block]
    try:
        mapping = {int(k): _unquote(v) for k, v in (item.split(":", 1) for item in block)}
    except ValueError:
        raise DataError(f"{path}: cannot read the 'names:' block {block[:5]}") from None
    if sorted(mapping) != list(range(len(mapping))):
        raise DataError(f"{path}: 'names:' indices must be 0..{len(mapping) - 1}, got {sorted(mapping)}")
    return [mapping[i] for i in range(len(mapping))]


def _unquote(text: str) -> str:
    return text.strip().strip("'\"")
