import numpy as np
import pytest

from yolo.config import BaseConfig
from yolo.data.transforms import PAD_FILL, boxes_to_original, build_transform, letterbox_params


@pytest.mark.parametrize("width, height", [(333, 257), (257, 333), (640, 480), (300, 299), (1000, 37), (320, 320)])
def test_val_letterbox_round_trip_within_one_pixel(width, height):
    cfg = BaseConfig().finalize()
    rng = np.random.default_rng(width * height)
    x1 = rng.uniform(0, width - 20, 8)
    y1 = rng.uniform(0, height - 10, 8)
    boxes = np.stack([x1, y1, np.minimum(x1 + rng.uniform(5, 200, 8), width),
                      np.minimum(y1 + rng.uniform(5, 200, 8), height)], 1).astype(np.float32)
    image = np.zeros((height, width, 3), np.uint8)
    out = build_transform(cfg, train=False)(image=image, bboxes=boxes, labels=np.zeros(8))
    assert out["image"].shape == (cfg.img_size, cfg.img_size, 3)
    back = boxes_to_original(np.asarray(out["bboxes"]), width, height, cfg.img_size)
    assert np.abs(back - boxes).max() <= 1.0


def test_letterbox_keeps_aspect_and_pads_with_the_mean():
    cfg = BaseConfig().finalize()
    image = np.full((100, 400, 3), 255, np.uint8)
    out = build_transform(cfg, train=False)(image=image, bboxes=np.zeros((0, 4)), labels=[])["image"]
    sx, sy, px, py = letterbox_params(400, 100, cfg.img_size)
    assert sx == pytest.approx(sy, rel=0.01) and px == 0 and py == (cfg.img_size - 80) // 2
    assert tuple(out[0, 0]) == PAD_FILL and tuple(out[cfg.img_size // 2, 5]) == (255, 255, 255)


def test_train_transform_also_letterboxes():
    """Train and val must agree on geometry: a square object stays square after the train pipeline."""
    cfg = BaseConfig()
    cfg.affine_scale, cfg.affine_translate, cfg.hflip_prob, cfg.color_jitter = (1.0, 1.0), 0.0, 0.0, 0.0
    cfg.finalize()
    image = np.zeros((200, 400, 3), np.uint8)
    box = np.array([[100, 50, 150, 100]], np.float32)
    out = build_transform(cfg, train=True)(image=image, bboxes=box, labels=[0])
    x1, y1, x2, y2 = out["bboxes"][0]
    assert abs((x2 - x1) - (y2 - y1)) < 1.0
