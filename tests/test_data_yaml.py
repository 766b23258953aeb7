"""--data path/to/data.yaml (Ultralytics / Roboflow): the file sets the dataset, its folders and class names; names
as a list or a mapping; a relative path resolves against the yaml's folder (Roboflow's ../train/images too);
image-list .txt files; `download:` ignored; --task check reads it; a bad file is one line naming it."""
import os
import re

import numpy as np
import pytest
from PIL import Image

import main
from yolo.cli import finish_config
from yolo.config import BaseConfig, apply_overrides
from yolo.data.checks import DataError
from yolo.data.dataset import read_records
from yolo.data.data_yaml import label_path


def write_split(images, labels, boxes_of):
    """64 x 48 images in `images`, their YOLO label files in `labels` (None: no label file, a background image)."""
    images.mkdir(parents=True, exist_ok=True)
    for stem, lines in boxes_of.items():
        Image.new("RGB", (64, 48), (90, 120, 150)).save(images / f"{stem}.jpg")
        if lines is not None:
            labels.mkdir(parents=True, exist_ok=True)
            (labels / f"{stem}.txt").write_text(lines)


CAT = "0 0.5 0.5 0.25 0.5\n"  # centre (32, 24), 16 x 24 px -> [24, 12, 40, 36]
DOG = "1 0.25 0.25 0.25 0.25\n"  # centre (16, 12), 16 x 12 px -> [8, 6, 24, 18]


def config(yaml_path, *more):
    return finish_config(apply_overrides(BaseConfig(), ["--data", str(yaml_path), *more]))


def boxes_by_image(records):
    return {os.path.basename(r.image_path): (np.round(r.boxes, 3).tolist(), r.labels.tolist()) for r in records}


def test_ultralytics_layout_relative_path_names_as_a_list(tmp_path, monkeypatch):
    ds = tmp_path / "datasets" / "pets"
    write_split(ds / "images" / "train", ds / "labels" / "train", {"a": CAT + DOG, "b": None})
    write_split(ds / "images" / "val", ds / "labels" / "val", {"c": DOG})
    (tmp_path / "configs").mkdir()
    yaml_path = tmp_path / "configs" / "pets.yaml"
    yaml_path.write_text("# pets\npath: ../datasets/pets  # relative to this file\ntrain: images/train\n"
                         "val: images/val\nnames:\n  - cat\n  - dog\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the yaml's folder decides, not the working folder
    cfg = config(os.path.relpath(yaml_path, elsewhere))
    assert (cfg.dataset, cfg.class_names, cfg.num_classes) == ("yolo", ["cat", "dog"], 2)
    assert cfg.data_root == str(ds) and cfg.data == str(yaml_path)
    assert boxes_by_image(read_records(cfg, "train")) == {
        "a.jpg": ([[24, 12, 40, 36], [8, 6, 24, 18]], [0, 1]), "b.jpg": ([], [])}
    assert boxes_by_image(read_records(cfg, "val")) == {"c.jpg": ([[8, 6, 24, 18]], [1])}


def test_roboflow_layout_names_as_a_mapping_download_ignored(tmp_path, log_lines):
    for split, stem in (("train", "a"), ("valid", "v"), ("test", "t")):
        write_split(tmp_path / split / "images", tmp_path / split / "labels", {stem: DOG})
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\n"
                         "names: {0: cat, 1: dog}\n\nroboflow:\n  workspace: me\n  version: 3\n"
                         "download: https://example.com/pets.zip\n")
    cfg = config(yaml_path)
    assert cfg.class_names == ["cat", "dog"] and cfg.data_root == str(tmp_path)
    assert any("'download' is ignored" in line and "nothing is downloaded" in line for line in log_lines)
    assert list(boxes_by_image(read_records(cfg, "train"))) == ["a.jpg"]
    assert list(boxes_by_image(read_records(cfg, "val"))) == ["v.jpg"]
    assert list(boxes_by_image(read_records(config(yaml_path, "--val_split", "test"), "val"))) == ["t.jpg"]


