"""The Python API (yolo/api.py): a loaded checkpoint predicts on image paths, RGB and BGR arrays, PIL images and
lists of them with the predict command's own code (the same boxes and scores as its predictions.json); an .onnx
file loads the same way; train / val / export run the commands; `import yolo.config` stays light."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import main
import yolo
from conftest import ROOT
from yolo.config import BaseConfig
from yolo.data.shapes import ensure_shapes_dataset
from yolo.engine.checkpoint import save_checkpoint
from yolo.models.detector import build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

CONF = 0.05  # a random tiny model's scores reach about 0.15: some 25 detections per image at this threshold


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, overrides as a dict, checkpoint, image paths): a random tiny model in runs_dir/tiny/best.pt, the
    built-in data it reads, and four images of three sizes (letterboxed differently) in a folder of their own."""
    tmp = tmp_path_factory.mktemp("api")
    ensure_shapes_dataset(str(tmp / "data"), 2, 3, 0, num_workers=1)
    fields = {"data_root": str(tmp / "data"), "runs_dir": str(tmp / "runs"), "img_size": 64, "width": 0.25,
              "shapes_num_train": 2, "shapes_num_val": 3, "num_workers": 0, "batch_size": 2, "device": "cpu",
              "predict_conf": CONF, "export_check_images": 1}
    cfg = BaseConfig()
    vars(cfg).update(fields)
    cfg.finalize()
    torch.manual_seed(0)
    ckpt = tmp / "runs" / "tiny" / "best.pt"
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "epoch": 0}, ckpt)
    images = tmp / "images"
    images.mkdir()
    sources = sorted((tmp / "data" / "JPEGImages").glob("val_*.jpg"))
    for i, source in enumerate(sources):
        shutil.copy(source, images / f"img{i}.jpg")
    Image.open(sources[0]).resize((90, 50)).save(images / "img3.png")  # wide, and lossless: the exact pixels
    return tmp, fields, ckpt, sorted(images.iterdir())


def command_args(fields):
    return [arg for key, value in fields.items() for arg in (f"--{key}", str(value))]


def xyxy(entry):
    x, y, w, h = entry["bbox"]
    return [x, y, x + w, y + h]


def test_predict_gives_the_predict_commands_detections(tiny):
    tmp, fields, ckpt, paths = tiny
    out_dir = main.main(["--task", "predict", "--ckpt_path", str(ckpt), "--predict_source", str(paths[0].parent),
                         *command_args(fields)])
    entries = json.loads((out_dir / "predictions.json").read_text())
    model = yolo.load(ckpt, **fields)
    results = model.predict([str(p) for p in paths])
    assert len(results) == len(paths) and sum(len(r.scores) for r in results) == len(entries) > 20
    for path, result in zip(paths, results):
        mine = sorted((e for e in entries if e["file_name"] == path.name), key=lambda e: -e["score"])
        order = np.argsort(-result.scores, kind="stable")
        np.testing.assert_allclose(result.boxes[order], [xyxy(e) for e in mine], atol=1e-4)
        np.testing.assert_allclose(result.scores[order], [e["score"] for e in mine], atol=1e-6)
        assert [result.names[i] for i in order] == [e["category_name"] for e in mine]
        assert [int(result.class_ids[i]) + 1 for i in order] == [e["category_id"] for e in mine]
        width, height = Image.open(path).size
        assert result.boxes[:, [0, 2]].max() <= width and result.boxes[:, [1, 3]].max() <= height  # original pixels
    assert model.class_names == ["circle", "square", "triangle"]


def test_paths_rgb_arrays_bgr_arrays_and_pil_images_agree(tiny):
    _, fields, ckpt, paths = tiny
    model = yolo.load(str(ckpt), **fields)
    rgb = [np.array(Image.open(p).convert("RGB")) for p in paths]
    by_path = model.predict(paths)  # Path objects as well as strings
    for results in (model.predict(rgb), model.predict([a[..., ::-1] for a in rgb], bgr=True),
                    model.predict([Image.open(p) for p in paths]), [model.predict(p)[0] for p in paths]):
        for expected, result in zip(by_path, results):  # one image alone is a batch of another size: 1 ulp
            np.testing.assert_allclose(result.boxes, expected.boxes, rtol=1e-6, atol=1e-5)
            np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-6)
            np.testing.assert_array_equal(result.class_ids, expected.class_ids)
    single = model.predict(rgb[3])  # one image (not a list): a list of one result
    assert len(single) == 1 and single[0].boxes.shape[1] == 4 and single[0].boxes.dtype == np.float32
    swapped = model.predict(rgb[3][..., ::-1].copy())  # BGR read as RGB: other colours, other scores
    assert not np.array_equal(swapped[0].scores, by_path[3].scores)


