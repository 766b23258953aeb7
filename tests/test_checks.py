"""The bad-input rules (checks.py), the image checks, config dispatch to the readers, and --task check."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

import yolo.data.dataset as dataset_module
from yolo.config import BaseConfig
from yolo.data.checks import DataError, Problems, clean_boxes, duplicate_boxes
from yolo.data.dataset import read_records
from yolo.data.records import checked_image_size
from yolo.tasks.check import check_dataset
from yolo.tasks.show_batch import show_batches


def test_box_rules_by_hand():
    problems = Problems("t", show_per_kind=0)
    boxes = [[10, 10, 20, 20],        # fine
             [-5, 2, 30, 90],         # outside: clipped to [0, 2, 30, 50]
             [np.nan, 1, 2, 3],       # not finite: skipped
             [70, 5, 90, 9],          # entirely right of the 60 x 50 image: dropped
             [10.2, 10, 20, 20.3],    # duplicate of the first (within 0.5 px): dropped
             [10, 10, 20, 20],        # same box, other class: kept
             [3, 3, 3, 8],            # zero width: dropped
             [0, 0, 60.3, 50]]        # over the border by 0.3 px: rounding, clipped silently
    labels = [0, 1, 0, 0, 0, 2, 0, 0]
    difficult = [False, True, False, False, False, False, False, False]
    out_boxes, out_labels, out_difficult = clean_boxes(boxes, labels, difficult, 60, 50, "f.xml", problems)
    np.testing.assert_allclose(out_boxes, [[10, 10, 20, 20], [0, 2, 30, 50], [10, 10, 20, 20], [0, 0, 60, 50]])
    np.testing.assert_array_equal(out_labels, [0, 1, 2, 0])
    np.testing.assert_array_equal(out_difficult, [False, True, False, False])
    assert out_boxes.dtype == np.float32 and out_labels.dtype == np.int64 and out_difficult.dtype == bool
    assert dict(problems.count) == {"malformed box": 1, "zero/negative area": 2, "box outside image": 1,
                                    "duplicate box": 1}
    assert all(p.file == "f.xml" for p in problems.items)


def test_duplicates_keep_the_first_of_a_group():
    boxes = np.array([[0, 0, 10, 10], [0.4, 0, 10, 10], [0, 0, 10.4, 10], [5, 5, 9, 9]], float)
    np.testing.assert_array_equal(duplicate_boxes(boxes, np.zeros(4)), [False, True, True, False])
    np.testing.assert_array_equal(duplicate_boxes(boxes[:1], np.zeros(1)), [False])


def test_summary_line_and_fatal_rule():
    problems = Problems("VOC x [train]", show_per_kind=1)
    for i in range(3):
        problems.add("unknown class", f"{i}.xml", "class 'horse' is not in class_names")
    problems.add("unreadable image", "bad.jpg", "cannot read image")
    line = problems.summary(9)
    assert line.startswith("VOC x [train]: 9 images kept, 4 data problems: 3 unknown class (box skipped), "
                           "1 unreadable image (image skipped); 2 not shown above")
    assert problems.fatal_reason(9) is None
    assert problems.fatal_reason(1) is None  # 1 of 2 unusable: not more than half
    assert "bad.jpg" in problems.fatal_reason(0)
    problems.add("missing image", "gone.xml", "image file not found")
    with pytest.raises(DataError, match="has 1 usable images of 3(.|\n)*gone.xml"):
        problems.finish(1)
    with pytest.raises(KeyError):
        problems.add("no such kind", "x", "y")


def test_image_checks(tmp_path):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    image.save(tmp_path / "ok.jpg", quality=90)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trailing.jpg").write_bytes(data + b"camera data after the end marker")
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) * 2 // 3])
    image.save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:-40])
    problems = Problems("t", show_per_kind=0)
    assert checked_image_size(str(tmp_path / "ok.jpg"), problems) == (60, 40)
    assert checked_image_size(str(tmp_path / "trailing.jpg"), problems) == (60, 40)  # decodes fine: no problem
    assert checked_image_size(str(tmp_path / "ok.png"), problems, decode=True) == (60, 40)
    assert not problems.items
    assert checked_image_size(str(tmp_path / "cut.jpg"), problems) is None  # header fine, end marker missing
    assert checked_image_size(str(tmp_path / "cut.png"), problems) is None
    assert checked_image_size(str(tmp_path / "nope.jpg"), problems) is None
    assert [(p.kind, os.path.basename(p.file)) for p in problems.items] == [
        ("unreadable image", "cut.jpg"), ("unreadable image", "cut.png"), ("missing image", "nope.jpg")]


def write_voc(root, name, objects, size=(64, 48)):
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(root / "JPEGImages" / f"{name}.jpg")
    xml = "".join(f"<object><name>{c}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{x}</xmax><ymax>{y}</ymax>"
                  f"</bndbox></object>" for c, a, b, x, y in objects)
    (root / "Annotations" / f"{name}.xml").write_text(f"<annotation>{xml}</annotation>")
    with open(root / "ImageSets/Main/trainval.txt", "a") as f:
        f.write(name + "\n")


def voc_config(root, **fields):
    cfg = BaseConfig()
    cfg.dataset, cfg.data_root, cfg.class_names, cfg.img_size = "voc", str(root), ["cat", "dog"], 128
    cfg.train_split = cfg.val_split = "trainval"
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def test_voc_years_are_concatenated_per_split(tmp_path):
    write_voc(tmp_path / "VOC2007", "a", [("cat", 1, 1, 10, 10)])
    write_voc(tmp_path / "VOC2012", "b", [("dog", 1, 1, 20, 20)])
    cfg = voc_config(tmp_path, train_dirs=["VOC2007", "VOC2012"], val_dirs=["VOC2007"])
    assert [os.path.basename(r.image_path) for r in read_records(cfg, "train")] == ["a.jpg", "b.jpg"]
    assert [os.path.basename(r.image_path) for r in read_records(cfg, "val")] == ["a.jpg"]


def test_val_from_train_holds_out_a_seeded_part_of_train_and_never_reads_val(tmp_path, monkeypatch):
    for i in range(10):
        write_voc(tmp_path / "VOC2007", f"t{i}", [("cat", 1, 1, 10 + i, 10)])
    write_voc(tmp_path / "VOC2012", "test0", [("dog", 1, 1, 20, 20)])  # the val split: must stay unseen
    names = lambda records: [os.path.basename(r.image_path) for r in records]  # noqa: E731
    cfg = voc_config(tmp_path, train_dirs=["VOC2007"], val_dirs=["VOC2012"], val_from_train=0.3)
    train, val = names(read_records(cfg, "train")), names(read_records(cfg, "val"))
    assert len(val) == 3 and len(train) == 7 and sorted(train + val) == sorted(f"t{i}.jpg" for i in range(10))
    assert train == sorted(train) and val == sorted(val)  # file order kept within each part
    assert names(read_records(cfg, "val")) == val  # seeded: the same split every time it is read
    other_seed = voc_config(tmp_path, train_dirs=["VOC2007"], val_dirs=["VOC2012"], val_from_train=0.3, seed=1)
    assert names(read_records(other_seed, "val")) != val
    assert names(read_records(voc_config(tmp_path, train_dirs=["VOC2007"], val_dirs=["VOC2012"]), "val")) == \
        ["test0.jpg"]
    reads = []  # what training reads: the same two parts, the train split read once
    monkeypatch.setattr(dataset_module, "read_split", lambda *a, original=dataset_module.read_split, **k:
                        reads.append(a[1]) or original(*a, **k))
    both = dataset_module.read_train_val(cfg)
    assert (names(both[0]), names(both[1])) == (train, val) and reads == ["train"]
    with pytest.raises(ValueError, match="val_from_train.*leaves no images"):
        read_records(voc_config(tmp_path, train_dirs=["VOC2007"], val_dirs=["VOC2012"], val_from_train=0.99), "val")
    with pytest.raises(ValueError, match="val_from_train"):
        voc_config(tmp_path, val_from_train=1.0)


def test_coco_and_yolo_datasets_from_the_config(tmp_path):
    (tmp_path / "coco/annotations").mkdir(parents=True)
    (tmp_path / "coco/val2017").mkdir()
    Image.new("RGB", (50, 40)).save(tmp_path / "coco/val2017/x.jpg")
    (tmp_path / "coco/annotations/instances_val2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "x.jpg", "width": 50, "height": 40}],
        "categories": [{"id": 17, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 17, "bbox": [1, 2, 10, 20], "iscrowd": 0}]}))
    cfg = voc_config(tmp_path / "coco", dataset="coco", ann_dir="annotations", img_dir="{split}", val_split="val2017")
    (record,) = read_records(cfg, "val")
    np.testing.assert_array_equal(record.labels, [1])  # matched by name to the config's class order
    np.testing.assert_allclose(record.boxes, [[1, 2, 11, 22]])

    root = tmp_path / "rf"
    for sub in ("train/images", "train/labels"):  # Roboflow's layout
        (root / sub).mkdir(parents=True)
    (root / "data.yaml").write_text("names: ['dog', 'bird', 'cat']\n")
    Image.new("RGB", (100, 50)).save(root / "train/images/y.jpg")
    (root / "train/labels/y.txt").write_text("2 0.5 0.5 0.2 0.4\n1 0.5 0.5 0.1 0.1\n")
    (record,) = read_records(voc_config(root, dataset="yolo", train_split="train"), "train")
    np.testing.assert_array_equal(record.labels, [0])  # data.yaml's 'cat' (2) is the config's 0; 'bird' skipped
    np.testing.assert_allclose(record.boxes, [[40, 15, 60, 35]], atol=1e-4)


def test_check_task_reports_every_problem_with_its_file(tmp_path):
    root = tmp_path / "voc"
    write_voc(root, "good", [("cat", 1, 1, 10, 10), ("dog", 5, 5, 30, 30)])
    write_voc(root, "bad_class", [("horse", 1, 1, 10, 10), ("cat", 2, 2, 9, 9)])
    write_voc(root, "outside", [("dog", 40, 40, 90, 90)])
    write_voc(root, "empty_box", [("dog", 41, 40, 40, 45), ("cat", 1, 1, 5, 5)])  # VOC: xmax = xmin - 1 is empty
    write_voc(root, "background", [])
    (root / "JPEGImages/broken.jpg").write_bytes(b"not an image")
    (root / "Annotations/broken.xml").write_text("<annotation></annotation>")
    with open(root / "ImageSets/Main/trainval.txt", "a") as f:
        f.write("broken\nno_xml\n")
    cfg = voc_config(root, runs_dir=str(tmp_path / "runs"))
    results = check_dataset(cfg)
    records, problems = results["train"]
    assert len(records) == 5 and sum(len(r.boxes) for r in records) == 2 + 1 + 1 + 1
    kinds = {(p.kind, os.path.basename(p.file)) for p in problems.items}
    assert kinds == {("unknown class", "bad_class.xml"), ("box outside image", "outside.xml"),
                     ("zero/negative area", "empty_box.xml"), ("unreadable image", "broken.jpg"),
                     ("missing annotation", "no_xml.xml")}
    report = (tmp_path / "runs/check/problems.txt").read_text().splitlines()
    assert report[0] == "split\tkind\tfile\tdetail" and len(report) == 1 + 2 * 5  # train and val: same files
    assert any("bad_class.xml" in line and "'horse'" in line for line in report)
    for split in ("train", "val"):
        assert (tmp_path / f"runs/check/{split}_data.png").stat().st_size > 10_000


def test_check_task_turns_a_fatal_problem_into_a_report_line(tmp_path):
    cfg = voc_config(tmp_path / "missing", runs_dir=str(tmp_path / "runs"))
    records, problems = check_dataset(cfg)["train"]
    assert records == [] and [p.kind for p in problems.items] == ["fatal"]
    assert "VOC root directory not found" in problems.items[0].detail


def test_show_batch_draws_augmented_batches(tmp_path):
    root = tmp_path / "voc"
    for k in range(8):
        write_voc(root, f"im{k}", [("cat", 5, 5, 30, 30), ("dog", 30, 10, 60, 40)], size=(96, 64))
    cfg = voc_config(root, runs_dir=str(tmp_path / "runs"), batch_size=4, mosaic_prob=0.5, num_debug_batch=2)
    paths = show_batches(cfg)
    assert [p.name for p in paths] == ["train_batch0.jpg", "train_batch1.jpg"]
    with Image.open(paths[0]) as grid:
        assert grid.size == (2 * 128 + 4, 2 * 128 + 4)  # 2 x 2 tiles of img_size with a 4 px gap


def test_main_check_task_runs_from_the_command_line(tmp_path):
    root = tmp_path / "voc"
    write_voc(root, "a", [("cat", 1, 1, 10, 10), ("zebra", 1, 1, 5, 5)])
    config = tmp_path / "cfg.py"
    config.write_text("from yolo.config import BaseConfig\n\nclass C(BaseConfig):\n    def __init__(self):\n"
                      f"        super().__init__()\n        self.dataset = 'voc'\n        self.data_root = {str(root)!r}\n"
                      "        self.train_split = self.val_split = 'trainval'\n"
                      "        self.class_names = ['cat', 'dog']\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    out = subprocess.run([sys.executable, "main.py", "--config", str(config), "--task", "check", "--runs_dir",
                          str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "a.xml: class 'zebra' is not in class_names" in out.stderr
    assert "training would start" in out.stderr


def test_class_names_that_match_nothing_in_the_dataset_are_fatal(tmp_path):
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("names: [apple, pear]\n")
    Image.new("RGB", (10, 10)).save(tmp_path / "images/train/a.jpg")
    with pytest.raises(DataError, match=r"data.yaml.*\['apple', 'pear'\]"):
        read_records(voc_config(tmp_path, dataset="yolo", train_split="train"), "train")


def test_check_counts_the_boxes_under_min_box_size_after_letterboxing(tmp_path):
    from yolo.data.transforms import letterboxed_box_sizes
    from yolo.tasks.check import split_report, too_small_line
    root = tmp_path / "voc"
    # 640 x 320 letterboxed to 64: scale 0.1, so a side of 15 px becomes 1.5 px (< min_box_size 2) and 40 px becomes 4
    write_voc(root, "wide", [("cat", 0, 0, 40, 40), ("dog", 100, 100, 115, 200), ("cat", 200, 10, 300, 25)],
              size=(640, 320))
    cfg = voc_config(root, img_size=64, min_box_size=2.0)
    records = read_records(cfg, "train")
    line = too_small_line(letterboxed_box_sizes(records, cfg.img_size), cfg)
    assert line.startswith("2 of 3 boxes (66.7 %) have a side under min_box_size = 2 px at img_size 64")
    assert "raise img_size" in line
    assert line in split_report(records, Problems("t"), cfg, "train")
    cfg.img_size = 320  # scale 0.5: every side >= 7.5 px
    assert too_small_line(letterboxed_box_sizes(records, cfg.img_size), cfg).startswith("0 of 3 boxes (0.0 %)")
