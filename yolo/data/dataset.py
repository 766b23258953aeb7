"""Dataset, collate and loaders: records -> augmented uint8 images and (N, 6) targets."""
import os
import random
from multiprocessing.pool import ThreadPool

import numpy as np
import torch
from loguru import logger
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .checks import DataError, Problems
from .coco import read_coco
from .data_yaml import read_yaml_split
from .mosaic import mosaic4
from .records import load_image_rgb
from .shapes import ensure_shapes_dataset, require_shapes_dataset
from .transforms import build_transform, plain_letterbox, resize_longest
from .voc import has_split_lists, read_voc
from .yolo_txt import read_yolo_txt

MAX_REPLACEMENTS = 10  # an image that fails to decode is replaced by the next one, at most this many in a row


class DetectionDataset(Dataset):
    """Yields (image uint8 (3, S, S), targets (n, 5) = class, cx, cy, w, h in input pixels, record index,
    boxes_in = boxes before augmentation: boxes_in - n were dropped by crops, min_visibility or min_box_size).

    transform: albumentations pipeline (build_transform); the trainer reseeds it per epoch and per worker.
    mosaic_prob: chance that a sample is a 4-image mosaic of this image and 3 random others (train only).
    cache: list of images already resized to the longest side img_size (cache_images), or None to decode each time.
    """

    def __init__(self, records, transform, img_size=None, mosaic_prob=0.0, cache=None, min_visibility=0.3,
                 min_box_size=2.0):
        self.records, self.transform, self.img_size = records, transform, img_size
        self.mosaic_prob, self.cache = mosaic_prob, cache
        # the trainer turns mosaics (mosaic_off_epochs) or all augmentation (augment_off_epochs) off for the last
        # epochs; in shared memory, so data-loader worker processes, which hold their own copy of the dataset, see
        # the switch too. Augmentation off: the plain letterbox, with the training's box filters.
        self.mosaic_on = torch.ones((), dtype=torch.bool).share_memory_()
        self.augment_on = torch.ones((), dtype=torch.bool).share_memory_()
        self.plain_transform = plain_letterbox(img_size, min_box_size, min_visibility) if img_size else None
        self.min_visibility, self.min_box_size = min_visibility, min_box_size

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        """sample(index), or that of the next image that loads when it fails: the failed image is skipped (its
        index is missing from what the loader yields; predict and evaluation see no detections for it)."""
        tries = min(MAX_REPLACEMENTS, len(self.records))  # each image once: one bad image alone is one failure
        for _ in range(tries):
            try:
                return self.sample(index)
            except DataError as e:  # found only now (the load-time check reads headers): skip it, loudly
                logger.warning(f"{e}; skipped, using the next image instead")
                failure = e
                index = (index + 1) % len(self.records)
        every = " (all the dataset holds)" if tries == len(self.records) else ""
        raise DataError(f"{tries} image{'s' if tries > 1 else ''} in a row failed to load{every}; the last: {failure}; "
                        f"run python main.py --task check")

    def sample(self, index):
        augment = bool(self.augment_on) or self.plain_transform is None
        rng = self.transform.random_generator if augment and self.mosaic_prob > 0 and self.mosaic_on else None
        if rng is not None and rng.random() < self.mosaic_prob:
            others = rng.integers(0, len(self.records), size=3)
            parts = [self.load(i, resized=True) for i in (index, *others)]
            image, boxes, labels = mosaic4(parts, self.img_size, rng, self.min_visibility, self.min_box_size)
            boxes_in = sum(len(part[1]) for part in parts)
        else:
            image, boxes, labels = self.load(index)
            boxes_in = len(boxes)
        out = (self.transform if augment else self.plain_transform)(image=image, bboxes=boxes, labels=labels)
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], dtype=np.float32).reshape(-1, 1)
        cxcywh = np.concatenate(((boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]), 1)
        targets = torch.from_numpy(np.concatenate((labels, cxcywh), 1))
        image = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return image, targets, index, boxes_in

    def load(self, index, resized=False):
        """(image (H, W, 3) uint8, boxes (n, 4), labels (n,)) of one record without its difficult objects.
        resized: longest side img_size, as the letterbox makes it (cached images always are)."""
        rec = self.records[index]
        keep = ~rec.difficult  # VOC rule: 'difficult' objects are neither learned nor counted
        boxes, labels = rec.boxes[keep], rec.labels[keep]
        if self.cache is not None and self.cache[index] is not None:
            image = self.cache[index]
            return image, boxes * np.float32([image.shape[1] / rec.width, image.shape[0] / rec.height] * 2), labels
        image = load_image_rgb(rec.image_path)
        if image.shape[:2] != (rec.height, rec.width):
            raise DataError(f"image {rec.image_path} is {image.shape[1]}x{image.shape[0]} but was indexed as "
                            f"{rec.width}x{rec.height}; was the file replaced after reading the annotations?")
        if resized:
            image, boxes = resize_longest(image, boxes, self.img_size)
        return image, boxes, labels


