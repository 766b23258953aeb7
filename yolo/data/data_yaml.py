"""A data.yaml as Ultralytics and Roboflow write them, named by config field `data` (--data path/to/data.yaml):

    path: ../datasets/pets     # the dataset root: relative to the yaml's folder; absent = the yaml's folder
    train: images/train        # an image folder (searched recursively), an image-list .txt, or a list of them,
    val: images/val            #   relative to path; the split named train_split / val_split is read
    test: images/test          #   (--val_split test evaluates on this one)
    names: [cat, dog]          # or {0: cat, 1: dog}; nc, if present, must agree
    download: https://...      # ignored: nothing is ever downloaded

An image's label file is its path with the last images/ folder made labels/ and the extension .txt (Ultralytics'
rule; no images/ folder: beside the image); an image without one is a background image. Roboflow writes
`train: ../train/images` in a yaml that sits beside train/: an entry starting with ../ that does not exist is read
without its ../, as Ultralytics does. The lines of an image list are paths, relative ones to the list's folder.
Labels are read by yolo_txt.py, with its rules.
"""
from __future__ import annotations

import os

from loguru import logger

from .checks import DataError, DataFileNotFound, Problems
from .records import IMAGE_EXTENSIONS, Record, finish_reading
from .yolo_txt import read_labelled_images, read_yaml, report_orphans, yaml_names


def apply_data_yaml(cfg):
    """Set dataset yolo, data_root (the yaml's path) and class_names from the data.yaml of cfg.data, made absolute
    (the run's saved config then finds it from any folder). The splits are read when they are needed."""
    path = os.path.abspath(cfg.data)
    data = read_yaml(path)
    names = yaml_names(path, data)
    if "nc" in data and data["nc"] != len(names):
        raise DataError(f"{path}: nc: {data['nc']} but 'names:' lists {len(names)} classes")
    if data.get("download"):
        logger.info(f"{path}: 'download' is ignored (nothing is downloaded): the images must be on disk")
    cfg.data, cfg.dataset, cfg.data_root, cfg.class_names = path, "yolo", dataset_root(path, data), names
    logger.info(f"data {path}: {len(names)} classes, dataset root {cfg.data_root}")
    return cfg


def dataset_root(path: str, data: dict) -> str:
    """The folder the split entries are relative to: `path`, relative to the yaml's folder; absent = that folder."""
    root = data.get("path")
    if root is None or root == "":
        return os.path.dirname(path)
    if not isinstance(root, str):
        raise DataError(f"{path}: 'path' must be a folder, got {root!r}")
    return os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(root)))


def read_yaml_split(path: str, split: str, class_names: list[str] | None = None,
                    problems: Problems | None = None) -> tuple[list[Record], list[str]]:
    """The records of the data.yaml's `split` entry (train, val, test). Returns (records, class names); see
    read_yolo_txt for class_names and problems."""
    own = problems is None
    problems = problems or Problems(f"YOLO {path} [{split}]")
    data = read_yaml(path)
    pairs = []
    for source in split_sources(path, data, split):
        pairs += folder_pairs(source, problems) if os.path.isdir(source) else list_pairs(source)
    records, class_names = read_labelled_images(pairs, yaml_names(path, data), class_names, path, problems)
    return finish_reading(problems, own, records, f"YOLO {path} [{split}]"), class_names


def split_sources(path: str, data: dict, split: str) -> list[str]:
    """The image folders and image-list files of entry `split`, as absolute paths that exist."""
    entry = data.get(split)
    if entry is None or entry == "" or entry == []:
        raise DataError(f"{path}: no '{split}:' entry (the images of split {split}; the splits a data.yaml names "
                        f"are train, val and test: --val_split test reads test)")
    entries = entry if isinstance(entry, list) else [entry]
    if not all(isinstance(e, str) and e for e in entries):
        raise DataError(f"{path}: '{split}: {entry}' must be a path or a list of paths")
    root = dataset_root(path, data)
    return [resolve_entry(root, e, path, split) for e in entries]


def resolve_entry(root: str, entry: str, path: str, split: str) -> str:
    """The absolute path of one split entry (a Roboflow ../ entry that does not exist: without its ../)."""
    full = os.path.normpath(os.path.join(root, os.path.expanduser(entry)))
    inside = os.path.normpath(os.path.join(root, entry[3:]))  # Roboflow: ../train/images, train/ beside the yaml
    if not os.path.exists(full) and entry.startswith("../") and os.path.exists(inside):
        full = inside
    if not os.path.exists(full):
        raise DataFileNotFound(f"{path}: '{split}: {entry}' not found: {full}")
    if not os.path.isdir(full) and not full.lower().endswith(".txt"):
        raise DataError(f"{path}: '{split}: {entry}' must be an image folder or a .txt list of image paths")
    return full


def label_path(image_path: str) -> str:
    """Ultralytics' rule: the image's path with its last images/ folder made labels/, and the extension .txt."""
    head, images, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    labels = os.path.join(head, "labels", tail) if images else image_path
    return os.path.splitext(labels)[0] + ".txt"


def folder_pairs(folder: str, problems: Problems) -> list[tuple[str, str]]:
    """(image, label file) of every image under `folder`, searched recursively, in sorted order; label files of
    the matching labels/ folder without an image are reported."""
    images = sorted(os.path.join(parent, name) for parent, _, names in os.walk(folder) for name in names
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)
    label_dir = os.path.dirname(label_path(os.path.join(folder, "x.jpg")))
    if label_dir != folder:
        report_orphans(label_dir, {os.path.splitext(os.path.relpath(p, folder))[0] for p in images}, problems)
    return [(image, label_path(image)) for image in images]


def list_pairs(list_file: str) -> list[tuple[str, str]]:
    """(image, label file) of every line of an image list; missing images are left to the reader (skipped, named)."""
    try:
        with open(list_file, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise DataError(f"{list_file} is not a text list of image paths: {e}") from None
    folder = os.path.dirname(list_file)
    images = [os.path.normpath(os.path.join(folder, line)) for line in lines if line and not line.startswith("#")]
    return [(image, label_path(image)) for image in images]
