"""Augmentation: geometric transforms move boxes with the pixels (a filled rectangle drawn in a synthetic image still
matches its transformed box, IoU >= 0.9), mosaic included; the pipeline list, caching and seeding behave."""
import cv2
import numpy as np
import pytest
import torch
from loguru import logger
from PIL import Image

from yolo.config import BaseConfig, load_config
from yolo.data.checks import DataError
from yolo.data.dataset import DetectionDataset, build_loader
from yolo.data.formats import Record
from yolo.data.mosaic import mosaic4
from yolo.data.transforms import (PAD_FILL, SEED_AUGMENTATIONS, A, basic_augmentations, build_augmentations,
                                  build_transform, resize_longest)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]  # far from the black background and PAD_FILL


def rectangle_image(width, height, box, colour=COLOURS[0]):
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = colour  # continuous box [x1, x2) x [y1, y2): exactly these pixels
    return image


def mask_box(image, colour, near=None):
    """Box (continuous x1 y1 x2 y2) of the pixels of `colour` (thresholded at half), or None. near: a box; with
    several separate patches of the colour (a mosaic may show one image twice), the patch that overlaps it most."""
    bright = image.astype(int) > 128
    mask = (bright == (np.array(colour) > 128)).all(-1).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    boxes = [np.array([x, y, x + w, y + h], float) for x, y, w, h, _ in stats[1:count]]
    if not boxes:
        return None
    if near is None:
        return np.concatenate([np.min(boxes, 0)[:2], np.max(boxes, 0)[2:]])
    return max(boxes, key=lambda b: iou(b, near))


def iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def config(**fields):
    cfg = BaseConfig()
    cfg.img_size = 256
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def geometric_entries():
    """Every geometric (box-moving) entry of the basic pipeline and of the seed set, forced to always apply."""
    entries = basic_augmentations(BaseConfig()) + SEED_AUGMENTATIONS
    geometric = [(n, 1.0, kw) for n, _, kw in entries if issubclass(getattr(A, n), A.DualTransform)]
    assert {n for n, _, _ in geometric} == {"HorizontalFlip", "Affine"}
    return [pytest.param(e, id=f"{e[0]}-{i}") for i, e in enumerate(geometric)]


@pytest.mark.parametrize("entry", geometric_entries())
@pytest.mark.parametrize("seed", range(4))
def test_geometric_transform_keeps_box_on_rectangle(entry, seed):
    box = (70, 40, 190, 130)  # in a 300 x 200 image: letterboxed to 256, then the transform
    cfg = config(augmentations=[entry])
    transform = build_transform(cfg, train=True)
    transform.set_random_seed(seed)
    out = transform(image=rectangle_image(300, 200, box), bboxes=np.array([box], np.float32), labels=[0])
    assert len(out["bboxes"]) == 1, "the rectangle stays mostly inside: its box must survive"
    found = mask_box(out["image"], COLOURS[0])
    assert iou(found, out["bboxes"][0]) >= 0.9


def test_val_letterbox_keeps_box_on_rectangle():
    box = (10, 60, 110, 190)
    out = build_transform(config(), train=False)(image=rectangle_image(180, 400, box), bboxes=[box], labels=[0])
    assert iou(mask_box(out["image"], COLOURS[0]), out["bboxes"][0]) >= 0.95
    assert tuple(out["image"][0, 0]) == PAD_FILL  # tall image: padded left and right with the mean colour


@pytest.mark.parametrize("seed", range(6))
def test_mosaic_boxes_match_their_rectangles(seed):
    rng = np.random.default_rng(seed)
    samples, truth = [], []
    for k, colour in enumerate(COLOURS):
        w, h = (256, int(rng.integers(120, 256))) if k % 2 else (int(rng.integers(120, 256)), 256)
        x1, y1 = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 80))
        box = (x1, y1, x1 + int(rng.integers(40, 80)), y1 + int(rng.integers(40, 80)))
        samples.append((rectangle_image(w, h, box, colour), np.array([box], np.float32), np.array([k])))
        truth.append(box)
    image, boxes, labels = mosaic4(samples, 256, rng)
    assert image.shape == (256, 256, 3)
    for box, label in zip(boxes, labels):
        assert iou(mask_box(image, COLOURS[label]), box) >= 0.9
    for k, colour in enumerate(COLOURS):  # every rectangle that is mostly visible kept its box
        visible = mask_box(image, colour)
        w, h = truth[k][2] - truth[k][0], truth[k][3] - truth[k][1]
        if visible is not None and (visible[2] - visible[0]) * (visible[3] - visible[1]) >= 0.5 * w * h:
            assert k in labels


