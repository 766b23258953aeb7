"""Image files as users have them: 16-bit PNG / TIFF scaled to 8 bits in every reader, unreadable and oversize
files skipped by predict with their names and a count, and the predict overview drawn from a downscaled copy."""
import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import untrained_checkpoint
from PIL import Image

from yolo.config import BaseConfig, apply_overrides
from yolo.data import dataset as dataset_module
from yolo.data.checks import DataError
from yolo.data.dataset import build_loader
from yolo.data.records import Record, checked_image_size, load_image_rgb
from yolo.data.checks import Problems
from yolo.tasks import predict
from yolo.viz import detections as detections_module

# 16-bit samples and their 8-bit values, worked out by hand: the high byte (0x1234 -> 0x12)
SAMPLES_16 = np.array([0, 255, 256, 0x1234, 0x8000, 0xFF00, 0xFFFF], np.uint16)
EXPECTED_8 = np.array([0, 0, 1, 0x12, 0x80, 0xFF, 0xFF], np.uint8)
TINY = ["--img_size", "64", "--width", "0.25", "--batch_size", "4", "--num_workers", "0", "--device", "cpu",
        "--predict_conf", "0.3"]


def png_16bit(samples, color_type):
    """A 16-bit PNG written by hand (not by PIL): color_type 0 gray, 2 RGB; samples (H, W) or (H, W, 3) uint16."""
    height, width = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))  # filter 0 per row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def tiff_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "TIFF")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["gray PNG (I;16)", "RGB PNG (48 bit)", "big-endian TIFF (I;16B)",
                                  "32-bit int TIFF (I)"])
def test_16_bit_images_are_scaled_to_8_bits(tmp_path, kind):
    row = SAMPLES_16[None]
    data = {"gray PNG (I;16)": lambda: png_16bit(row, 0),
            "RGB PNG (48 bit)": lambda: png_16bit(np.stack([row] * 3, -1), 2),
            "big-endian TIFF (I;16B)": lambda: tiff_bytes(row.astype(">u2")),
            "32-bit int TIFF (I)": lambda: tiff_bytes(row.astype(np.int32))}[kind]()
    path = tmp_path / ("image.png" if "PNG" in kind else "image.tif")
    path.write_bytes(data)
    image = load_image_rgb(str(path))
    assert image.dtype == np.uint8 and image.shape == (1, len(SAMPLES_16), 3)
    for channel in range(3):
        assert image[0, :, channel].tolist() == EXPECTED_8.tolist(), kind


def test_32_bit_values_beyond_16_bits_are_refused_by_name(tmp_path):
    path = tmp_path / "deep.tif"
    path.write_bytes(tiff_bytes(np.array([[0, 70000]], np.int32)))
    with pytest.raises(DataError, match=r"deep\.tif.*70000"):
        load_image_rgb(str(path))


def test_training_and_check_read_a_16_bit_png_as_predict_does(tmp_path):
    path = tmp_path / "gray16.png"
    path.write_bytes(png_16bit(np.full((48, 64), 0x4000, np.uint16), 0))
    assert checked_image_size(str(path), Problems("t"), decode=True) == (64, 48)  # --task check decodes it
    cfg = apply_overrides(BaseConfig(), TINY).finalize()
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    image = build_loader(cfg, [Record(str(path), 64, 48, *empty)], train=False).dataset.load(0)[0]
    assert (image == 0x40).all()


# ------------------------------------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny detector saved as a checkpoint of this project (predict only needs it to run)."""
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", TINY)


def run_predict(checkpoint, source, tmp_path):
    torch.set_num_threads(1)
    args = TINY + ["--ckpt_path", str(checkpoint), "--predict_source", str(source), "--runs_dir",
                   str(tmp_path / "runs")]
    return predict.run(apply_overrides(BaseConfig(), args).finalize())


