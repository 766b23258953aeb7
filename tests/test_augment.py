"""Augmentation: geometric transforms move boxes with the pixels (a filled rectangle drawn in a synthetic image still
matches its transformed box, IoU >= 0.9), mosaic included; the default LetterboxAugment draws what albumentations'
pipeline draws with the same parameters, and its colour matrix what torchvision's colour functions do; the pipeline
list, caching and seeding behave."""
import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from loguru import logger
from matplotlib.colors import rgb_to_hsv
from PIL import Image

from yolo.config import BaseConfig, load_config
from yolo.data.checks import DataError
from yolo.data.dataset import DetectionDataset, build_loader
from yolo.data.records import Record
from yolo.data.mosaic import mosaic4
from yolo.data.transforms import (PAD_FILL, PHOTO_AUGMENTATIONS, A, LetterboxAugment, bbox_params, build_augmentations,
                                  build_transform, letterbox_ops, resize_longest)

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
    """Every geometric (box-moving) entry of PHOTO_AUGMENTATIONS, forced to always apply."""
    geometric = [(n, 1.0, kw) for n, _, kw in PHOTO_AUGMENTATIONS if issubclass(getattr(A, n), A.DualTransform)]
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
            image, targets, *_ = dataset[index]
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
    for (a, ta, *_), (b, tb, *_) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(ta, tb)


def test_my_config_keeps_the_fast_basic_pipeline():
    """The shapes benchmark is tuned with the default LetterboxAugment (flip, zoom, shift, colours), and no mosaic."""
    cfg = load_config("configs/my_config.py").finalize()
    assert cfg.augmentations is None and cfg.mosaic_prob == 0.0
    transform = build_transform(cfg, train=True)
    assert isinstance(transform, LetterboxAugment)
    assert (transform.hflip_prob, transform.scale, transform.translate, transform.color_jitter) == (
        cfg.hflip_prob, tuple(cfg.affine_scale), cfg.affine_translate, cfg.color_jitter)


def albumentations_reference(size, flip, zoom, shift):
    """The albumentations pipeline LetterboxAugment replaces, with its random draws pinned."""
    affine = A.Affine(scale={"x": zoom[0], "y": zoom[1]}, translate_px={"x": (shift[0],) * 2, "y": (shift[1],) * 2},
                      border_mode=cv2.BORDER_CONSTANT, fill=PAD_FILL, p=1.0)
    ops = letterbox_ops(size) + [A.HorizontalFlip(p=float(flip)), affine]
    return A.Compose(ops, bbox_params=bbox_params(2.0, 0.3))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("zoom, shift", [((1.0, 1.0), (0, 0)), ((0.8, 1.2), (10, -7)), ((1.25, 0.75), (-25, 25)),
                                         ((1.3, 1.3), (90, 0))])  # the last pushes a box mostly out
@pytest.mark.parametrize("width, height", [(300, 150), (151, 256), (256, 256)])
def test_letterbox_augment_warps_as_albumentations_does(flip, zoom, shift, width, height):
    rng = np.random.default_rng(width)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 3)
    boxes = np.float32([[10, 20, 100, 120], [width - 60, 30, width - 5, 140], [40, 60, 45, 64]])
    labels = np.array([0, 1, 2])
    expected = albumentations_reference(256, flip, zoom, shift)(image=image, bboxes=boxes, labels=labels)
    out_image, out_boxes, out_labels = LetterboxAugment(256, min_box_size=2.0, min_visibility=0.3).warp(
        image, boxes, labels, flip, zoom, shift)
    assert np.abs(out_image.astype(int) - expected["image"].astype(int)).max() <= 1  # rounding of the matrix only
    np.testing.assert_array_equal(out_labels, expected["labels"])
    np.testing.assert_allclose(out_boxes, np.asarray(expected["bboxes"]).reshape(-1, 4), atol=1e-3)


def test_letterbox_augment_without_augmentation_is_the_val_letterbox():
    """Train and val must agree on geometry (a classic bug: train resizes to a square while val letterboxes)."""
    cfg = config(hflip_prob=0.0, affine_scale=(1.0, 1.0), affine_translate=0.0, color_jitter=0.0)
    image = np.random.default_rng(0).integers(0, 256, (200, 333, 3), dtype=np.uint8)
    boxes = np.float32([[100, 50, 150, 100], [0, 0, 333, 200]])
    train = build_transform(cfg, train=True)(image=image, bboxes=boxes, labels=[0, 1])
    val = build_transform(cfg, train=False)(image=image, bboxes=boxes, labels=[0, 1])
    np.testing.assert_array_equal(train["image"], val["image"])
    np.testing.assert_allclose(train["bboxes"], np.asarray(val["bboxes"]), atol=1e-3)


