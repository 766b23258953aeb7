"""bench/peer.py: the YOLO-txt copy it gives the peer holds our boxes (read back by the project's own reader), and a
fast run on a tiny built-in dataset trains and scores both sides without touching the network."""
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolo.data.records import Record
from yolo.data.yolo_txt import read_yolo_txt

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_peer", ROOT / "bench" / "peer.py")
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)  # the module itself never imports ultralytics


def image(path, width, height, orientation=None):
    exif = Image.Exif()
    if orientation:
        exif[peer.EXIF_ORIENTATION] = orientation
    Image.new("RGB", (width, height), (90, 120, 150)).save(path, exif=exif)
    return str(path)


def records(tmp_path):
    """Fractional boxes on images of different shapes; a difficult box; an image without boxes; two files of the
    same name in different folders; an EXIF-rotated image."""
    (tmp_path / "a").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    boxes = [np.array([[3.25, 4.5, 50.75, 41.0], [10.0, 0.0, 80.0, 60.0]], np.float32),
             np.array([[0.5, 1.5, 20.25, 99.0], [30.0, 30.0, 40.0, 45.5]], np.float32),
             np.zeros((0, 4), np.float32),
             np.array([[7.0, 2.0, 33.0, 21.0]], np.float32)]
    labels = [np.array([0, 2]), np.array([1, 1]), np.zeros(0, np.int64), np.array([2])]
    difficult = [np.array([False, False]), np.array([False, True]), np.zeros(0, bool), np.array([False])]
    paths = [image(tmp_path / "a" / "x.jpg", 80, 60), image(tmp_path / "b" / "x.jpg", 41, 99),
             image(tmp_path / "a" / "empty.png", 32, 32), image(tmp_path / "a" / "turned.jpg", 40, 24, orientation=6)]
    return [Record(p, *Image.open(p).size, b, lab.astype(np.int64), d)
            for p, b, lab, d in zip(paths, boxes, labels, difficult)]


def test_yolo_txt_copy_reads_back_as_the_same_boxes(tmp_path):
    names = ["circle", "square", "triangle"]
    recs = records(tmp_path / "src")
    data_yaml, val_paths = peer.write_yolo_dataset(recs[:1], recs, names, tmp_path / "copy")
    back, back_names = read_yolo_txt(str(tmp_path / "copy"), "val", names)  # the project's reader as reference
    assert back_names == names and len(back) == len(recs) == len(val_paths)
    by_path = {r.image_path: r for r in back}
    for rec, path in zip(recs, val_paths):
        got, kept = by_path[path], ~rec.difficult  # difficult boxes stay out of the peer's targets, as of ours
        assert (got.width, got.height) == (rec.width, rec.height)
        np.testing.assert_allclose(got.boxes, rec.boxes[kept], atol=1e-3)
        np.testing.assert_array_equal(got.labels, rec.labels[kept])
    assert len(read_yolo_txt(str(tmp_path / "copy"), "train", names)[0]) == 1
    assert 'names: ["circle", "square", "triangle"]' in data_yaml.read_text()


def test_table_prints_ratios_and_flags_an_untrained_side():
    side = {"params_m": 2.0, "gflops": 2.0, "ms_per_image": 40.0, "epochs": 50}
    trained = {"ours": {**side, "map50": 0.80, "map": 0.50}, "peer": {**side, "map50": 0.40, "map": 0.20}}
    lines = peer.table(trained).splitlines()
    assert lines[-1].startswith("| ours / peer | 2.000 | 2.500 | 1.000")
    untrained = {"ours": trained["ours"], "peer": {**side, "map50": 0.00001, "map": 0.0}}
    assert "peer below mAP@0.5" in peer.table(untrained) and "note" not in peer.table(trained)


def test_exif_rotated_images_are_copied_as_stored(tmp_path):
    recs = records(tmp_path / "src")
    peer.write_yolo_dataset(recs, [], ["circle", "square", "triangle"], tmp_path / "copy")
    copies = sorted((tmp_path / "copy" / "images" / "train").iterdir())
    turned = [p for p in copies if "turned" in p.name]
    assert len(turned) == 1 and not turned[0].is_symlink() and turned[0].suffix == ".png"
    with Image.open(turned[0]) as im:
        assert im.size == (40, 24) and im.getexif().get(peer.EXIF_ORIENTATION, 1) == 1
    assert all(p.is_symlink() for p in copies if p not in turned)


# a guard loaded into the bench's process: every attempt to reach the network is written down and refused
NO_NETWORK = textwrap.dedent("""
    import os, socket
    def _refuse(*args, **kwargs):
        with open(os.environ["NETWORK_ATTEMPTS"], "a") as f:
            f.write(repr(args[:2]) + "\\n")
        raise OSError("network disabled by the test")
    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.getaddrinfo = _refuse
    socket.create_connection = _refuse
""")


def test_fast_run_scores_both_sides_offline(tmp_path):
    pytest.importorskip("ultralytics")  # an optional dependency of this bench only
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "sitecustomize.py").write_text(NO_NETWORK)
    attempts = tmp_path / "network_attempts.txt"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "NETWORK_ATTEMPTS": str(attempts),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "guard"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "bench/peer.py", "--config", "configs/my_config.py", "--fast", "--threads", "1",
         "--out", str(tmp_path / "runs"), "--name", "tiny", "--data_root", str(tmp_path / "shapes"),
         "--shapes_num_train", "12", "--shapes_num_val", "6", "--batch_size", "6", "--epochs", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not attempts.exists(), attempts.read_text()
    report = json.loads((tmp_path / "runs" / "tiny" / "peer.json").read_text())
    for side in ("ours", "peer"):
        for key in ("map50", "map", "params_m", "gflops", "ms_per_image"):
            assert math.isfinite(report[side][key]) and report[side][key] >= 0, (side, key)
        assert report[side]["epochs"] >= 1 and report[side]["ms_per_image"] > 0
    assert report["peer"]["threads_seen"] == [1]
    assert all(math.isfinite(v) for v in report["peer"]["own_validator"].values())
    assert 2.9 < report["peer"]["params_m"] < 3.2 and report["val_images"] == 6
    assert "ours / peer" in run.stdout
    written = [p for p in (tmp_path / "shapes").rglob("*") if p.suffix == ".cache" or "labels" in p.parts]
    assert not written  # the peer's labels and caches live in the run folder, not in the data folder


@pytest.mark.slow
def test_without_ultralytics_the_bench_skips(tmp_path):
    hidden = textwrap.dedent("""
        import importlib.util, sys
        _find = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "ultralytics" else _find(name, *a)
        sys.argv = ["bench/peer.py"]
        exec(open("bench/peer.py").read(), {"__name__": "__main__", "__file__": "bench/peer.py"})
    """)
    run = subprocess.run([sys.executable, "-c", hidden], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skipped" in run.stdout and "pip install ultralytics" in run.stdout
