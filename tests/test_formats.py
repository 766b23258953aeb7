"""Pascal VOC reader on hand-made annotations (expected values computed by hand) and on the shared raccoon set."""
import csv
import json
import os
import re

import numpy as np
import pytest
from conftest import SHARED_DATA
from loguru import logger
from PIL import Image

from yolo.data.checks import DataError
from yolo.data.coco import read_coco
from yolo.data.records import load_image_rgb, read_image_size
from yolo.data.voc import read_voc
from yolo.data.yolo_txt import read_yolo_txt

CLASSES = ["cat", "dog", "person"]


@pytest.fixture
def warnings_log():
    """Messages of loguru warnings emitted during the test (pytest's caplog does not see loguru)."""
    messages = []
    handler = logger.add(lambda message: messages.append(str(message)), level="WARNING", format="{message}")
    yield messages
    logger.remove(handler)


def write_voc_image(root, image_id, image_size, objects, xml_size=None, mode="RGB", split="train"):
    """Write one image + annotation in VOC layout and append its id to ImageSets/Main/<split>.txt.
    objects: (name, xmin, ymin, xmax, ymax, difficult) in VOC 1-based inclusive pixels."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.new(mode, image_size, 128 if mode == "L" else (90, 120, 150)).save(root / "JPEGImages" / f"{image_id}.jpg")
    width, height = xml_size or image_size
    xml_objects = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for name, x1, y1, x2, y2, difficult in objects
    )
    xml = (f"<annotation><filename>{image_id}.jpg</filename><size><width>{width}</width><height>{height}</height>"
           f"<depth>3</depth></size>{xml_objects}</annotation>")
    (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    with open(root / "ImageSets" / "Main" / f"{split}.txt", "a") as f:
        f.write(f"{image_id}\n")
    return root / "Annotations" / f"{image_id}.xml"


def test_objects_labels_difficult_and_voc_to_continuous_boxes(tmp_path):
    objects = [("dog", 1, 1, 10, 20, 0), ("cat", 50, 30, 100, 80, 1), (" Person ", 5, 6, 7, 8, 0)]
    write_voc_image(tmp_path, "a", (100, 80), objects)
    write_voc_image(tmp_path, "b", (60, 40), [])  # background image: kept, no boxes
    records = read_voc(str(tmp_path), "train", CLASSES)
    assert [r.image_path for r in records] == [str(tmp_path / "JPEGImages" / name) for name in ("a.jpg", "b.jpg")]
    first, background = records
    assert (first.width, first.height) == (100, 80)
    # VOC 1-based inclusive -> continuous: x1 = xmin - 1, x2 = xmax (pixel columns 0..9 -> [0, 10))
    np.testing.assert_array_equal(first.boxes, [[0, 0, 10, 20], [49, 29, 100, 80], [4, 5, 7, 8]])
    assert first.boxes.dtype == np.float32 and first.labels.dtype == np.int64 and first.difficult.dtype == bool
    np.testing.assert_array_equal(first.labels, [1, 0, 2])
    np.testing.assert_array_equal(first.difficult, [False, True, False])
    assert background.boxes.shape == (0, 4) and background.labels.shape == (0,) and background.difficult.shape == (0,)


def test_grayscale_jpeg_loads_as_three_channels(tmp_path):
    write_voc_image(tmp_path, "gray", (30, 20), [("cat", 1, 1, 5, 5, 0)], mode="L")
    (record,) = read_voc(str(tmp_path), "train", CLASSES)
    assert Image.open(record.image_path).mode == "L"
    image = load_image_rgb(record.image_path)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8 and image.flags.writeable
    assert np.abs(image.astype(int) - 128).max() <= 2  # JPEG of a flat 128 grey, same in R, G, B


def test_boxes_outside_image_are_clipped_and_empty_ones_dropped(tmp_path, warnings_log):
    objects = [
        ("cat", 0, -3, 120, 50, 0),  # sticks out left/top/right -> clipped
        ("dog", 150, 10, 160, 20, 0),  # entirely right of the image -> nothing left -> dropped
        ("dog", 11, 10, 10, 20, 0),  # xmax = xmin - 1: zero width -> dropped
        ("person", 2, 2, 4, 4, 0),  # fine
    ]
    xml_path = write_voc_image(tmp_path, "a", (100, 80), objects)
    (record,) = read_voc(str(tmp_path), "train", CLASSES)
    np.testing.assert_array_equal(record.boxes, [[0, 0, 100, 50], [1, 1, 4, 4]])
    np.testing.assert_array_equal(record.labels, [0, 2])
    assert any(str(xml_path) in m and "[-1, -4, 120, 50] clipped" in m for m in warnings_log)
    assert sum(str(xml_path) in m and "has no area" in m for m in warnings_log) == 2
    assert any("2 zero/negative area (box dropped), 1 box outside image (box clipped)" in m for m in warnings_log)


def test_real_image_size_wins_over_xml_size(tmp_path, warnings_log):
    xml_path = write_voc_image(tmp_path, "a", (100, 80), [("cat", 1, 1, 150, 150, 0)], xml_size=(200, 200))
    (record,) = read_voc(str(tmp_path), "train", CLASSES)
    assert (record.width, record.height) == (100, 80)
    np.testing.assert_array_equal(record.boxes, [[0, 0, 100, 80]])  # clipped to the real size
    assert any(str(xml_path) in m and "200x200" in m and "100x80" in m for m in warnings_log)


def test_unknown_class_is_skipped_with_warning(tmp_path, warnings_log):
    xml_path = write_voc_image(tmp_path, "a", (100, 80), [("horse", 1, 1, 9, 9, 0), ("dog", 2, 2, 8, 8, 0)])
    (record,) = read_voc(str(tmp_path), "train", CLASSES)
    np.testing.assert_array_equal(record.labels, [1])
    np.testing.assert_array_equal(record.boxes, [[1, 1, 8, 8]])
    assert any(str(xml_path) in m and "'horse'" in m for m in warnings_log)


def test_many_problem_files_give_a_few_warnings_and_a_summary(tmp_path, warnings_log):
    for i in range(15):
        write_voc_image(tmp_path, f"im{i}", (20, 20), [("horse", 1, 1, 9, 9, 0)])
    read_voc(str(tmp_path), "train", CLASSES)
    assert sum("'horse'" in m for m in warnings_log) == 10
    assert any("15 images kept, 15 data problems: 15 unknown class (box skipped); 5 not shown above" in m
               for m in warnings_log)


def test_malformed_xml_error_names_the_file(tmp_path):
    xml_path = write_voc_image(tmp_path, "a", (100, 80), [("cat", 1, 1, 9, 9, 0)])
    xml_path.write_text("<annotation><object><name>cat</name></annotation>")
    with pytest.raises(ValueError, match=re.escape(str(xml_path))):
        read_voc(str(tmp_path), "train", CLASSES)


def test_non_numeric_coordinate_skips_only_that_box(tmp_path, warnings_log):
    xml_path = write_voc_image(tmp_path, "a", (100, 80), [("cat", "one", 1, 9, 9, 0), ("dog", 2, 2, 8, 8, 0)])
    (record,) = read_voc(str(tmp_path), "train", CLASSES)
    np.testing.assert_array_equal(record.boxes, [[1, 1, 8, 8]])
    assert any(str(xml_path) in m and "xmin" in m and "'one'" in m for m in warnings_log)


def test_missing_image_and_missing_annotation_errors_name_the_file(tmp_path):
    xml_path = write_voc_image(tmp_path, "a", (100, 80), [("cat", 1, 1, 9, 9, 0)])
    (tmp_path / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DataError, match="usable images of 1(.|\n)*" + re.escape(str(xml_path))):
        read_voc(str(tmp_path), "train", CLASSES)  # the only image is unusable: fatal, naming the file
    with open(tmp_path / "ImageSets" / "Main" / "val.txt", "w") as f:
        f.write("nonexistent\n")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "Annotations" / "nonexistent.xml"))):
        read_voc(str(tmp_path), "val", CLASSES)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        read_voc(str(tmp_path), "test", CLASSES)


def test_unreadable_image_errors_name_the_file(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=re.escape(str(truncated))):
        load_image_rgb(str(truncated))
    with pytest.raises(ValueError, match=re.escape(str(garbage))):
        read_image_size(str(garbage))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.jpg"))):
        load_image_rgb(str(tmp_path / "nope.jpg"))


def test_csv_split_file_and_list_of_roots(tmp_path):
    root = tmp_path / "one"
    for image_id in ("x", "y", "z"):
        write_voc_image(root, image_id, (50, 40), [("cat", 1, 1, 9, 9, 0)])
    with open(root / "my_split.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "width", "class"])
        writer.writerows([["z.jpg", 50, "cat"], ["x.jpg", 50, "cat"], ["z.jpg", 50, "cat"]])  # one row per box
    records = read_voc(str(root), "mine", CLASSES, split_file="my_split.csv")
    assert [r.image_path for r in records] == [str(root / "JPEGImages" / "z.jpg"), str(root / "JPEGImages" / "x.jpg")]

    other = tmp_path / "two"
    write_voc_image(other, "w", (50, 40), [("dog", 1, 1, 9, 9, 0)])
    both = read_voc([str(root), str(other)], "train", CLASSES)
    assert [r.image_path.split("/")[-1] for r in both] == ["x.jpg", "y.jpg", "z.jpg", "w.jpg"]
    assert [r.labels.tolist() for r in both] == [[0], [0], [0], [1]]

    with open(root / "bad.csv", "w") as f:
        f.write("image,class\nx.jpg,cat\n")
    with pytest.raises(ValueError, match=re.escape(str(root / "bad.csv")) + ".*filename"):
        read_voc(str(root), "mine", CLASSES, split_file="bad.csv")


def test_class_names_must_be_unique():
    with pytest.raises(ValueError, match="duplicate"):
        read_voc(".", "train", ["cat", "Cat"])  # checked before any annotation is read


def test_raccoon_train_split_matches_its_csv():
    root = SHARED_DATA / "raccoon"
    if not root.exists():
        pytest.skip("shared raccoon dataset not available")
    records = read_voc(str(root), "train", ["raccoon"], ann_dir="annotations", img_dir="images",
                       split_file="data/train_labels.csv")
    assert len(records) == 160
    assert sum(len(r.boxes) for r in records) == 173
    assert all((r.labels == 0).all() and not r.difficult.any() for r in records)
    for r in records:
        assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()
    # independent reference: the csv's own 1-based boxes, converted by hand
    by_file = {r.image_path.split("/")[-1]: r for r in records}
    with open(root / "data" / "train_labels.csv") as f:
        for row in csv.DictReader(f):
            record = by_file[row["filename"]]
            expected = [float(row["xmin"]) - 1, float(row["ymin"]) - 1, float(row["xmax"]), float(row["ymax"])]
            assert any(np.allclose(box, expected) for box in record.boxes), row
            assert (record.width, record.height) == (int(row["width"]), int(row["height"]))
    gray = [r for r in records if Image.open(r.image_path).mode == "L"]
    for r in gray:
        assert load_image_rgb(r.image_path).shape == (r.height, r.width, 3)


# ------------------------------------------------------------------------------------------------ COCO json


def write_coco(tmp_path, annotations, images=None):
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (100, 80)).save(tmp_path / "img" / "a.jpg")
    Image.new("RGB", (50, 40)).save(tmp_path / "img" / "b.jpg")
    data = {
        "images": images or [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80},
                             {"id": 9, "file_name": "b.jpg", "width": 50, "height": 40}],
        "categories": [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}, {"id": 5, "name": "horse"}],
        "annotations": annotations,
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return str(tmp_path / "ann.json"), str(tmp_path / "img")


def test_coco_sparse_ids_crowd_clipping_and_background(tmp_path, warnings_log):
    ann_json, img_dir = write_coco(tmp_path, [
        {"image_id": 7, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0},
        {"image_id": 7, "category_id": 1, "bbox": [90.5, 0, 20, 10], "iscrowd": 1},  # crowd, sticks out right
        {"image_id": 7, "category_id": 5, "bbox": [1, 1, 5, 5], "iscrowd": 0},
    ])
    records, names = read_coco(ann_json, img_dir)
    assert names == ["cat", "dog", "horse"]  # category-id order: 1, 3, 5 -> 0, 1, 2
    a, b = records
    np.testing.assert_array_equal(a.boxes, [[10, 20, 40, 60], [90.5, 0, 100, 10], [1, 1, 6, 6]])
    np.testing.assert_array_equal(a.labels, [1, 0, 2])
    np.testing.assert_array_equal(a.difficult, [False, True, False])
    assert (b.width, b.height, len(b.boxes)) == (50, 40, 0)
    assert any("ann.json [a.jpg]: box [90.5, 0, 110.5, 10] clipped" in m for m in warnings_log)

    records, names = read_coco(ann_json, img_dir, class_names=["dog", "cat"])  # a subset, in the user's order
    assert names == ["dog", "cat"]
    np.testing.assert_array_equal(records[0].labels, [0, 1])
    assert any("category 5" in m for m in warnings_log)


def test_coco_bad_files_are_named(tmp_path, warnings_log):
    ann_json, img_dir = write_coco(tmp_path, [{"image_id": 7, "category_id": 3},  # no bbox: skipped
                                              {"image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4]}])
    records, _ = read_coco(ann_json, img_dir)
    np.testing.assert_array_equal(records[0].boxes, [[1, 2, 4, 6]])
    assert any(ann_json in m and "bbox is not 4 numbers" in m for m in warnings_log)
    (tmp_path / "ann.json").write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(ann_json)):
        read_coco(ann_json, img_dir)
    ann_json, img_dir = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "missing.jpg"}])
    with pytest.raises(DataError, match="missing.jpg"):
        read_coco(ann_json, img_dir)  # its only image is missing: fatal


# ----------------------------------------------------------------------------------------------- YOLO txt


@pytest.mark.parametrize("names_yaml", [
    "names: [cat, 'dog', \"person\"]\n",
    "names: {0: cat, 1: dog, 2: person}\n",
    "path: x\nnames:\n  - cat\n  - dog  # a comment\n  - person\nnc: 3\n",
    "names:\n  0: cat\n  2: person\n  1: dog\ntrain: images/train\n",
])
def test_yolo_txt_layout(tmp_path, warnings_log, names_yaml):
    (tmp_path / "data.yaml").write_text(names_yaml)
    for sub in ("images/train", "labels/train"):
        (tmp_path / sub).mkdir(parents=True)
    Image.new("RGB", (200, 100)).save(tmp_path / "images/train/a.jpg")
    Image.new("RGB", (50, 50)).save(tmp_path / "images/train/b.png")  # no label file: background
    (tmp_path / "labels/train/a.txt").write_text(
        "1 0.5 0.5 0.2 0.4\n"  # centre (100, 50), size 40 x 40 -> [80, 30, 120, 70]
        "2 0.1 0.2 0.3 0.2 0.2 0.6\n"  # polygon -> its box [20, 20, 60, 60]
        "7 0.5 0.5 0.1 0.1\n"  # class 7 does not exist
    )
    (tmp_path / "labels/train/orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    records, names = read_yolo_txt(str(tmp_path), "train")
    assert names == ["cat", "dog", "person"]
    a, b = records
    np.testing.assert_allclose(a.boxes, [[80, 30, 120, 70], [20, 20, 60, 60]], atol=1e-4)
    np.testing.assert_array_equal(a.labels, [1, 2])
    assert b.image_path.endswith("b.png") and b.boxes.shape == (0, 4)
    assert any("orphan.txt" in m for m in warnings_log)
    assert any("a.txt: line 3: class 7" in m for m in warnings_log)


def test_yolo_txt_bad_line_is_named(tmp_path, warnings_log):
    (tmp_path / "data.yaml").write_text("names: [cat]\n")
    for sub in ("images/val", "labels/val"):
        (tmp_path / sub).mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(tmp_path / "images/val/a.jpg")
    (tmp_path / "labels/val/a.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.5 0.5\n")
    (record,), _ = read_yolo_txt(str(tmp_path), "val")
    np.testing.assert_allclose(record.boxes, [[9, 9, 11, 11]], atol=1e-4)  # the good line survives
    assert any(str(tmp_path / "labels/val/a.txt") + ": line 2" in m for m in warnings_log)
    (tmp_path / "data.yaml").write_text("nc: 1\n")
    with pytest.raises(ValueError, match="names"):
        read_yolo_txt(str(tmp_path), "val")


def write_flat_voc(folder, image_id, objects, size=(80, 60)):
    """labelImg / Roboflow layout: <id>.jpg and <id>.xml side by side, no ImageSets."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(folder / f"{image_id}.jpg")
    xml = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
                  f"</bndbox></object>" for n, a, b, c, d in objects)
    (folder / f"{image_id}.xml").write_text(f"<annotation><filename>{image_id}.jpg</filename>{xml}</annotation>")


