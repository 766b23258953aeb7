"""COCO json: one annotation file per split (instances_<split>.json), boxes as [x, y, w, h] in pixels. Follows the
bad-input rules of checks.py: a broken entry costs that box or that image and is recorded in the `Problems`
collector; only a file that cannot be read at all raises DataError."""
from __future__ import annotations

import json
import os
from collections import defaultdict

from .checks import DataError, DataFileNotFound, Problems, clean_boxes
from .records import Record, checked_image_size, class_index, finish_reading, require_class_overlap



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
    require_class_overlap(label_of_category.values(), [c["name"] for c in categories], ann_json)

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



def _short(entry) -> str:
    text = str(entry)
    return text if len(text) <= 160 else text[:160] + "..."
