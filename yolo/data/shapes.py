"""Built-in synthetic detection dataset ("shapes"): the project's default, so nothing is ever downloaded.

Images of varied size (256..416 px per side, so letterboxing matters) with a smooth random colour gradient,
low-contrast texture (elongated ellipses, lines) and gaussian noise, showing 0..8 filled shapes (about 5 % of images
are empty). Shape sizes are log-uniform from 16..20 px (per shape, MIN_SIZE) to 60 % of the short side, so all three
detector scales get objects. Each shape gets a colour far from the background under it, and shapes overlap only a
little (see `_place_objects`).

`ensure_shapes_dataset` writes it in Pascal VOC layout (read it back with `formats.read_voc`):
    root/JPEGImages/<id>.jpg, root/Annotations/<id>.xml, root/ImageSets/Main/{train,val}.txt, root/meta.json
Image `index` of split `split` is drawn from np.random.default_rng([seed, SPLIT_CODE[split], index]) alone, so
generation is deterministic in any order and process, and the val set does not change when num_train does.
Training (and the commands that show what it would see) generate it; commands that only read data (val, predict,
export, rsa, check) call `require_shapes_dataset`, which writes nothing.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from functools import partial
from xml.sax.saxutils import escape

import numpy as np
from loguru import logger
from PIL import Image, ImageDraw

from .checks import DataError

GENERATOR_VERSION = 2  # bump when the rendering changes, so existing datasets get regenerated
GENERATOR = "yolo.data.shapes"  # meta.json marks a folder as this generator's own (it then may rewrite it)
DEFAULT_CLASSES = ("circle", "square", "triangle")
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
# smallest drawn size (px) per shape: below these a triangle/star/hexagon stops looking like itself
MIN_SIZE = {"circle": 16, "square": 16, "triangle": 16, "diamond": 16, "cross": 18, "ring": 18, "star": 20,
            "hexagon": 20}
SPLIT_CODE = {"train": 0, "val": 1}
IMAGE_SIDE_RANGE = (256, 416)  # inclusive, width and height drawn independently
MAX_OBJECTS = 8
EMPTY_IMAGE_FRACTION = 0.05
MAX_SIZE_FRACTION = 0.6  # of the image's short side
MAX_COVERED_FRACTION = 0.2  # of an earlier (larger) object's box that a later object may cover
MIN_COLOUR_DISTANCE = 100.0  # RGB distance between an object and the mean background under it
JPEG_QUALITY = 90


class NotGenerated(DataError):
    """The built-in dataset is missing, unfinished or of other classes, and the command only reads data: a matter of
    running training first, not a problem of the data."""


# ------------------------------------------------------------------------------------------- one image


def render_shapes_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    class_names=DEFAULT_CLASSES,
    *,
    num_objects: int | None = None,
    plain_background: bool = False,
    class_weights=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image. Returns image (H, W, 3) uint8, boxes (N, 4) float32 x1, y1, x2, y2, labels (N,) int64.

    Boxes are the tight boxes of the drawn shape pixels in continuous coordinates: a shape covering pixel columns
    c0..c1 has x1 = c0, x2 = c1 + 1. num_objects: fixed count instead of the random 0..8 (may place fewer if the
    image is too crowded). plain_background: one flat colour, no texture and no noise (for tests and figures).
    class_weights: relative frequency of each class (None = equal, the images drawn without it).
    """
    _check_class_names(class_names)
    if plain_background:
        canvas = np.empty((height, width, 3), np.float32)
        canvas[:] = rng.integers(40, 216, 3)
    else:
        canvas = _textured_background(rng, width, height)  # (H, W, 3) float32

    boxes, labels = [], []
    for label, x0, y0, size in _place_objects(rng, width, height, class_names, num_objects, class_weights):
        mask = _shape_mask(rng, class_names[label], size)  # (size, size) bool
        region = canvas[y0 : y0 + size, x0 : x0 + size]  # a view: drawing into it draws on the canvas
        region[mask] = _contrasting_colour(rng, region[mask].mean(axis=0))
        rows, cols = np.nonzero(mask)
        boxes.append([x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1])
        labels.append(label)

    if not plain_background:
        # sensor-like luminance noise; one value per pixel shared by R, G, B is 3x cheaper than per channel
        noise = rng.standard_normal((height, width, 1), dtype=np.float32)
        canvas += noise * np.float32(rng.uniform(3.0, 12.0))
    image = canvas.round().clip(0, 255).astype(np.uint8)
    return image, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _textured_background(rng, width, height) -> np.ndarray:
    # smooth gradient: a 3x3 grid of random colours, bilinearly stretched over the image
    grid = rng.integers(30, 226, (3, 3, 3), dtype=np.uint8)
    background = Image.fromarray(grid).resize((width, height), Image.BILINEAR)
    # low-contrast clutter, so "anything that differs from the background" is not a valid detector
    draw = ImageDraw.Draw(background)
    base = np.asarray(background)
    for _ in range(rng.integers(3, 12)):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = tuple(int(c) for c in (base[y, x].astype(int) + rng.integers(-20, 21, 3)).clip(0, 255))
        if rng.random() < 0.5:  # elongated (aspect >= 1.7) so that no blob passes for a circle
            long_radius = rng.uniform(8, 80)
            short_radius = long_radius * rng.uniform(0.2, 0.6)
            rx, ry = (long_radius, short_radius) if rng.random() < 0.5 else (short_radius, long_radius)
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour)
        else:
            x2, y2 = x + rng.integers(-150, 151), y + rng.integers(-150, 151)
            draw.line([x, y, int(x2), int(y2)], fill=colour, width=int(rng.integers(1, 6)))
    return np.asarray(background, dtype=np.float32)


