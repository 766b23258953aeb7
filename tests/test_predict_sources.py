"""What --task predict reads (a video file every k-th frame, a webcam index, a glob, a folder searched recursively,
a .txt list of paths) and what it writes beside the pictures: YOLO-format labels (predict_save_txt), image ids
in predictions.json (a numeric file stem, else a stable index listed in images.json), and its speed in the log."""
import json

import cv2
import numpy as np
import pytest
from conftest import untrained_checkpoint
from PIL import Image

from yolo.config import BaseConfig, apply_overrides
from yolo.tasks import predict, predict_sources

TINY = ["--img_size", "64", "--width", "0.25", "--batch_size", "4", "--num_workers", "0", "--device", "cpu",
        "--predict_conf", "0.01"]

REAL_CAPTURE = cv2.VideoCapture  # the tests read written videos back with it while a fake camera is installed
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny detector (at threshold 0.01 it finds boxes everywhere: enough to draw and write)."""
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", TINY)


def config(checkpoint, tmp_path, source, *extra):
    args = TINY + ["--ckpt_path", str(checkpoint), "--predict_source", str(source), "--runs_dir",
                   str(tmp_path / "runs"), *extra]
    return apply_overrides(BaseConfig(), args).finalize()


def photo(path, size=(64, 48), value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path)
    return path


def drawn(out_dir):
    return sorted(p.name for p in out_dir.glob("*.jpg"))


def video(path, frames=6, size=(64, 64)):
    """A short mp4v video (the codec opencv-python-headless writes and reads here), frame i a grey of 40 * i."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * i, np.uint8))
    writer.release()
    return path


def frame_count(path):
    capture, count = REAL_CAPTURE(str(path)), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


# ------------------------------------------------------------------------------------------------ image sources
@pytest.fixture
def tree(tmp_path):
    """photos/a.jpg, photos/b.png, photos/sub/c.jpg, photos/sub/deeper/a.jpg (a second a) and a text file."""
    root = tmp_path / "photos"
    for name, value in [("a.jpg", 1), ("b.png", 2), ("sub/c.jpg", 3), ("sub/deeper/a.jpg", 4)]:
        photo(root / name, value=value)
    (root / "notes.txt").write_text("not an image\n")
    return root


def test_a_folder_is_searched_recursively_and_the_speed_logged(checkpoint, tmp_path, tree, capsys):
    out_dir = predict.run(config(checkpoint, tmp_path, tree))
    assert drawn(out_dir) == ["a.jpg", "a_3.jpg", "b.jpg", "c.jpg"]  # the second a.jpg gets its index
    names = {e["file_name"] for e in json.loads((out_dir / "images.json").read_text())}
    assert names == {"a.jpg", "b.png", "sub/c.jpg", "sub/deeper/a.jpg"}  # relative to the folder
    log = capsys.readouterr().err
    assert "4 images predicted in" in log and "images/s" in log


def test_a_glob_picks_its_matches_only(checkpoint, tmp_path, tree):
    assert drawn(predict.run(config(checkpoint, tmp_path, tree / "*.jpg"))) == ["a.jpg"]
    assert drawn(predict.run(config(checkpoint, tmp_path, tree / "**" / "*.jpg"))) == ["a.jpg", "a_2.jpg", "c.jpg"]
    with pytest.raises(FileNotFoundError, match=r"\*\.gif.*matches no image"):
        predict.run(config(checkpoint, tmp_path, tree / "*.gif"))


def test_a_text_file_lists_paths_relative_to_itself(checkpoint, tmp_path, tree, capsys):
    listing = tmp_path / "lists" / "val.txt"
    listing.parent.mkdir()
    listing.write_text(f"../photos/b.png\n\n{tree / 'sub' / 'c.jpg'}\n  ../photos/missing.jpg  \n")
    out_dir = predict.run(config(checkpoint, tmp_path, listing))
    assert drawn(out_dir) == ["b.jpg", "c.jpg"]
    log = capsys.readouterr().err
    assert "missing.jpg" in log and "1 of 3 images skipped" in log
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(FileNotFoundError, match=r"empty\.txt lists no image"):
        predict.run(config(checkpoint, tmp_path, empty))


