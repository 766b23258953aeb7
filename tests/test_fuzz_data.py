"""Bad input, many kinds: each case writes a tiny dataset (a victim image `a` with one broken file or entry, and a
valid companion image `b`) in VOC, COCO or YOLO-txt form, then reads it twice:

* as `--task check` does (every problem collected, images decoded): the broken file is reported by name, nothing
  but DataError ever leaves a reader, the valid boxes of the victim's own file survive, and `b` is untouched;
* as training loads it (default collector): the same records, or a DataError naming the file for fatal cases.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolo.data.checks import DataError, Problems
from yolo.data.coco import read_coco
from yolo.data.voc import read_voc
from yolo.data.yolo_txt import read_yolo_txt

CLASSES = ["cat", "dog", "person"]
SIZE = (64, 48)
A_BOX = (0, [10, 10, 30, 25])  # the valid object of the victim: cat, continuous x1 y1 x2 y2
B_BOX = (1, [4, 4, 20, 20])    # the companion's object: dog
FATAL = "fatal"


@dataclass
class Case:
    name: str
    fmt: str           # voc | coco | yolo
    victim: str        # a file name that must appear in the report
    expected: object   # victim's surviving (label, box) list; None = victim image skipped; FATAL = split unreadable
    setup: object      # function(root) breaking the valid fixture


# ------------------------------------------------------------------------------------------ fixture writers
def write_image(path, size=SIZE, seed=0):
    noise = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)


def truncate(path, keep=0.5):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:int(len(data) * keep)])


def voc_object(name="cat", x1=11, y1=11, x2=30, y2=25, extra=""):
    return (f"<object><name>{name}</name>{extra}<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object>")


VALID_A = voc_object()


def voc_xml(objects, size="<size><width>64</width><height>48</height><depth>3</depth></size>"):
    return f"<annotation><filename>a.jpg</filename>{size}{objects}</annotation>"


def build_voc(root):
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    write_image(root / "JPEGImages/a.jpg")
    write_image(root / "JPEGImages/b.jpg", seed=1)
    (root / "Annotations/a.xml").write_text(voc_xml(VALID_A))
    (root / "Annotations/b.xml").write_text(voc_xml(voc_object("dog", 5, 5, 20, 20)))
    (root / "ImageSets/Main/train.txt").write_text("a\nb\n")


def coco_data(a_annotations=None, **changes):
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                       {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "person"}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 2, "bbox": [4, 4, 16, 16], "iscrowd": 0}]
            + (a_annotations if a_annotations is not None else [coco_ann()])}
    data.update(changes)
    return data


def coco_ann(bbox=(10, 10, 20, 15), category=1, image_id=1, **extra):
    return {"id": 10, "image_id": image_id, "category_id": category, "bbox": list(bbox), "iscrowd": 0, **extra}


def write_coco(root, data=None, text=None):
    (root / "ann.json").write_text(text if text is not None else json.dumps(data))


def build_coco(root):
    (root / "img").mkdir(parents=True)
    write_image(root / "img/a.jpg")
    write_image(root / "img/b.jpg", seed=1)
    write_coco(root, coco_data())


VALID_LINE = f"0 {20 / 64} {17.5 / 48} {20 / 64} {15 / 48}\n"  # = A_BOX


def build_yolo(root):
    for sub in ("images/train", "labels/train"):
        (root / sub).mkdir(parents=True)
    (root / "data.yaml").write_text("names: [cat, dog, person]\n")
    write_image(root / "images/train/a.jpg")
    write_image(root / "images/train/b.jpg", seed=1)
    (root / "labels/train/a.txt").write_text(VALID_LINE)
    (root / "labels/train/b.txt").write_text(f"1 {12 / 64} {12 / 48} {16 / 64} {16 / 48}\n")


BUILD = {"voc": build_voc, "coco": build_coco, "yolo": build_yolo}


def xml(objects, **kw):
    return lambda root: (root / "Annotations/a.xml").write_text(voc_xml(objects, **kw))


def xml_bytes(data):
    return lambda root: (root / "Annotations/a.xml").write_bytes(data)


def label(text):
    return lambda root: (root / "labels/train/a.txt").write_text(text)


def coco(**kw):
    return lambda root: write_coco(root, coco_data(**kw))


def coco_with(*bad_annotations):
    return coco(a_annotations=[coco_ann(), *bad_annotations])


def set_a_image(data_change):
    """COCO: replace fields of image a's entry."""
    def setup(root):
        data = coco_data()
        data["images"][0] = {k: v for k, v in {**data["images"][0], **data_change}.items() if v is not None}
        write_coco(root, data)
    return setup