def test_image_list_files(tmp_path, log_lines):
    write_split(tmp_path / "images" / "all", tmp_path / "labels" / "all", {"a": CAT, "b": DOG, "c": CAT, "d": DOG})
    write_split(tmp_path / "flat", tmp_path / "flat", {"e": DOG})  # no images/ folder: the label beside the image
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("../images/all/a.jpg\n\n../images/all/b.jpg\n../flat/e.jpg\n"
                                                  "../images/all/gone.jpg\n")
    (tmp_path / "val.txt").write_text(f"./images/all/c.jpg\n{tmp_path / 'images' / 'all' / 'd.jpg'}\n")
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("path: .\ntrain: [lists/train.txt]\nval: val.txt\nnames: {0: cat, 1: dog}\n")
    cfg = config(yaml_path)
    train = boxes_by_image(read_records(cfg, "train"))
    assert train == {"a.jpg": ([[24, 12, 40, 36]], [0]), "b.jpg": ([[8, 6, 24, 18]], [1]),
                     "e.jpg": ([[8, 6, 24, 18]], [1])}
    assert any("gone.jpg: image file not found (image skipped)" in line for line in log_lines)  # named, skipped
    assert any("3 images kept, 1 data problems: 1 missing image" in line for line in log_lines)  # and counted
    assert list(boxes_by_image(read_records(cfg, "val"))) == ["c.jpg", "d.jpg"]


def test_label_path_follows_the_ultralytics_rule():
    join = os.path.join
    assert label_path(join("/d", "images", "train", "a.b.jpg")) == join("/d", "labels", "train", "a.b.txt")
    assert label_path(join("/images", "x", "images", "a.png")) == join("/images", "x", "labels", "a.txt")
    assert label_path(join("pics", "a.jpg")) == join("pics", "a.txt")


def test_check_reads_a_data_yaml(tmp_path):
    write_split(tmp_path / "images" / "train", tmp_path / "labels" / "train", {"a": CAT, "b": DOG})
    write_split(tmp_path / "images" / "val", tmp_path / "labels" / "val", {"c": CAT})
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [cat, dog]\n")
    (result,) = main.main(["--task", "check", "--data", str(tmp_path / "data.yaml"), "--runs_dir",
                           str(tmp_path / "runs"), "--img_size", "64"])
    assert {split: len(records) for split, (records, _) in result.items()} == {"train": 2, "val": 1}
    assert all(not problems.items for _, problems in result.values())
    assert (tmp_path / "runs" / "check" / "problems.txt").is_file()


@pytest.mark.parametrize("text, match", [
    (None, "data.yaml not found"),
    ("- a\n- b\n", "a mapping"),
    ("train: images/train\nval: images/train\nnc: 1\n", "no top-level 'names:'"),
    ("train: images/train\nval: images/train\nnames: {0: cat, 2: dog}\n", r"indices must be 0\.\.1"),
    ("train: images/train\nval: images/train\nnames: cat\n", "expected a list or a mapping"),
    ("train: images/train\nval: images/train\nnames: [cat, dog]\nnc: 3\n", "nc: 3 but 'names:' lists 2"),
    ("train: images/train\nval: images/train\nnames: [cat, null]\n", "class 1"),
    ("train: images/train\nval: [images/train\nnames: [cat]\n", "not valid YAML"),
    ("path: [a]\ntrain: images/train\nval: images/train\nnames: [cat]\n", "'path' must be a folder"),
])
def test_a_bad_data_yaml_is_one_line_naming_it(tmp_path, text, match):
    yaml_path = tmp_path / "data.yaml"
    if text is not None:
        yaml_path.write_text(text)
    with pytest.raises(SystemExit) as stop:
        main.main(["--task", "check", "--data", str(yaml_path), "--runs_dir", str(tmp_path / "runs")])
    message = str(stop.value.code)
    assert message.startswith("error: ") and "\n" not in message.strip() and str(yaml_path) in message
    assert re.search(match, message), message


@pytest.mark.parametrize("val, match", [
    (None, "no 'val:' entry"),
    ("images/nowhere", "'val: images/nowhere' not found"),
    ("notes.md", "an image folder or a .txt list"),
    ("[images/train, 3]", "must be a path"),
])
def test_a_split_entry_that_cannot_be_read_is_named(tmp_path, val, match):
    write_split(tmp_path / "images" / "train", tmp_path / "labels" / "train", {"a": CAT})
    (tmp_path / "notes.md").write_text("notes")
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("train: images/train\n" + (f"val: {val}\n" if val else "") + "names: [cat]\n")
    cfg = config(yaml_path)
    assert len(read_records(cfg, "train")) == 1
    with pytest.raises(DataError, match=re.escape(str(yaml_path)) + ".*" + match):
        read_records(cfg, "val")
    (result,) = main.main(["--task", "check", "--data", str(yaml_path), "--runs_dir", str(tmp_path / "runs")])
    (fatal,) = result["val"][1].items  # check reports it as the val split's fatal problem
    assert fatal.kind == "fatal" and re.search(match, fatal.detail)


def test_data_must_name_a_yaml_file(tmp_path):
    with pytest.raises(SystemExit, match="config field 'data' = .*must be None or the path of a data.yaml"):
        main.main(["--task", "check", "--data", str(tmp_path / "data.json")])