def test_mosaic_then_flip_and_affine_through_the_dataset(tmp_path):
    records = []
    for k, colour in enumerate(COLOURS):
        box = (20 + 10 * k, 30, 120 + 10 * k, 110)
        path = tmp_path / f"{k}.png"
        Image.fromarray(rectangle_image(220, 160, box, colour)).save(path)
        records.append(Record(str(path), 220, 160, np.array([box], np.float32), np.array([k]), np.zeros(1, bool)))
    cfg = config(mosaic_prob=1.0, color_jitter=0.0, num_workers=0, batch_size=4)
    dataset = build_loader(cfg, records, train=True).dataset
    checked = 0
    for seed in range(5):
        dataset.transform.set_random_seed(seed)
        for index in range(4):
            image, targets, _ = dataset[index]
            image = image.permute(1, 2, 0).numpy()
            for label, cx, cy, w, h in targets.tolist():
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                assert iou(mask_box(image, COLOURS[int(label)], near=box), box) >= 0.9
                checked += 1
    assert checked >= 20


def test_reseeding_the_transform_repeats_mosaic_samples(tmp_path):
    records = []
    for k in range(6):
        path = tmp_path / f"{k}.jpg"
        Image.fromarray(rectangle_image(200, 150, (10 * k, 10, 60 + 10 * k, 80))).save(path)
        records.append(Record(str(path), 200, 150, np.array([[10 * k, 10, 60 + 10 * k, 80]], np.float32),
                              np.array([0]), np.zeros(1, bool)))
    dataset = build_loader(config(mosaic_prob=0.5, num_workers=0), records, train=True).dataset
    runs = []
    for _ in range(2):
        dataset.transform.set_random_seed(123)
        runs.append([dataset[i] for i in range(6)])
    for (a, ta, _), (b, tb, _) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(ta, tb)


def test_my_config_keeps_the_fast_basic_pipeline():
    """The shapes benchmark is tuned with letterbox + flip + affine + colour jitter, and no mosaic."""
    cfg = load_config("configs/my_config.py").finalize()
    assert cfg.augmentations is None and cfg.mosaic_prob == 0.0
    names = [type(t).__name__ for t in build_transform(cfg, train=True).transforms]
    assert names == ["LongestMaxSize", "PadIfNeeded", "HorizontalFlip", "Affine", "ColorJitter"]


def test_augmentation_list_builds_and_fills_with_the_mean():
    ops = build_augmentations(SEED_AUGMENTATIONS)
    assert [type(op).__name__ for op in ops] == [name for name, _, _ in SEED_AUGMENTATIONS]
    affine = ops[-1]
    assert tuple(affine.fill) == PAD_FILL and affine.p == 1.0
    image = np.full((64, 64, 3), 200, np.uint8)
    out = A.Compose(ops, bbox_params=A.BboxParams("pascal_voc", label_fields=["labels"]), seed=0)(
        image=image, bboxes=[(10, 10, 30, 30)], labels=[0])
    assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8


def test_bad_augmentation_entries_are_named():
    with pytest.raises(ValueError, match="entry 0.*'Afine'.*did you mean 'Affine'"):
        build_augmentations([("Afine", 0.5, {})])
    with pytest.raises(ValueError, match="entry 1.*Affine"):
        build_augmentations([("HorizontalFlip", 0.5, {}), ("Affine", 0.5, {"scale": "big"})])
    with pytest.raises(ValueError, match="augmentations"):
        config(augmentations=[("HorizontalFlip", 1.5, {})])
    with pytest.raises(ValueError, match="augmentations"):
        config(augmentations=["HorizontalFlip"])


@pytest.mark.parametrize("width, height", [(333, 257), (1000, 37), (257, 333), (256, 256), (100, 60)])
def test_resize_longest_is_the_letterbox_resize(width, height):
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    expected = A.LongestMaxSize(max_size=256)(image=image)["image"]
    resized, boxes = resize_longest(image, [[0, 0, width, height]], 256)
    np.testing.assert_array_equal(resized, expected)
    np.testing.assert_allclose(boxes, [[0, 0, expected.shape[1], expected.shape[0]]], atol=1e-3)


def test_cached_images_give_the_same_samples(tmp_path):
    records = []
    for k, (w, h) in enumerate([(300, 200), (150, 260), (256, 256)]):
        path = tmp_path / f"{k}.jpg"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(Record(str(path), w, h, np.array([[5, 5, 90, 70]], np.float32), np.array([0]),
                              np.zeros(1, bool)))
    plain = build_loader(config(num_workers=0), records, train=False).dataset
    cached = build_loader(config(num_workers=0, cache_images=True), records, train=False).dataset
    assert cached.cache is not None and plain.cache is None
    for i in range(3):
        (a, ta, _), (b, tb, _) = plain[i], cached[i]
        assert torch.equal(a, b) and torch.allclose(ta, tb, atol=1e-4)


def test_image_that_fails_late_is_replaced_loudly(tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(good)
    bad.write_bytes(b"broken after the check")
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    dataset = DetectionDataset([Record(str(bad), 64, 48, *empty), Record(str(good), 64, 48, *empty)],
                               build_transform(config(), train=False))
    messages = []
    handler = logger.add(lambda m: messages.append(str(m)), level="WARNING", format="{message}")
    try:
        _, _, index = dataset[0]
    finally:
        logger.remove(handler)
    assert index == 1 and any(str(bad) in m and "next image" in m for m in messages)
    dataset.records = dataset.records[:1]
    with pytest.raises(DataError, match="in a row"):
        dataset[0]
