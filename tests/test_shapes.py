"""Synthetic shapes dataset: boxes are the tight boxes of the drawn pixels, files round-trip through the VOC reader,
generation is deterministic and regenerates only when its parameters change."""
import json
import os

import numpy as np
import pytest

from yolo.data.records import load_image_rgb
from yolo.data.voc import read_voc
from yolo.data.shapes import SHAPES, ensure_shapes_dataset, render_dataset_image, render_shapes_image

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    return ensure_shapes_dataset(root, num_train=20, num_val=5, seed=3)


def box_of_changed_pixels(image, background_rgb):
    """Independent reference: tight continuous box of the pixels that differ from the flat background."""
    rows, cols = np.nonzero((image != background_rgb).any(axis=2))
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


@pytest.mark.parametrize("shape", SHAPES)
def test_single_object_box_is_tight_box_of_drawn_pixels(shape):
    for i in range(15):
        rng = np.random.default_rng([7, i])
        image, boxes, labels = render_shapes_image(rng, 300, 260, [shape], num_objects=1, plain_background=True)
        background = image[0, 0] if boxes[0, 0] > 0 or boxes[0, 1] > 0 else image[-1, -1]
        assert boxes.shape == (1, 4) and labels.tolist() == [0]
        np.testing.assert_array_equal(boxes[0], box_of_changed_pixels(image, background))
        colour = image[(image != background).any(axis=2)][0].astype(float)
        assert np.linalg.norm(colour - background) >= 99  # contrast (100 before rounding) to the background
        width, height = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
        assert max(width, height) >= 10 and max(width, height) <= 0.6 * 260 + 1


def test_multi_object_pixels_lie_in_boxes_that_touch_them():
    for i in range(20):
        rng = np.random.default_rng([8, i])
        image, boxes, labels = render_shapes_image(rng, 320, 280, CLASSES, num_objects=6, plain_background=True)
        background = np.bincount(image.reshape(-1, 3) @ np.array([65536, 256, 1])).argmax()  # most common colour
        changed = (image.reshape(-1, 3) @ np.array([65536, 256, 1])).reshape(image.shape[:2]) != background
        inside_some_box = np.zeros_like(changed)
        for x1, y1, x2, y2 in boxes.astype(int):
            inside_some_box[y1:y2, x1:x2] = True
            # tight: every edge row/column of the box holds changed pixels
            assert changed[y1, x1:x2].any() and changed[y2 - 1, x1:x2].any()
            assert changed[y1:y2, x1].any() and changed[y1:y2, x2 - 1].any()
        assert not (changed & ~inside_some_box).any()


def test_random_images_statistics():
    num_objects, sizes, counts, max_iou = [], [], np.zeros(3, int), 0.0
    for i in range(150):
        image, boxes, labels = render_dataset_image(11, "train", i, CLASSES)
        height, width = image.shape[:2]
        assert 256 <= width <= 416 and 256 <= height <= 416 and image.dtype == np.uint8
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        num_objects.append(len(boxes))
        sizes += np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).tolist()
        counts += np.bincount(labels, minlength=3)
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                max_iou = max(max_iou, iou(boxes[a], boxes[b]))
    num_objects, sizes = np.array(num_objects), np.array(sizes)
    assert num_objects.max() <= 8 and 0 < (num_objects == 0).mean() < 0.15 and num_objects.mean() > 3
    assert sizes.min() >= 10 and (sizes < 32).mean() > 0.2 and (sizes > 96).mean() > 0.1  # all detector scales
    assert counts.min() > 0.25 * counts.sum()  # classes balanced
    assert max_iou <= 0.35  # overlaps limited (slots cover at most 20 % of each other)


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_generated_files_round_trip_through_voc_reader(tiny_set):
    train = read_voc(tiny_set, "train", CLASSES)
    val = read_voc(tiny_set, "val", CLASSES)
    assert len(train) == 20 and len(val) == 5
    assert len(os.listdir(os.path.join(tiny_set, "JPEGImages"))) == 25
    for split, records in (("train", train), ("val", val)):
        for index, record in enumerate(records):
            rendered, boxes, labels = render_dataset_image(3, split, index, CLASSES)
            assert record.image_path.endswith(f"{split}_{index:06d}.jpg")
            assert (record.height, record.width) == rendered.shape[:2]
            # XML (1-based inclusive) -> reader (continuous) gives back exactly the rendered boxes
            np.testing.assert_array_equal(record.boxes, boxes)
            np.testing.assert_array_equal(record.labels, labels)
            assert not record.difficult.any()
            decoded = load_image_rgb(record.image_path).astype(float)
            assert np.abs(decoded - rendered).mean() < 6  # the JPEG is that image


def test_same_seed_gives_identical_files_serial_or_parallel(tiny_set, tmp_path):
    again = ensure_shapes_dataset(str(tmp_path / "again"), num_train=20, num_val=5, seed=3, num_workers=1)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        names = sorted(os.listdir(os.path.join(tiny_set, sub)))
        assert names == sorted(os.listdir(os.path.join(again, sub)))
        for name in names:
            with open(os.path.join(tiny_set, sub, name), "rb") as f1, open(os.path.join(again, sub, name), "rb") as f2:
                assert f1.read() == f2.read(), name
    # the process pool (used above 50 images) writes the same bytes as one process
    serial = ensure_shapes_dataset(str(tmp_path / "serial"), num_train=60, num_val=0, seed=5, num_workers=1)
    parallel = ensure_shapes_dataset(str(tmp_path / "parallel"), num_train=60, num_val=0, seed=5, num_workers=2)
    for image_id in [f"train_{i:06d}" for i in range(0, 60, 7)]:
        for name in (f"Annotations/{image_id}.xml", f"JPEGImages/{image_id}.jpg"):
            with open(os.path.join(serial, name), "rb") as f1, open(os.path.join(parallel, name), "rb") as f2:
                assert f1.read() == f2.read(), name