def photo(path, size=(64, 48), value=90):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def test_predict_skips_unreadable_images_by_name_and_counts_them(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(folder / "a_good.jpg")
    full = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(full, "JPEG")
    (folder / "b_truncated.jpg").write_bytes(full.getvalue()[:len(full.getvalue()) // 2])
    (folder / "c_text.jpg").write_text("not an image at all\n")
    (folder / "d_gray16.png").write_bytes(png_16bit(np.full((48, 64), 0x4000, np.uint16), 0))
    out_dir = run_predict(checkpoint, folder, tmp_path)
    log = capsys.readouterr().err
    assert sorted(p.name for p in out_dir.glob("*.jpg")) == ["a_good.jpg", "d_gray16.jpg"]
    assert "b_truncated.jpg" in log and "c_text.jpg" in log and "2 of 4 images skipped" in log
    names = {entry["file_name"] for entry in json.loads((out_dir / "predictions.json").read_text())}
    assert names <= {"a_good.jpg", "d_gray16.png"}
    drawn = np.asarray(Image.open(out_dir / "d_gray16.jpg").convert("L"))
    assert abs(float(np.median(drawn)) - 0x40) <= 2  # the 16-bit gray drawn as its 8-bit value, not white


def test_predict_of_one_truncated_jpeg_is_one_clear_error(checkpoint, tmp_path):
    full = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(full, "JPEG")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(full.getvalue()[:len(full.getvalue()) // 2])
    with pytest.raises(DataError, match=r"broken\.jpg") as error:
        run_predict(checkpoint, broken, tmp_path)
    assert "in a row" not in str(error.value) and "no image" in str(error.value)


def test_predict_skips_an_image_that_fails_only_in_the_loader(checkpoint, tmp_path, capsys, monkeypatch):
    """An image that passes the header check but fails to decode later is skipped, not swapped for its neighbour."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        photo(folder / name)
    real_load = dataset_module.load_image_rgb

    def load(path):
        if path.endswith("b.jpg"):
            raise DataError(f"cannot read image {path}: broken data stream")
        return real_load(path)

    monkeypatch.setattr(dataset_module, "load_image_rgb", load)
    out_dir = run_predict(checkpoint, folder, tmp_path)
    assert sorted(p.name for p in out_dir.glob("*.jpg")) == ["a.jpg", "c.jpg"]
    log = capsys.readouterr().err
    assert "b.jpg" in log and "1 of 3 images skipped" in log


def test_predict_skips_an_image_over_the_pixel_limit(checkpoint, tmp_path, capsys, monkeypatch):
    """PIL refuses images over 2 x MAX_IMAGE_PIXELS (a 400-megapixel photo by default); lowered here to stay fast."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)  # above the overview figure predict renders itself
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(folder / "huge.png", size=(700, 700))  # 490000 pixels: over 2 x 200000
    photo(folder / "small.png", size=(64, 48))
    out_dir = run_predict(checkpoint, folder, tmp_path)
    log = capsys.readouterr().err
    assert sorted(p.name for p in out_dir.glob("*.jpg")) == ["small.jpg"]
    assert any("huge.png" in line and "490000 pixels" in line for line in log.splitlines())
    assert "1 of 2 images skipped" in log


def test_prediction_overview_draws_a_downscaled_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(detections_module, "OVERVIEW_MAX_SIDE", 32)
    path = photo(tmp_path / "wide.jpg", size=(96, 64))
    record = Record(str(path), 96, 64, np.array([[10, 10, 50, 40]], np.float32), np.zeros(1, np.int64),
                    np.zeros(1, bool))
    detections = {0: (np.array([[20, 20, 60, 50]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64))}
    figure = detections_module.prediction_figure([record], detections, ["thing"])
    shown = figure.axes[0].images[0]
    assert max(shown.get_array().shape[:2]) <= 32
    assert tuple(shown.get_extent()) == (0, 96, 64, 0)  # still drawn in original-image pixels: boxes line up