OK = [A_BOX]
CASES = [
    # --- VOC xml: whole-file problems (the image is skipped)
    Case("voc-truncated-xml", "voc", "a.xml", None, xml_bytes(voc_xml(VALID_A).encode()[:60])),
    Case("voc-empty-xml", "voc", "a.xml", None, xml_bytes(b"")),
    Case("voc-binary-xml", "voc", "a.xml", None, xml_bytes(bytes(range(256)))),
    Case("voc-wrong-root", "voc", "a.xml", None, xml_bytes(b"<foo><object/></foo>")),
    Case("voc-latin1-without-declaration", "voc", "a.xml", None,
         xml_bytes(voc_xml(voc_object("caf\xe9") + VALID_A).encode("latin-1"))),
    Case("voc-missing-xml", "voc", "a.xml", None, lambda root: (root / "Annotations/a.xml").unlink()),
    Case("voc-missing-image", "voc", "a.xml", None, lambda root: (root / "JPEGImages/a.jpg").unlink()),
    Case("voc-image-is-a-folder", "voc", "a.xml", None,
         lambda root: ((root / "JPEGImages/a.jpg").unlink(), (root / "JPEGImages/a.jpg").mkdir())),
    Case("voc-truncated-jpeg", "voc", "a.jpg", None, lambda root: truncate(root / "JPEGImages/a.jpg")),
    Case("voc-garbage-jpeg", "voc", "a.jpg", None, lambda root: (root / "JPEGImages/a.jpg").write_bytes(b"\x00" * 99)),
    Case("voc-empty-jpeg", "voc", "a.jpg", None, lambda root: (root / "JPEGImages/a.jpg").write_bytes(b"")),
    Case("voc-text-as-jpeg", "voc", "a.jpg", None, lambda root: (root / "JPEGImages/a.jpg").write_text("hello")),
    Case("voc-truncated-png", "voc", "a.png", None,
         lambda root: ((root / "JPEGImages/a.jpg").unlink(), write_image(root / "JPEGImages/a.png"),
                       truncate(root / "JPEGImages/a.png", 0.7))),
    # --- VOC xml: one bad object next to a valid one (only the bad one goes)
    Case("voc-object-without-name", "voc", "a.xml", OK, xml("<object><bndbox><xmin>1</xmin></bndbox></object>" + VALID_A)),
    Case("voc-empty-name", "voc", "a.xml", OK, xml(voc_object("  ") + VALID_A)),
    Case("voc-no-bndbox", "voc", "a.xml", OK, xml("<object><name>cat</name></object>" + VALID_A)),
    Case("voc-missing-xmax", "voc", "a.xml", OK,
         xml("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><ymax>5</ymax></bndbox></object>" + VALID_A)),
    Case("voc-empty-coordinate", "voc", "a.xml", OK, xml(voc_object(x1="") + VALID_A)),
    Case("voc-text-coordinate", "voc", "a.xml", OK, xml(voc_object(x1="abc") + VALID_A)),
    Case("voc-comma-decimal", "voc", "a.xml", OK, xml(voc_object(x1="12,5") + VALID_A)),
    Case("voc-nan-coordinate", "voc", "a.xml", OK, xml(voc_object(y2="nan") + VALID_A)),
    Case("voc-inf-coordinate", "voc", "a.xml", OK, xml(voc_object(x2="inf", y2="-inf") + VALID_A)),
    Case("voc-swapped-corners", "voc", "a.xml", OK, xml(voc_object(x1=40, x2=20) + VALID_A)),
    Case("voc-zero-width", "voc", "a.xml", OK, xml(voc_object(x1=21, x2=20) + VALID_A)),
    Case("voc-box-outside", "voc", "a.xml", OK, xml(voc_object(x1=100, x2=120) + VALID_A)),
    Case("voc-box-partly-outside", "voc", "a.xml", [A_BOX, (2, [50, 0, 64, 48])],
         xml(VALID_A + voc_object("person", 51, -5, 90, 70))),
    Case("voc-huge-coordinate", "voc", "a.xml", [A_BOX, (1, [0, 0, 64, 48])],
         xml(VALID_A + voc_object("dog", 1, 1, "1e30", "1e30"))),
    Case("voc-unknown-class", "voc", "a.xml", OK, xml(voc_object("horse") + VALID_A)),
    Case("voc-bad-difficult", "voc", "a.xml", OK, xml(voc_object(extra="<difficult>maybe</difficult>") + VALID_A)),
    Case("voc-duplicate-object", "voc", "a.xml", OK, xml(VALID_A + VALID_A)),
    Case("voc-near-duplicate", "voc", "a.xml", OK, xml(VALID_A + voc_object(x1=11.3))),
    Case("voc-size-disagrees", "voc", "a.xml", OK,
         xml(VALID_A, size="<size><width>640</width><height>480</height></size>")),
    Case("voc-size-not-numbers", "voc", "a.xml", OK,
         xml(VALID_A, size="<size><width>wide</width><height>48</height></size>")),
    # --- VOC: the split itself (fatal)
    Case("voc-missing-split-file", "voc", "train.txt", FATAL, lambda root: (root / "ImageSets/Main/train.txt").unlink()),
    Case("voc-binary-split-file", "voc", "train.txt", FATAL,
         lambda root: (root / "ImageSets/Main/train.txt").write_bytes(b"\xff\xfe\x00bad")),
    Case("voc-empty-split-file", "voc", "train.txt", FATAL, lambda root: (root / "ImageSets/Main/train.txt").write_text("")),
    # --- COCO json: the file (fatal)
    Case("coco-syntax-error", "coco", "ann.json", FATAL, lambda root: write_coco(root, text='{"images": [')),
    Case("coco-not-utf8", "coco", "ann.json", FATAL, lambda root: (root / "ann.json").write_bytes(b"\xff\xfe{}")),
    Case("coco-top-level-list", "coco", "ann.json", FATAL, lambda root: write_coco(root, [1, 2])),
    Case("coco-no-annotations-key", "coco", "ann.json", FATAL,
         lambda root: write_coco(root, {k: v for k, v in coco_data().items() if k != "annotations"})),
    Case("coco-images-not-a-list", "coco", "ann.json", FATAL, coco(images={"id": 1})),
    Case("coco-category-without-name", "coco", "ann.json", FATAL, coco(categories=[{"id": 1}])),
    Case("coco-missing-json", "coco", "ann.json", FATAL, lambda root: (root / "ann.json").unlink()),
    # --- COCO: image entries
    Case("coco-image-without-file-name", "coco", "ann.json", None, set_a_image({"file_name": None})),
    Case("coco-image-file-missing", "coco", "nothere.jpg", None, set_a_image({"file_name": "nothere.jpg"})),
    Case("coco-truncated-jpeg", "coco", "a.jpg", None, lambda root: truncate(root / "img/a.jpg")),
    Case("coco-size-disagrees", "coco", "ann.json [a.jpg]", OK, set_a_image({"width": 640})),
    # --- COCO: one bad annotation next to a valid one
    Case("coco-no-bbox", "coco", "ann.json [a.jpg]", OK, coco_with({"id": 3, "image_id": 1, "category_id": 1})),
    Case("coco-bbox-3-numbers", "coco", "ann.json [a.jpg]", OK, coco_with(coco_ann(bbox=(1, 2, 3)))),
    Case("coco-bbox-strings", "coco", "ann.json [a.jpg]", OK, coco_with(coco_ann(bbox=("1", "2", "3", "4")))),
    Case("coco-bbox-null", "coco", "ann.json [a.jpg]", OK, coco_with({**coco_ann(), "bbox": None})),
    Case("coco-bbox-booleans", "coco", "ann.json [a.jpg]", OK, coco_with(coco_ann(bbox=(True, 1, 2, 3)))),
    Case("coco-bbox-nan", "coco", "ann.json [a.jpg]", OK, coco_with(coco_ann(bbox=(float("nan"), 1, 5, 5)))),
    Case("coco-negative-width", "coco", "ann.json [a.jpg]", OK, coco_with(coco_ann(bbox=(30, 10, -10, 5)))),
    Case("coco-unknown-category", "coco", "ann.json [a.jpg]", OK, coco_with(coco_ann(category=77))),
    Case("coco-unknown-image-id", "coco", "ann.json", OK, coco_with(coco_ann(image_id=999))),
    Case("coco-annotation-not-an-object", "coco", "ann.json", OK, coco_with(42)),
    Case("coco-duplicate-annotation", "coco", "ann.json [a.jpg]", OK, coco_with(coco_ann())),
    Case("coco-partly-outside", "coco", "ann.json [a.jpg]", [A_BOX, (2, [40, 30, 64, 48])],
         coco_with(coco_ann(bbox=(40, 30, 50, 50), category=3))),
    # --- YOLO txt: one bad line next to a valid one
    Case("yolo-three-fields", "yolo", "a.txt", OK, label("0 0.5 0.5\n" + VALID_LINE)),
    Case("yolo-five-coordinates", "yolo", "a.txt", OK, label("0 0.5 0.5 0.1 0.1 0.9\n" + VALID_LINE)),
    Case("yolo-odd-polygon", "yolo", "a.txt", OK, label("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n" + VALID_LINE)),
    Case("yolo-text-value", "yolo", "a.txt", OK, label("0 0.5 abc 0.1 0.1\n" + VALID_LINE)),
    Case("yolo-text-class", "yolo", "a.txt", OK, label("cat 0.5 0.5 0.1 0.1\n" + VALID_LINE)),
    Case("yolo-fractional-class", "yolo", "a.txt", OK, label("1.5 0.5 0.5 0.1 0.1\n" + VALID_LINE)),
    Case("yolo-negative-class", "yolo", "a.txt", OK, label("-1 0.5 0.5 0.1 0.1\n" + VALID_LINE)),
    Case("yolo-class-out-of-range", "yolo", "a.txt", OK, label("7 0.5 0.5 0.1 0.1\n" + VALID_LINE)),
    Case("yolo-nan-value", "yolo", "a.txt", OK, label("0 nan 0.5 0.1 0.1\n" + VALID_LINE)),
    Case("yolo-inf-value", "yolo", "a.txt", OK, label("0 0.5 0.5 inf 0.1\n" + VALID_LINE)),
    Case("yolo-zero-width", "yolo", "a.txt", OK, label("0 0.5 0.5 0 0.1\n" + VALID_LINE)),
    Case("yolo-pixel-coordinates", "yolo", "a.txt", OK, label("0 32 24 10 10\n" + VALID_LINE)),
    Case("yolo-outside-normalised", "yolo", "a.txt", [A_BOX, (2, [48, 0, 64, 24])], label(VALID_LINE + "2 1.0 0.25 0.5 0.5\n")),
    Case("yolo-duplicate-line", "yolo", "a.txt", OK, label(VALID_LINE + VALID_LINE)),
    Case("yolo-binary-label-file", "yolo", "a.txt", None,
         lambda root: (root / "labels/train/a.txt").write_bytes(b"\x80\x81\xfe\xff" * 4)),
    Case("yolo-orphan-label", "yolo", "c.txt", OK, lambda root: (root / "labels/train/c.txt").write_text(VALID_LINE)),
    Case("yolo-truncated-jpeg", "yolo", "a.jpg", None, lambda root: truncate(root / "images/train/a.jpg")),
    # --- YOLO: the dataset (fatal)
    Case("yolo-missing-data-yaml", "yolo", "data.yaml", FATAL, lambda root: (root / "data.yaml").unlink()),
    Case("yolo-yaml-without-names", "yolo", "data.yaml", FATAL, lambda root: (root / "data.yaml").write_text("nc: 3\n")),
    Case("yolo-yaml-names-gap", "yolo", "data.yaml", FATAL,
         lambda root: (root / "data.yaml").write_text("names:\n  0: cat\n  2: person\n")),
    Case("yolo-yaml-names-scalar", "yolo", "data.yaml", FATAL, lambda root: (root / "data.yaml").write_text("names: cat\n")),
    Case("yolo-missing-image-folder", "yolo", "images", FATAL,
         lambda root: [p.unlink() for p in (root / "images/train").iterdir()] and (root / "images/train").rmdir()),
]