def test_a_grayscale_array_and_a_higher_threshold(tiny):
    _, fields, ckpt, paths = tiny
    model = yolo.load(ckpt, **fields)
    gray = np.array(Image.open(paths[0]).convert("L"))
    (result,) = model.predict(gray)
    (as_rgb,) = model.predict(np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(result.scores, as_rgb.scores)
    (fewer,) = model.predict(paths[0], conf=0.12)
    assert 0 < len(fewer.scores) < len(model.predict(paths[0])[0].scores) and fewer.scores.min() >= 0.12


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 10, 4), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (42, "a path, an RGB numpy array or a PIL image"),
])
def test_a_bad_image_is_one_clear_error(tiny, bad, match):
    _, fields, ckpt, _ = tiny
    with pytest.raises(ValueError, match=match):
        yolo.load(ckpt, **fields).predict([bad])


def test_a_missing_image_file_is_named(tiny, tmp_path):
    _, fields, ckpt, _ = tiny
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        yolo.load(ckpt, **fields).predict(tmp_path / "nowhere.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="text.jpg"):
        yolo.load(ckpt, **fields).predict(str(tmp_path / "text.jpg"))


def test_an_unknown_field_is_named_with_the_closest_one(tiny):
    _, fields, ckpt, _ = tiny
    with pytest.raises(ValueError, match="unknown config field 'predict_cnof'; did you mean 'predict_conf'"):
        yolo.load(ckpt, predict_cnof=0.5)
    with pytest.raises(ValueError, match="config field 'epochs' = 'three' must be an int"):
        yolo.train(epochs="three")


def test_an_exported_onnx_file_predicts_as_its_checkpoint(tiny):
    _, fields, ckpt, paths = tiny
    onnx_path, _ = yolo.export(ckpt_path=str(ckpt), **fields)
    assert onnx_path.suffix == ".onnx"
    by_torch = yolo.load(ckpt, **fields).predict(paths)
    by_onnx = yolo.load(onnx_path, **fields).predict(paths)
    for a, b in zip(by_torch, by_onnx):
        assert len(a.scores) == len(b.scores) > 0
        # a detection of one is a detection of the other (ties of equal scores may come in another order)
        for box, score, label in zip(b.boxes, b.scores, b.class_ids):
            same = (np.abs(a.boxes - box).max(1) < 1e-2) & (np.abs(a.scores - score) < 1e-4) & (a.class_ids == label)
            assert same.any(), (box, score, label)
        assert b.names == [["circle", "square", "triangle"][i] for i in b.class_ids]


def test_val_and_the_commands_run_through_the_tasks(tiny, monkeypatch):
    """val returns the val command's results; train / export / predict / check hand their config to the command's
    run(cfg), with the overrides applied."""
    _, fields, ckpt, _ = tiny
    (result,) = yolo.val(ckpt_path=str(ckpt), **fields)
    assert 0 <= result.map50 <= 1
    from yolo.tasks import train as train_task
    seen = []
    monkeypatch.setattr(train_task, "run", lambda cfg: seen.append(cfg) or "trained")
    assert yolo.train(epochs=3, run_name="api_run", **fields) == "trained"
    (cfg,) = seen
    assert cfg.task == "train" and cfg.epochs == 3 and cfg.run_name == "api_run" and cfg.num_classes == 3


def test_a_config_object_or_file_and_overrides(tiny, monkeypatch, tmp_path):
    _, fields, _, _ = tiny
    from yolo.tasks import train as train_task
    seen = []
    monkeypatch.setattr(train_task, "run", seen.append)
    mine = BaseConfig()
    mine.epochs = 7
    yolo.train(mine, **fields)
    assert seen[-1].epochs == 7 and seen[-1] is not mine and mine.task == "train" and mine.img_size == 320
    config_file = tmp_path / "cfg.py"
    config_file.write_text("from yolo.config import BaseConfig\n\n\nclass C(BaseConfig):\n    def __init__(self):\n"
                           "        super().__init__()\n        self.epochs = 5\n")
    yolo.train(str(config_file), lr=1e-3, **fields)
    assert seen[-1].epochs == 5 and seen[-1].lr == 1e-3


def test_importing_the_config_stays_light():
    """`import yolo` and `import yolo.config` load neither the API nor torch; yolo.load etc. load the API on use."""
    code = "import sys, yolo, yolo.config; print('torch' in sys.modules, 'yolo.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["False", "False"], out.stderr
    from yolo import api
    assert yolo.load is api.load and yolo.Detections is api.Detections
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        yolo.nothing_here  # noqa: B018
    assert {"load", "train", "val", "export", "check", "run", "Detections"} <= set(dir(yolo))


@pytest.mark.slow
def test_train_then_load_and_predict(tmp_path):
    """The documented flow (docs/api.md): train one epoch with the API, load its best.pt, predict on a val image."""
    ensure_shapes_dataset(str(tmp_path / "data"), 8, 4, 0, num_workers=1)
    fields = dict(data_root=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"), img_size=64, width=0.25,
                  shapes_num_train=8, shapes_num_val=4, num_workers=0, batch_size=4, epochs=1, device="cpu")
    fitness, run_dir = yolo.train(run_name="api", **fields)
    model = yolo.load(run_dir / "best.pt", **fields)
    (result,) = model.predict(next((tmp_path / "data" / "JPEGImages").glob("val_*.jpg")))
    assert result.boxes.shape == (len(result.scores), 4) and len(result.names) == len(result.scores)