def roboflow_config(root, **fields):
    from yolo.config import BaseConfig
    cfg = BaseConfig()
    cfg.dataset, cfg.data_root, cfg.class_names = "voc", str(root), ["cat", "dog"]
    cfg.ann_dir = cfg.img_dir = ""
    cfg.train_dirs, cfg.val_dirs = ["train"], ["valid"]
    for name, value in fields.items():
        setattr(cfg, name, value)
    return cfg.finalize()


def test_voc_folders_without_split_lists_read_every_annotation_sorted(tmp_path, log_lines):
    from yolo.data.dataset import read_records
    for image_id in ("b_2", "a_1", "c_3"):  # written out of order: records come sorted by name
        write_flat_voc(tmp_path / "train", image_id, [("cat", 1, 1, 20, 20)])
    write_flat_voc(tmp_path / "valid", "v", [("dog", 5, 5, 30, 40), ("cat", 1, 1, 9, 9)])
    (tmp_path / "train" / "notes.txt").write_text("not an annotation")
    cfg = roboflow_config(tmp_path)
    train, val = read_records(cfg, "train"), read_records(cfg, "val")
    assert [os.path.basename(r.image_path) for r in train] == ["a_1.jpg", "b_2.jpg", "c_3.jpg"]
    assert [len(r.boxes) for r in val] == [2] and val[0].labels.tolist() == [1, 0]
    assert any("no ImageSets/Main/" in line and "3 .xml files" in line for line in log_lines)


def test_one_folder_without_split_lists_for_train_and_val_is_an_error(tmp_path):
    from yolo.data.checks import DataError
    from yolo.data.dataset import read_records
    write_flat_voc(tmp_path / "train", "a", [("cat", 1, 1, 20, 20)])
    cfg = roboflow_config(tmp_path, val_dirs=["train"])
    with pytest.raises(DataError, match="train and val would both be every image of the same folder"):
        read_records(cfg, "val")
    (tmp_path / "val.txt").write_text("a\n")
    cfg = roboflow_config(tmp_path, val_dirs=["train"], val_split_file=str(tmp_path / "val.txt"))  # a split file
    assert len(read_records(cfg, "val")) == 1                                                    # is a split


def test_an_empty_folder_without_split_lists_names_the_folder(tmp_path):
    from yolo.data.checks import DataError
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="holds no .xml annotations"):
        read_voc(str(tmp_path / "train"), "train", CLASSES, ann_dir="", img_dir="")