def read(fmt, root, problems):
    if fmt == "voc":
        return read_voc(str(root), "train", CLASSES, problems=problems)
    if fmt == "coco":
        return read_coco(str(root / "ann.json"), str(root / "img"), CLASSES, problems=problems)[0]
    return read_yolo_txt(str(root), "train", CLASSES, problems=problems)[0]


def objects_of(records):
    """image file name -> sorted list of (label, rounded box)."""
    return {Path(r.image_path).name: sorted((int(c), np.round(b, 3).tolist()) for c, b in zip(r.labels, r.boxes))
            for r in records}


def test_there_are_at_least_50_kinds():
    assert len(CASES) >= 50 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_is_reported_and_valid_boxes_survive(case, tmp_path):
    root = tmp_path / "data"
    BUILD[case.fmt](root)
    case.setup(root)

    problems = Problems("fuzz", show_per_kind=0, decode_images=True)  # what --task check does
    try:
        records = read(case.fmt, root, problems)
        fatal = problems.fatal_reason(len(records))
    except DataError as e:
        records, fatal = [], str(e)
    reported = [str(p) for p in problems.items] + ([fatal] if fatal else [])
    assert any(case.victim in text for text in reported), reported
    if case.expected == FATAL:
        assert fatal is not None and case.victim in fatal
        with pytest.raises(DataError, match=case.victim):
            read(case.fmt, root, None)
        return
    assert fatal is None, fatal
    found = objects_of(records)
    assert found["b.jpg"] == [B_BOX], "the valid companion image changed"
    if case.expected is None:
        assert not any(name.startswith("a.") for name in found), "the broken image should be skipped"
    else:
        assert found["a.jpg"] == sorted(case.expected)

    loaded = read(case.fmt, root, None)  # what training does: the same records (1 of 2 images lost is not fatal)
    assert objects_of(loaded) == found