def _place_objects(rng, width, height, class_names, num_objects, class_weights=None) -> list[tuple[int, int, int, int]]:
    """(label, x0, y0, size) of square slots, largest first. Largest-first drawing means a later object covers
    at most MAX_COVERED_FRACTION of any earlier one's box, and is itself fully visible."""
    if num_objects is None:
        num_objects = 0 if rng.random() < EMPTY_IMAGE_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))
    max_size = MAX_SIZE_FRACTION * min(width, height)
    if class_weights is None:  # (kept apart: the same random numbers as ever, so the same images)
        labels = rng.integers(0, len(class_names), num_objects)
    else:
        p = np.asarray(class_weights, np.float64)
        labels = rng.choice(len(class_names), num_objects, p=p / p.sum())
    min_sizes = np.array([MIN_SIZE[class_names[i]] for i in labels], np.float64)
    sizes = np.exp(rng.uniform(np.log(min_sizes), np.log(max_size))).astype(int)  # log-uniform
    sizes = sizes.clip(1, min(width, height))  # only matters for tiny images (notebooks)
    order = np.argsort(-sizes, kind="stable")

    placed = []
    for label, size in zip(labels[order], sizes[order]):
        for _attempt in range(30):
            x0, y0 = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
            if all(_overlap(x0, y0, size, *other[1:]) <= MAX_COVERED_FRACTION * other[3] ** 2 for other in placed):
                placed.append((int(label), x0, y0, int(size)))
                break
    return placed


def _overlap(x0, y0, size, other_x0, other_y0, other_size) -> int:
    """Intersection area of two square slots."""
    w = min(x0 + size, other_x0 + other_size) - max(x0, other_x0)
    h = min(y0 + size, other_y0 + other_size) - max(y0, other_y0)
    return max(w, 0) * max(h, 0)


