"""Pascal VOC: one xml file per image under Annotations/, split lists under ImageSets/Main/ (see records.py for
the box convention and the bad-input rules).

A folder without ImageSets/Main (labelImg's output, Roboflow's "Pascal VOC" export with train/, valid/, test/ each
holding *.jpg and *.xml side by side) has no split lists: every annotation in it is read, sorted by name. For the
Roboflow layout set ann_dir = img_dir = "", train_dirs = ["train"], val_dirs = ["valid"].
"""
from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET

from loguru import logger

from .checks import DataError, DataFileNotFound, Problems, clean_boxes
from .records import IMAGE_EXTENSIONS, Record, checked_image_size, class_index, finish_reading, resolve_path

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
        for image_id, image_file in _voc_split_entries(one, split, split_file, ann_dir):
            xml_path = os.path.join(one, ann_dir, image_id + ".xml")
            record = _read_voc_xml(xml_path, os.path.join(one, img_dir), image_id, image_file, index, problems)
            if record is not None:
                records.append(record)
    return finish_reading(problems, own, records, f"VOC {', '.join(map(str, roots))} [{split}]")


def has_split_lists(root: str) -> bool:
    """Whether a VOC root has ImageSets/Main; without it every annotation of the folder is read."""
    return os.path.isdir(os.path.join(root, "ImageSets", "Main"))


def _voc_split_entries(root: str, split: str, split_file: str | None, ann_dir: str) -> list[tuple[str, str | None]]:
    """(image id, image file name or None) pairs in file order, duplicates removed."""
    if not split_file and not has_split_lists(root):
        return _all_annotations(root, ann_dir)
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


def _all_annotations(root: str, ann_dir: str) -> list[tuple[str, None]]:
    """Every <id>.xml of root/ann_dir, sorted: the split of a folder without ImageSets/Main."""
    folder = os.path.join(root, ann_dir)
    if not os.path.isdir(folder):
        raise DataFileNotFound(f"{root} has neither ImageSets/Main/ nor the annotation folder {folder}")
    ids = sorted(os.path.splitext(n)[0] for n in os.listdir(folder) if n.lower().endswith(".xml"))
    if not ids:
        raise DataError(f"{root} has no ImageSets/Main/ split lists and {folder} holds no .xml annotations")
    logger.info(f"{root}: no ImageSets/Main/, so every annotation is read: {len(ids)} .xml files of {folder}, "
                f"sorted by name")
    return [(image_id, None) for image_id in ids]


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