def test_regenerates_only_when_parameters_change(tmp_path):
    root = str(tmp_path / "ds")
    ensure_shapes_dataset(root, num_train=6, num_val=2, seed=1)
    first_image = os.path.join(root, "JPEGImages", "train_000000.jpg")
    with open(first_image, "rb") as f:
        seed1_bytes = f.read()
    os.utime(first_image, (0, 0))
    ensure_shapes_dataset(root, num_train=6, num_val=2, seed=1)  # same parameters: nothing rewritten
    assert os.path.getmtime(first_image) == 0

    ensure_shapes_dataset(root, num_train=3, num_val=2, seed=1)  # fewer images: old ones removed
    assert len(read_voc(root, "train", CLASSES)) == 3
    assert sorted(os.listdir(os.path.join(root, "JPEGImages")))[-1] == "val_000001.jpg"
    assert len(os.listdir(os.path.join(root, "JPEGImages"))) == 5
    assert os.path.getmtime(first_image) != 0

    ensure_shapes_dataset(root, num_train=3, num_val=2, seed=2)  # another seed: other pictures
    with open(first_image, "rb") as f:
        assert f.read() != seed1_bytes
    with open(os.path.join(root, "meta.json")) as f:
        assert json.load(f)["seed"] == 2

    ensure_shapes_dataset(root, num_train=3, num_val=2, seed=2, class_names=("star", "ring"))  # other classes
    names = {n for r in read_voc(root, "train", ["star", "ring"]) for n in r.labels.tolist()}
    assert names <= {0, 1}

    meta_path = os.path.join(root, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    with open(meta_path, "w") as f:  # as an interrupted generation leaves it: generated again
        json.dump({**meta, "complete": False}, f)
    os.utime(first_image, (0, 0))
    ensure_shapes_dataset(root, num_train=3, num_val=2, seed=2, class_names=("star", "ring"))
    assert os.path.getmtime(first_image) != 0 and os.path.exists(os.path.join(root, "meta.json"))


def test_bad_class_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="pentagon"):
        ensure_shapes_dataset(str(tmp_path), num_train=1, num_val=1, class_names=("circle", "pentagon"))
    with pytest.raises(ValueError, match="class_names"):
        render_shapes_image(np.random.default_rng(0), 300, 300, "circle")


# ------------------------------------------------------------------------------------------------- a user's folder
def file_hashes(root):
    import hashlib
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_the_generator_never_touches_a_users_voc_folder(tmp_path):
    """Pointing the default (shapes) dataset at a user's VOC folder must leave every file byte-identical."""
    from yolo.config import BaseConfig
    from yolo.data.checks import DataError
    from yolo.data.dataset import read_records

    root = tmp_path / "my_voc"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main" / "train.txt").write_text("train_000001\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("val_000001\n")
    for name in ("train_000001", "val_000001"):
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(b"my photo " + name.encode())
        (root / "Annotations" / f"{name}.xml").write_text(f"<annotation><filename>{name}.jpg</filename></annotation>")
    before = file_hashes(root)
    cfg = BaseConfig()
    cfg.data_root, cfg.shapes_num_train, cfg.shapes_num_val = str(root), 4, 2  # dataset stays "shapes"
    with pytest.raises(DataError, match=r"--dataset voc.*--dataset coco.*--dataset yolo") as error:
        read_records(cfg, "train")
    assert str(root) in str(error.value)
    assert file_hashes(root) == before


def test_the_generator_uses_new_empty_and_its_own_folders(tmp_path):
    ensure_shapes_dataset(str(tmp_path / "new"), 3, 1, num_workers=1)
    (tmp_path / "empty").mkdir()
    ensure_shapes_dataset(str(tmp_path / "empty"), 3, 1, num_workers=1)
    # its own folder, with other parameters: regenerated in place
    ensure_shapes_dataset(str(tmp_path / "new"), 2, 1, seed=5, num_workers=1)
    assert (tmp_path / "new" / "ImageSets" / "Main" / "train.txt").read_text().split() == ["train_000000",
                                                                                        "train_000001"]
    meta = json.loads((tmp_path / "new" / "meta.json").read_text())
    assert meta["complete"] and meta["seed"] == 5
    assert len(os.listdir(tmp_path / "new" / "JPEGImages")) == 3  # the 4 old images went, 3 new ones came


def test_an_interrupted_generation_is_redone(tmp_path):
    root = tmp_path / "shapes"
    ensure_shapes_dataset(str(root), 2, 1, num_workers=1)
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "complete": False}))  # as a killed generation leaves it
    (root / "JPEGImages" / "train_000001.jpg").unlink()
    ensure_shapes_dataset(str(root), 2, 1, num_workers=1)
    assert (root / "JPEGImages" / "train_000001.jpg").exists()
    assert json.loads((root / "meta.json").read_text())["complete"]