# ------------------------------------------------------------------------------------------------ labels and ids
def test_yolo_label_lines_by_hand():
    # a 200 x 100 image, box x 20..60, y 10..50: centre (40, 30) -> (0.2, 0.3), size 40 x 40 -> (0.2, 0.4)
    boxes = np.array([[20, 10, 60, 50], [0, 0, 200, 100]], np.float32)
    scores, labels = np.array([0.875, 0.5], np.float32), np.array([2, 0])
    assert predict_sources.yolo_label_lines(boxes, scores, labels, 200, 100, with_conf=False) == [
        "2 0.200000 0.300000 0.200000 0.400000", "0 0.500000 0.500000 1.000000 1.000000"]
    assert predict_sources.yolo_label_lines(boxes, scores, labels, 200, 100, with_conf=True)[0] == \
        "2 0.200000 0.300000 0.200000 0.400000 0.875000"


def test_save_txt_writes_one_label_file_per_image_matching_predictions_json(checkpoint, tmp_path, tree):
    out_dir = predict.run(config(checkpoint, tmp_path, tree, "--predict_save_txt", "true", "--predict_save_conf",
                                 "true"))
    labels = out_dir / "labels"
    assert sorted(p.name for p in labels.iterdir()) == ["a.txt", "a_3.txt", "b.txt", "c.txt"]  # as the pictures
    images = {e["file_name"]: e for e in json.loads((out_dir / "images.json").read_text())}
    results = json.loads((out_dir / "predictions.json").read_text())
    lines = (labels / "b.txt").read_text().splitlines()
    mine = [r for r in results if r["image_id"] == images["b.png"]["id"]]
    assert len(lines) == len(mine) > 0
    width, height = images["b.png"]["width"], images["b.png"]["height"]
    for line, r in zip(lines, mine):  # the same boxes, best first, in the YOLO convention
        cls, cx, cy, w, h, score = (float(v) for v in line.split())
        x, y, bw, bh = r["bbox"]
        assert cls == r["category_id"] - 1 and abs(score - r["score"]) < 1e-5
        assert np.allclose([cx, cy, w, h], [(x + bw / 2) / width, (y + bh / 2) / height, bw / width, bh / height],
                           atol=2e-6)


def test_image_ids_are_numeric_stems_else_a_stable_index(checkpoint, tmp_path):
    numbered = tmp_path / "numbered"
    for name in ("000000000139.jpg", "0042.png"):
        photo(numbered / name)
    out_dir = predict.run(config(checkpoint, tmp_path, numbered))
    images = json.loads((out_dir / "images.json").read_text())
    assert {e["file_name"]: e["id"] for e in images} == {"000000000139.jpg": 139, "0042.png": 42}
    assert {r["image_id"] for r in json.loads((out_dir / "predictions.json").read_text())} <= {139, 42}

    mixed = tmp_path / "mixed"
    for name in ("17.jpg", "cat.jpg", "sub/17.jpg"):  # a word, and a number twice: indices in sorted order
        photo(mixed / name)
    images = json.loads((predict.run(config(checkpoint, tmp_path, mixed)) / "images.json").read_text())
    assert [(e["id"], e["file_name"]) for e in images] == [(0, "17.jpg"), (1, "cat.jpg"), (2, "sub/17.jpg")]
    assert all(e["width"] == 64 and e["height"] == 48 for e in images)


# ------------------------------------------------------------------------------------------------ video and webcam
def test_video_every_second_frame_is_annotated(checkpoint, tmp_path, capsys):
    clip = video(tmp_path / "clip.mp4")
    out_dir = predict.run(config(checkpoint, tmp_path, clip, "--predict_vid_stride", "2", "--predict_save_txt",
                                 "true"))
    assert frame_count(out_dir / "clip.mp4") == 3  # frames 0, 2, 4
    assert sorted(p.name for p in (out_dir / "labels").iterdir()) == ["clip_0.txt", "clip_2.txt", "clip_4.txt"]
    results = json.loads((out_dir / "predictions.json").read_text())
    assert {r["frame"] for r in results} == {0, 2, 4} and {r["file_name"] for r in results} == {"clip.mp4"}
    assert all(r["image_id"] == r["frame"] for r in results)
    assert "frames/s" in capsys.readouterr().err

    out_dir = predict.run(config(checkpoint, tmp_path, clip, "--predict_max_frames", "4"))
    assert frame_count(out_dir / "clip.mp4") == 4