@pytest.mark.parametrize("seed", range(8))
def test_letterbox_augment_keeps_box_on_rectangle(seed):
    box = (70, 40, 190, 130)
    transform = build_transform(config(color_jitter=0.0, affine_scale=(0.6, 1.4), affine_translate=0.2), train=True)
    transform.set_random_seed(seed)
    out = transform(image=rectangle_image(300, 200, box), bboxes=np.array([box], np.float32), labels=[0])
    found = mask_box(out["image"], COLOURS[0])
    if len(out["bboxes"]):
        assert iou(found, out["bboxes"][0]) >= 0.9
    else:  # dropped: less than min_visibility of it is left in the picture
        assert found is None or (found[2] - found[0]) * (found[3] - found[1]) < 0.3 * 1.4 ** 2 * 120 * 90 * 0.86 ** 2


def torchvision_colour(image, brightness, contrast, saturation, hue):
    """Reference: torchvision's functional colour ops one after the other, in floats (no rounding in between)."""
    x = torch.from_numpy(image).permute(2, 0, 1).double() / 255
    x = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, brightness), contrast), saturation)
    x = TF.adjust_hue(x.float(), hue) if hue else x
    return (x.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)


class PinnedDraws:
    """A stand-in random generator that returns the given brightness, contrast, saturation and hue draws."""
    def __init__(self, factors, hue):
        self.factors, self.hue_draw = np.array(factors), hue

    def uniform(self, low, high, size=None):
        return self.factors if size == 3 else self.hue_draw


def mid_range_image():
    # mid-range colours: torchvision clamps to [0, 1] after each step, the single matrix only at the end
    return np.random.default_rng(1).integers(70, 190, (32, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize("factors", [(1.2, 0.8, 1.3), (0.75, 1.25, 0.7), (1.0, 1.3, 1.0)])
def test_colour_matrix_matches_torchvision(factors):
    image = mid_range_image()
    matrix = LetterboxAugment(64, color_jitter=0.3).draw_color_matrix(image, PinnedDraws(factors, 0.0))
    expected = torchvision_colour(image, *factors, 0.0).astype(int)
    # the same linear operations; they differ in grey weights only (0.299 here, 0.2989 in torchvision)
    assert np.abs(cv2.transform(image, matrix).astype(int) - expected).max() <= 2


@pytest.mark.parametrize("hue", [0.02, -0.02, 0.01])
def test_hue_rotation_shifts_hsv_hue_and_keeps_greys(hue):
    """The rotation about the grey axis turns the HSV hue (which torchvision shifts) by the same angle on average."""
    image = mid_range_image()
    transform = LetterboxAugment(64, color_jitter=0.3, hue=0.02)
    matrix = transform.draw_color_matrix(image, PinnedDraws((1.0, 1.0, 1.0), hue))
    hsv_before = rgb_to_hsv(image / 255)
    turned = (rgb_to_hsv(cv2.transform(image, matrix) / 255)[..., 0] - hsv_before[..., 0] + 0.5) % 1 - 0.5
    turned = turned[hsv_before[..., 1] > 0.2]  # the hue of nearly grey pixels is mostly rounding noise
    assert abs(turned.mean() - hue) < 0.5 / 360 and np.quantile(np.abs(turned - hue), 0.9) < 1.5 / 360
    grey = np.full((4, 4, 3), 128, np.uint8)
    assert np.abs(cv2.transform(grey, matrix).astype(int) - 128).max() <= 1
    # with brightness, contrast and saturation too, the one matrix is those followed by the rotation
    both = transform.draw_color_matrix(image, PinnedDraws((1.1, 0.9, 1.2), hue))
    first = transform.draw_color_matrix(image, PinnedDraws((1.1, 0.9, 1.2), 0.0))
    in_two_steps = cv2.transform(cv2.transform(image.astype(np.float32), first), matrix)
    np.testing.assert_allclose(cv2.transform(image.astype(np.float32), both), in_two_steps, atol=1e-3)


def test_letterbox_augment_reseeds_and_varies():
    image = np.random.default_rng(0).integers(0, 256, (180, 240, 3), dtype=np.uint8)
    box = np.float32([[20, 30, 120, 150]])
    transform = build_transform(config(), train=True)
    runs = []
    for _ in range(2):
        transform.set_random_seed(7)
        runs.append([transform(image=image, bboxes=box, labels=[0]) for _ in range(5)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["bboxes"], b["bboxes"])
    assert len({r["image"].tobytes() for r in runs[0]}) == 5  # five draws, five different images


def test_augmentation_list_builds_and_fills_with_the_mean():
    ops = build_augmentations(PHOTO_AUGMENTATIONS)
    assert [type(op).__name__ for op in ops] == [name for name, _, _ in PHOTO_AUGMENTATIONS]
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
        (a, ta, *_), (b, tb, *_) = plain[i], cached[i]
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
        _, _, index, _ = dataset[0]
    finally:
        logger.remove(handler)
    assert index == 1 and any(str(bad) in m and "next image" in m for m in messages)
    dataset.records = dataset.records[:1]
    with pytest.raises(DataError, match="in a row"):
        dataset[0]