def collate(batch):
    """Stack images; concatenate targets with their image's batch index in front -> (N, 6). Returns
    (images (B, 3, S, S), targets (N, 6), record indices [B], boxes before augmentation (int, for the drop count))."""
    images, targets, indices, boxes_in = zip(*batch)
    rows = [torch.cat((torch.full((len(t), 1), float(i)), t), 1) for i, t in enumerate(targets)]
    return torch.stack(images), torch.cat(rows) if rows else torch.zeros(0, 6), list(indices), sum(boxes_in)


SUBSET_SEED = 0  # the draw of train_images / val_images: not the config's seed, which a run's repeats change


def read_records(cfg, split, problems=None, generate=True):
    """The records of the train or val split of the configured dataset (generating the built-in one if needed).
    With config val_from_train > 0 both come from the train split: val is its held-out part, train the rest.

    problems: a checks.Problems to collect into (--task check). By default loading makes its own: the first
    problems of each kind and a summary are logged, and a split that cannot be used raises DataError.
    generate: False for commands that only read data (val, predict, export, rsa, check): the built-in dataset is
    read as it is, never generated or regenerated (shapes.require_shapes_dataset).
    """
    if cfg.val_from_train:
        kept, held_out = split_off_val(cfg, read_split(cfg, "train", problems, generate))
        records = kept if split == "train" else held_out
    else:
        records = read_split(cfg, split, problems, generate)
    return fixed_subset(records, cfg.train_images if split == "train" else cfg.val_images, split)


def read_train_val(cfg):
    """(train records, val records) as read_records gives them, reading the train split once when val is carved
    from it."""
    if cfg.val_from_train:
        train, val = split_off_val(cfg, read_split(cfg, "train"))
    else:
        train, val = read_split(cfg, "train"), read_split(cfg, "val")
    return fixed_subset(train, cfg.train_images, "train"), fixed_subset(val, cfg.val_images, "val")


def fixed_subset(records, count, split):
    """`count` of the records (all when count is 0 or not below their number), drawn with a fixed seed and kept in
    file order (config fields train_images, val_images): the same images whatever the config's seed, so a cheap
    proxy of a run (evolve's trials, their retrainings with other seeds) always sees the same data."""
    if not count or count >= len(records):
        return records
    keep = set(random.Random(SUBSET_SEED).sample(range(len(records)), count))
    logger.info(f"{split}_images {count}: a fixed {count} of the {len(records)} {split} images")
    return [r for i, r in enumerate(records) if i in keep]


def split_off_val(cfg, train_records):
    """(train, val) from the train split's records under config val_from_train."""
    kept, held_out = hold_out(train_records, cfg.val_from_train, cfg.seed, "val_from_train")
    logger.info(f"val_from_train {cfg.val_from_train:g}: {len(held_out)} of the {len(train_records)} "
                f"train images are the val split; the configured val split is not read")
    return kept, held_out