def test_a_video_that_cannot_be_opened_is_one_clear_error(checkpoint, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"broken\.mp4.*cannot be read as a video"):
        predict.run(config(checkpoint, tmp_path, broken))


class FakeCamera:
    """cv2.VideoCapture of a webcam that delivers `frames` BGR frames, then fails to read (unplugged)."""
    opened, frames = [], 5

    def __init__(self, index):
        FakeCamera.opened.append(index)
        self.left = FakeCamera.frames

    def isOpened(self):
        return True

    def read(self):
        if self.left == 0:
            return False, None
        self.left -= 1
        return True, np.full((48, 64, 3), 30 * self.left, np.uint8)

    def get(self, prop):
        return 0.0  # webcams often report no frame rate

    def release(self):
        pass


def test_webcam_index_from_the_command_line_is_written_to_a_video(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    FakeCamera.opened = []
    cfg = config(checkpoint, tmp_path, 0)
    assert cfg.predict_source == 0  # the command line reads `0` as an int
    out_dir = predict.run(cfg)
    assert FakeCamera.opened == [0] and frame_count(out_dir / "webcam0.mp4") == 5
    out_dir = predict.run(config(checkpoint, tmp_path, 0, "--predict_max_frames", "2"))
    assert frame_count(out_dir / "webcam0.mp4") == 2


def test_predict_source_must_be_a_path_or_a_webcam_index():
    for bad in ("True", "-1", "1.5"):
        with pytest.raises(ValueError, match="predict_source"):
            apply_overrides(BaseConfig(), ["--predict_source", bad]).finalize()


def test_ctrl_c_stops_a_webcam_and_keeps_what_was_read(checkpoint, tmp_path, monkeypatch):
    class InterruptedCamera(FakeCamera):
        def read(self):
            if self.left == 2:  # the user presses Ctrl-C while the 4th frame is read
                raise KeyboardInterrupt
            return super().read()

    monkeypatch.setattr(cv2, "VideoCapture", InterruptedCamera)
    out_dir = predict.run(config(checkpoint, tmp_path, 0))
    assert frame_count(out_dir / "webcam0.mp4") == 3
    assert {r["frame"] for r in json.loads((out_dir / "predictions.json").read_text())} <= {0, 1, 2}


def test_an_int_source_naming_an_existing_folder_is_that_folder(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    FakeCamera.opened = []
    photo(tmp_path / "2024" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    cfg = config(checkpoint, tmp_path, 2024)
    assert cfg.predict_source == 2024  # the command line reads `2024` as an int
    assert predict_sources.webcam_index(2024) is None and predict_sources.webcam_index(7) == 7
    out_dir = predict.run(cfg)
    assert FakeCamera.opened == [] and drawn(out_dir) == ["a.jpg"]


def test_no_image_decoding_leaves_no_empty_predictions_folder(checkpoint, tmp_path, tree, monkeypatch):
    from yolo.data.checks import DataError

    def undecodable(path):
        raise DataError(f"{path}: cannot be decoded")

    with monkeypatch.context() as patch:
        patch.setattr(predict, "load_image_rgb", undecodable)  # read by the loader, then fails to decode when drawn
        with pytest.raises(DataError, match="no image could be decoded"):
            predict.run(config(checkpoint, tmp_path, tree))
    out_dir = predict.run(config(checkpoint, tmp_path, tree))
    assert out_dir.name == "tiny"  # not tiny2: the failed run left no folder behind
    assert [p.name for p in out_dir.parent.iterdir()] == ["tiny"]