def _shape_mask(rng, shape: str, size: int) -> np.ndarray:
    """(size, size) bool mask of one shape, drawn to fill the slot (rotated shapes fill less of it)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    last = size - 1  # PIL's ellipse/rectangle corners are inclusive pixel coordinates
    centre, radius = last / 2, last / 2
    angle = rng.uniform(0, 2 * math.pi)  # for the shapes that are allowed to rotate

    def polygon(radii, start_angle):
        n = len(radii)
        return [(centre + r * math.cos(start_angle + 2 * math.pi * k / n),
                 centre + r * math.sin(start_angle + 2 * math.pi * k / n)) for k, r in enumerate(radii)]

    if shape == "circle":
        draw.ellipse([0, 0, last, last], fill=255)
    elif shape == "square":
        draw.rectangle([0, 0, last, last], fill=255)
    elif shape == "triangle":
        draw.polygon(polygon([radius] * 3, angle), fill=255)
    elif shape == "star":
        draw.polygon(polygon([radius, 0.45 * radius] * 5, angle), fill=255)
    elif shape == "hexagon":
        draw.polygon(polygon([radius] * 6, angle), fill=255)
    elif shape == "diamond":  # a rhombus standing on a corner, narrower than tall
        half_width = radius * rng.uniform(0.6, 1.0)
        corners = [(centre, 0), (centre + half_width, centre), (centre, last), (centre - half_width, centre)]
        draw.polygon(corners, fill=255)
    elif shape == "cross":  # an axis-aligned plus sign
        half_arm = max(1.0, 0.15 * size)
        draw.rectangle([centre - half_arm, 0, centre + half_arm, last], fill=255)
        draw.rectangle([0, centre - half_arm, last, centre + half_arm], fill=255)
    elif shape == "ring":  # a circle outline, thick enough to survive downsampling
        draw.ellipse([0, 0, last, last], outline=255, width=max(3, round(0.18 * size)))
    else:
        raise ValueError(f"unknown shape {shape!r}; supported: {', '.join(SHAPES)}")
    return np.asarray(mask) > 0


def _contrasting_colour(rng, background_rgb: np.ndarray) -> np.ndarray:
    """A random colour at least MIN_COLOUR_DISTANCE from the background; colour says nothing about the class."""
    for _ in range(30):
        colour = rng.integers(0, 256, 3).astype(np.float32)
        if np.linalg.norm(colour - background_rgb) >= MIN_COLOUR_DISTANCE:
            return colour
    return np.where(background_rgb > 127, 0.0, 255.0).astype(np.float32)  # the farthest cube corner


def _check_class_names(class_names):
    unknown = [name for name in class_names if name not in SHAPES]
    if isinstance(class_names, str) or not class_names or unknown:
        raise ValueError(f"shapes class_names must be a non-empty list from {SHAPES}; got {class_names!r}")


# ------------------------------------------------------------------------------------------- the dataset


def render_dataset_image(seed: int, split: str, index: int, class_names=DEFAULT_CLASSES, class_weights=None):
    """Image `index` of `split` exactly as ensure_shapes_dataset draws it (before JPEG): (image, boxes, labels)."""
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    width, height = (int(v) for v in rng.integers(IMAGE_SIDE_RANGE[0], IMAGE_SIDE_RANGE[1] + 1, 2))
    return render_shapes_image(rng, width, height, class_names, class_weights=class_weights)


def ensure_shapes_dataset(
    root: str,
    num_train: int = 2000,
    num_val: int = 200,
    seed: int = 0,
    class_names=DEFAULT_CLASSES,
    *,
    num_workers: int | None = None,
    class_weights=None,
) -> str:
    """Generate the shapes dataset in VOC layout under root unless root/meta.json shows these exact parameters.

    The generator writes only into a folder that does not exist, is empty, or holds its own meta.json (a marker
    written before anything else, marked complete last, so an interrupted generation is redone on the next call);
    any other folder is a user's and raises DataError. Returns root.
    num_workers: processes for generation (default: up to 8 available cores; 1 = in this process).
    class_weights: relative frequency of each class, both splits (None = equal).
    """
    _check_class_names(class_names)
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train and num_val must be >= 0, got {num_train}, {num_val}")
    params = {"generator": GENERATOR, "version": GENERATOR_VERSION, "num_train": int(num_train),
              "num_val": int(num_val), "seed": int(seed), "class_names": list(class_names)}
    if class_weights is not None:  # only then: a folder generated without weights stays valid as it is
        params["class_weights"] = [float(w) for w in class_weights]
    meta_path = os.path.join(root, "meta.json")
    if _read_meta(meta_path) == {**params, "complete": True} and all(
        os.path.isfile(os.path.join(root, "ImageSets", "Main", f"{s}.txt")) for s in SPLIT_CODE
    ):
        return root

    _check_own_folder(root)
    _say_what_is_replaced(root, _read_meta(meta_path), params)
    start = time.time()
    logger.info(f"generating shapes dataset in {root}: {num_train} train + {num_val} val images, "
                f"classes {list(class_names)}")
    os.makedirs(root, exist_ok=True)
    _write_meta(meta_path, {**params, "complete": False})  # claims the folder before anything else is written
    _remove_previous(root)
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)

    jobs = [(split, i) for split, n in (("train", num_train), ("val", num_val)) for i in range(n)]
    write = partial(_write_dataset_image, root, int(seed), tuple(class_names), params.get("class_weights"))
    if num_workers is None:
        num_workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if num_workers > 1 and len(jobs) > 50 and not multiprocessing.current_process().daemon:
        with multiprocessing.Pool(num_workers) as pool:
            for _ in pool.imap_unordered(write, jobs, chunksize=16):
                pass
    else:  # a daemon process (e.g. a DataLoader worker) may not start children
        for job in jobs:
            write(job)

    for split, n in (("train", num_train), ("val", num_val)):
        with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.writelines(f"{_image_id(split, i)}\n" for i in range(n))
    _write_meta(meta_path, {**params, "complete": True})  # only once everything else is written
    logger.info(f"shapes dataset ready in {time.time() - start:.1f} s: {root}")
    return root


def require_shapes_dataset(root: str, num_train: int, num_val: int, seed: int, class_names=DEFAULT_CLASSES, *,
                           class_weights=None) -> dict:
    """Check, writing nothing, that root holds a finished generation of the built-in dataset for class_names, and
    return its meta.json. Commands that only read data (val, predict, export, rsa, check) call this instead of
    ensure_shapes_dataset: evaluating a model of other classes must not delete the images a training may be reading.
    Sizes and seed other than the config's are read as they are (logged). Otherwise a DataError that names the
    training command which generates the data."""
    class_names = list(class_names)
    meta = _read_meta(os.path.join(root, "meta.json"))
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("generator") != GENERATOR:
        what = ("holds files the generator did not write (your dataset? give its format: --dataset voc, coco or "
                "yolo)" if os.path.isdir(root) and os.listdir(root) else "holds no built-in shapes dataset")
        raise NotGenerated(f"data_root {root} {what}; only training generates the built-in one: "
                           f"{_train_command(root, class_names)}")
    if not meta.get("complete"):
        raise NotGenerated(f"the generation of the built-in shapes dataset in {root} did not finish (or is running "
                           f"now); the training that generates it finishes it: "
                           f"{_train_command(root, meta.get('class_names'))}")
    if meta.get("class_names") != class_names:
        raise NotGenerated(f"data_root {root} holds the built-in shapes dataset generated for classes "
                           f"{meta.get('class_names')}, not {class_names}, and only training regenerates it; for data "
                           f"of these classes train into a new folder: {_train_command('NEW_FOLDER', class_names)}")
    stored = (meta.get("num_train"), meta.get("num_val"), meta.get("seed"), meta.get("class_weights"))
    weights = None if class_weights is None else [float(w) for w in class_weights]
    if stored != (num_train, num_val, seed, weights):
        logger.info(f"reading the built-in shapes dataset in {root} as it was generated ({stored[0]} train + "
                    f"{stored[1]} val images, seed {stored[2]}, class weights {stored[3]}; the config says "
                    f"{num_train} + {num_val}, seed {seed}, class weights {weights}): only training regenerates it")
    return meta


def _train_command(root, class_names) -> str:
    """The command that generates the built-in dataset of class_names in root (and trains on it)."""
    names = "" if list(class_names or DEFAULT_CLASSES) == list(DEFAULT_CLASSES) else f' --class_names "{class_names}"'
    return f"python main.py --task train --data_root {root}{names}"


def _say_what_is_replaced(root: str, previous: dict | None, params: dict):
    """Log, before the generator rewrites its own folder, what the folder held and which images go."""
    if not isinstance(previous, dict):
        return
    changes = [f"{key} {previous.get(key)} -> {value}" for key, value in params.items() if previous.get(key) != value]
    if not previous.get("complete"):
        changes.append("an unfinished generation")
    logger.warning(f"regenerating the shapes dataset in {root} ({', '.join(changes)}): its previous images are "
                   f"deleted")


def _image_id(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def _read_meta(meta_path: str) -> dict | None:
    try:
        with open(meta_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_meta(meta_path: str, meta: dict):
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(meta_path + ".tmp", meta_path)  # atomic: never a half-written marker


def _check_own_folder(root: str):
    """Raise DataError unless root is missing, empty, or marked by this generator's meta.json: the built-in data is
    the default, and a user who points data_root at their own dataset but forgets --dataset must lose nothing."""
    if not os.path.exists(root):
        return
    if not os.path.isdir(root):
        raise DataError(f"data_root {root} is a file, not a folder; the built-in shapes dataset needs a folder")
    if not os.listdir(root) or (_read_meta(os.path.join(root, "meta.json")) or {}).get("generator") == GENERATOR:
        return
    raise DataError(f"data_root {root} holds files that the shapes generator did not write, so it will not "
                    f"generate the built-in dataset there. If this is your dataset, say its format: --dataset voc, "
                    f"--dataset coco or --dataset yolo; for the built-in data, use an empty or new folder")


def _remove_previous(root: str):
    """Delete a previous generation's images/annotations (only in a folder this module marked as its own, and only
    the files it names)."""
    for sub, ext in (("JPEGImages", ".jpg"), ("Annotations", ".xml")):
        folder = os.path.join(root, sub)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith(ext) and name.split("_")[0] in SPLIT_CODE:
                    os.remove(os.path.join(folder, name))


def _write_dataset_image(root: str, seed: int, class_names: tuple, class_weights, job: tuple[str, int]):
    split, index = job
    image_id = _image_id(split, index)
    image, boxes, labels = render_dataset_image(seed, split, index, class_names, class_weights)
    Image.fromarray(image).save(os.path.join(root, "JPEGImages", image_id + ".jpg"), quality=JPEG_QUALITY)
    height, width = image.shape[:2]
    objects = "".join(
        f"  <object>\n    <name>{escape(class_names[label])}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n"
        # continuous x1 (= first covered column) -> VOC 1-based inclusive: xmin = x1 + 1, xmax = x2
        f"      <xmin>{int(x1) + 1}</xmin>\n      <ymin>{int(y1) + 1}</ymin>\n"
        f"      <xmax>{int(x2)}</xmax>\n      <ymax>{int(y2)}</ymax>\n    </bndbox>\n  </object>\n"
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist())
    )
    xml = (
        f"<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{image_id}.jpg</filename>\n"
        f"  <source><database>yolo shapes v{GENERATOR_VERSION}</database></source>\n"
        f"  <size>\n    <width>{width}</width>\n    <height>{height}</height>\n    <depth>3</depth>\n  </size>\n"
        f"  <segmented>0</segmented>\n{objects}</annotation>\n"
    )
    with open(os.path.join(root, "Annotations", image_id + ".xml"), "w") as f:
        f.write(xml)