def hold_out(records, fraction, seed, field):
    """(kept, held out): a seeded random `fraction` of the records held out, the rest kept, both in file order.
    field: the config field that set the fraction, for the error when either part would be empty."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    cut = int(round(len(records) * (1 - fraction)))
    if cut < 1 or cut >= len(records):
        raise ValueError(f"config field '{field}' = {fraction} leaves no images on one side ({len(records)} train "
                         f"images)")
    held = set(order[cut:])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def prepare_shapes(cfg, generate=True):
    """The built-in dataset of a (task) config: generated when missing or made with other parameters (generate),
    else only checked (shapes.require_shapes_dataset)."""
    prepare = ensure_shapes_dataset if generate else require_shapes_dataset
    prepare(cfg.data_root, cfg.shapes_num_train, cfg.shapes_num_val, cfg.shapes_seed, tuple(cfg.class_names),
            class_weights=cfg.shapes_class_weights)


def read_split(cfg, split, problems=None, generate=True):
    """read_records for one split as the config names it (its folders, split name or split file)."""
    if cfg.dataset == "shapes":
        prepare_shapes(cfg, generate)
    name = cfg.train_split if split == "train" else cfg.val_split
    split_file = cfg.train_split_file if split == "train" else cfg.val_split_file
    dirs = cfg.train_dirs if split == "train" else cfg.val_dirs
    roots = [os.path.join(cfg.data_root, d) for d in dirs] if dirs else [cfg.data_root]
    own = problems is None
    problems = problems or Problems(f"{cfg.dataset} {', '.join(roots)} [{name}]")
    names = list(cfg.class_names)
    if cfg.dataset == "voc":
        check_voc_has_a_val_split(cfg)
    if cfg.dataset in ("shapes", "voc"):
        records = read_voc(roots, name, names, cfg.ann_dir, cfg.img_dir.format(split=name), split_file, problems)
    elif cfg.dataset == "coco":
        records = [rec for root in roots for rec in read_coco(coco_json_path(cfg, root, name, split_file),
                                                              os.path.join(root, cfg.img_dir.format(split=name)),
                                                              names, problems)[0]]
    elif cfg.data:  # a data.yaml names the split's image folders or image lists
        records = read_yaml_split(cfg.data, name, names, problems)[0]
    else:
        records = [rec for root in roots for rec in read_yolo_txt(root, name, names, problems)[0]]
    if own:
        problems.finish(len(records))
    return records


def check_voc_has_a_val_split(cfg):
    """Folders without split lists are read whole: a folder that train and val would both read that way makes every
    validation image a training image and the mAP meaningless, so that is an error, not a warning. (A root that
    does not exist is left to the reader, which names it.)"""
    if cfg.train_split_file or cfg.val_split_file:
        return
    train = [os.path.join(cfg.data_root, d) for d in cfg.train_dirs] if cfg.train_dirs else [cfg.data_root]
    val = [os.path.join(cfg.data_root, d) for d in cfg.val_dirs] if cfg.val_dirs else [cfg.data_root]
    shared = sorted(set(map(os.path.normpath, train)) & set(map(os.path.normpath, val)))
    leaking = [root for root in shared if os.path.isdir(root) and not has_split_lists(root)]
    if leaking:
        raise DataError(f"{', '.join(leaking)}: no ImageSets/Main/ split lists, so train and val would both be every "
                        f"image of the same folder; give val_dirs (Roboflow: train_dirs [\"train\"], val_dirs "
                        f"[\"valid\"]) or train_split_file / val_split_file")


def coco_json_path(cfg, root, split_name, split_file):
    """split_file (relative to the root) if given, else <root>/<ann_dir>/instances_<split>.json."""
    if split_file:
        return split_file if os.path.isabs(split_file) else os.path.join(root, split_file)
    return os.path.join(root, cfg.ann_dir, f"instances_{split_name}.json")


def build_loader(cfg, records, train, sampler=None, images=None):
    """images: the records' decoded RGB images, (H, W, 3) uint8 at the records' sizes, when they are in memory
    already (the Python API's arrays): used instead of the files, through the same letterbox."""
    cache = images if images is not None else cache_images(records, cfg.img_size) if cfg.cache_images else None
    dataset = DetectionDataset(records, build_transform(cfg, train), cfg.img_size, cfg.mosaic_prob if train else 0.0,
                               cache, cfg.min_visibility, cfg.min_box_size)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=cfg.num_workers, collate_fn=collate, drop_last=train and len(records) > cfg.batch_size,
                      pin_memory=torch.cuda.is_available(), persistent_workers=cfg.num_workers > 0)


def cache_images(records, img_size, threads=None):
    """Decode and resize every image once (longest side img_size) into RAM, for small datasets: the workers, forked
    after this, share the memory. An image that fails here is left to the normal path (None)."""
    def load(rec):
        try:
            return resize_longest(load_image_rgb(rec.image_path), np.zeros((0, 4)), img_size)[0]
        except DataError as e:
            logger.warning(f"not cached: {e}")
            return None

    with ThreadPool(threads or min(8, os.cpu_count() or 1)) as pool:  # decoding and resizing release the GIL
        images = list(tqdm(pool.imap(load, records, chunksize=16), total=len(records), desc="caching images",
                           leave=False))
    size_gb = sum(image.nbytes for image in images if image is not None) / 1e9
    logger.info(f"cached {len(images)} images resized to {img_size} px: {size_gb:.2f} GB of RAM")
    return images
