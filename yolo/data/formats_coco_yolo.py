"""COCO json and Ultralytics / Roboflow YOLO txt readers (the record, image helpers and VOC are in formats.py).

Both follow the bad-input rules of checks.py: a broken entry, line or file costs that box or that image and is
recorded in the `Problems` collector; only a dataset that cannot be read at all raises DataError.
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import numpy as np

from .checks import DataError, DataFileNotFound, Problems, clean_boxes
from .formats import IMAGE_EXTENSIONS, Record, checked_image_size, class_index, finish_reading

# ------------------------------------------------------------------------------------------------ COCO JSON


def read_coco(ann_json: str, img_dir: str, class_names: list[str] | None = None,
              problems: Problems | None = None) -> tuple[list[Record], list[str]]:
    """Read a COCO detection json (`instances_*.json`). Returns (records, class_names).

    Category ids (sparse in COCO: 1..90) become contiguous indices in category-id order, or the order of
    `class_names` when given (annotations of other categories are skipped as unknown classes). COCO boxes
    [x, y, w, h] are already continuous pixel coordinates: x1 = x, x2 = x + w. iscrowd boxes are kept with
    difficult=True: never trained on, and the metric treats them as COCO does (a detection on a crowd is neither
    a hit nor a false positive). Images without annotations are kept as background images.
    """
    own = problems is None
    problems = problems or Problems(f"COCO {ann_json}")
    data = _load_coco_json(ann_json)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    if class_names is None:
        class_names = [str(c["name"]) for c in categories]
    index = class_index(class_names)
    label_of_category = {c["id"]: index.get(str(c["name"]).strip().lower()) for c in categories}
    _require_overlap(label_of_category.values(), [c["name"] for c in categories], ann_json)

    images = {}
    for image in data["images"]:
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str) or "id" not in image:
            problems.add("malformed annotation", ann_json, f"'images' entry without id or file_name: {_short(image)}")
        else:
            images[image["id"]] = image
    objects_of_image = defaultdict(list)
    for ann in data["annotations"]:
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id in images:
            objects_of_image[image_id].append(ann)
        else:
            problems.add("orphan annotation", ann_json, f"annotation of an image id not in 'images': {_short(ann)}")

    records = []
    for image in images.values():
        record = _coco_record(image, objects_of_image[image["id"]], img_dir, ann_json, label_of_category, problems)
        if record is not None:
            records.append(record)
    return finish_reading(problems, own, records, f"COCO {ann_json}"), list(class_names)


def _coco_record(image, annotations, img_dir, ann_json, label_of_category, problems) -> Record | None:
    image_path = os.path.join(img_dir, image["file_name"])
    size = checked_image_size(image_path, problems, problems.decode_images)
    if size is None:
        return None
    width, height = size
    where = f"{ann_json} [{image['file_name']}]"
    if (image.get("width"), image.get("height")) not in ((width, height), (None, None)):
        problems.add("size mismatch", where, f"the json says {image.get('width')}x{image.get('height')} but the "
                     f"file is {width}x{height}; using the real size")
    boxes, labels, difficult = [], [], []
    for ann in annotations:
        box = _coco_box(ann.get("bbox"))
        if box is None:
            problems.add("malformed box", where, f"bbox is not 4 numbers: {_short(ann)}")
            continue
        label = label_of_category.get(ann.get("category_id"))
        if label is None:
            problems.add("unknown class", where, f"category {ann.get('category_id')!r} is not in class_names")
            continue
        boxes.append(box)
        labels.append(label)
        difficult.append(bool(ann.get("iscrowd", 0)))
    boxes, labels, difficult = clean_boxes(boxes, labels, difficult, width, height, where, problems)
    return Record(image_path, int(width), int(height), boxes, labels, difficult)


def _coco_box(bbox) -> list[float] | None:
    """[x, y, w, h] -> [x1, y1, x2, y2], or None when it is not four numbers (NaN passes: clean_boxes reports it)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return None
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _load_coco_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise DataFileNotFound(f"COCO annotation file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"malformed JSON in {path}: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a COCO detection file: the top level is a {type(data).__name__}, not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path} is not a COCO detection file: '{key}' is missing or not a list")
    for category in data["categories"]:  # a handful of hand-written entries: a broken one means a broken file
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise DataError(f"{path}: a 'categories' entry lacks id or name: {_short(category)}")
    return data


def _require_overlap(labels, dataset_names, path):
    """No dataset class in class_names at all is a wrong config, not bad data: say so instead of reading boxes."""
    if all(label is None for label in labels):
        raise DataError(f"none of the classes of {path} is in the config's class_names; the dataset's names are "
                        f"{list(dataset_names)}")


def _short(entry) -> str:
    text = str(entry)
    return text if len(text) <= 160 else text[:160] + "..."


# ----------------------------------------------------------------------------------------- YOLO txt (Ultralytics)


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
    _require_overlap(label_of_id, names, os.path.join(root, "data.yaml"))
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
