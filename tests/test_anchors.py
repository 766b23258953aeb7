"""k-means anchors with the IoU distance, the fit numbers (mean best IoU, best-possible recall), and --task anchors."""
import ast
import json

import numpy as np
import pytest
from loguru import logger

from yolo.anchors import anchor_fit, format_anchors, kmeans_anchors, refit_if_poor, split_into_scales
from yolo.config import BaseConfig
from yolo.data.records import Record
from yolo.data.shapes import ensure_shapes_dataset
from yolo.data.transforms import letterboxed_box_sizes
from yolo.tasks import anchors as anchors_task

CENTRES = np.array([[8, 10], [14, 30], [30, 16], [40, 45], [30, 90], [90, 40], [120, 120], [100, 220], [240, 160]],
                   dtype=float)


def clustered_boxes(n_per=200, jitter=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([c * np.exp(rng.normal(0, jitter, (n_per, 2))) for c in CENTRES])


def test_fit_numbers_by_hand():
    wh = np.array([[10, 10], [20, 10], [10, 40]], float)
    anchors = np.array([[10, 10]], float)
    # IoU with the 10x10 anchor: 1, 100/200 = 0.5, 100/400 = 0.25
    fit = anchor_fit(wh, anchors, iou_thres=0.5)
    assert fit["mean_best_iou"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert fit["bpr"] == pytest.approx(2 / 3) and fit["above_per_box"] == pytest.approx(2 / 3)
    fit = anchor_fit(wh, np.array([[10, 10], [20, 10]], float), iou_thres=0.5)
    # the 20x10 anchor: IoU 0.5 with 10x10, 1 with 20x10, 100/(200+400-100) = 0.2 with 10x40
    assert fit["mean_best_iou"] == pytest.approx((1 + 1 + 0.25) / 3)
    assert fit["above_per_box"] == pytest.approx((2 + 2 + 0) / 3)


def test_kmeans_recovers_clusters_sorted_by_area():
    anchors = kmeans_anchors(clustered_boxes(), k=9, seed=1)
    assert anchors.shape == (9, 2)
    assert (np.diff(anchors.prod(1)) > 0).all()
    expected = CENTRES[np.argsort(CENTRES.prod(1))]
    np.testing.assert_allclose(anchors, expected, rtol=0.1)
    wh = clustered_boxes(seed=5)
    assert anchor_fit(wh, anchors, 0.5)["mean_best_iou"] > 0.85
    # better than the default anchors of the config on these boxes
    default = np.concatenate([np.array(a, float) for a in BaseConfig().anchors])
    assert anchor_fit(wh, anchors, 0.5)["mean_best_iou"] > anchor_fit(wh, default, 0.5)["mean_best_iou"] + 0.05


def test_kmeans_needs_enough_boxes():
    with pytest.raises(ValueError, match="at least 9 boxes"):
        kmeans_anchors(np.ones((5, 2)), k=9)


def test_scales_and_the_paste_line_are_valid_config():
    anchors = kmeans_anchors(clustered_boxes(), k=9, seed=0)
    scales = split_into_scales(anchors)
    assert [len(s) for s in scales] == [3, 3, 3] and all(isinstance(v, int) for s in scales for wh in s for v in wh)
    np.testing.assert_allclose(np.array(scales).reshape(-1, 2), CENTRES[np.argsort(CENTRES.prod(1))], rtol=0.1)
    line = format_anchors(scales)
    assert line.startswith("        self.anchors = [[")
    value = ast.literal_eval("".join(part.split("#")[0] for part in line.split("=", 1)[1].splitlines()))
    assert value == [list(s) for s in scales]
    cfg = BaseConfig()
    cfg.anchors = value
    cfg.finalize()  # the config accepts it


def test_letterboxed_sizes_by_hand():
    empty = np.zeros(0, bool)
    records = [Record("a", 200, 100, np.array([[0, 0, 50, 50], [10, 10, 30, 20]], np.float32), np.array([0, 0]),
                      np.array([False, True])),
               Record("b", 50, 100, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), empty)]
    np.testing.assert_allclose(letterboxed_box_sizes(records, 100), [[25, 25]])  # scale 0.5; difficult left out


def test_anchors_task_on_a_small_dataset(tmp_path, monkeypatch):
    cfg = BaseConfig()
    cfg.data_root, cfg.shapes_num_train, cfg.shapes_num_val, cfg.img_size = str(tmp_path / "shapes"), 40, 4, 128
    cfg.finalize()
    ensure_shapes_dataset(cfg.data_root, 40, 4, 0, tuple(cfg.class_names))
    messages = []

    def collect_log():  # the task sets up its own logging first: let that setup add our sink
        logger.remove()
        logger.add(lambda m: messages.append(str(m)), level="INFO", format="{message}")

    monkeypatch.setattr(anchors_task, "setup_logging", collect_log)
    try:
        new = anchors_task.run(cfg)
    finally:
        logger.remove()
    assert len(new) == 3 and all(len(s) == 3 for s in new)
    text = "".join(messages)
    assert "mean best IoU" in text and "BPR@0.3" in text and "current" in text and "self.anchors = [[" in text


# ------------------------------------------------------------------------------------ autoanchor before training
HUGE = [[(600, 600)] * 3, [(700, 700)] * 3, [(800, 800)] * 3]  # no box of clustered_boxes reaches IoU 0.3 with them


def test_poor_anchors_are_refit_and_good_ones_kept():
    wh = clustered_boxes()
    new, message = refit_if_poor(wh, HUGE, iou_thres=0.3, min_bpr=0.98)
    assert anchor_fit(wh, np.reshape(HUGE, (-1, 2)), 0.3)["bpr"] == 0  # the case is really poor
    assert new is not None and "refit" in message
    assert [len(s) for s in new] == [3, 3, 3] and anchor_fit(wh, np.reshape(new, (-1, 2)), 0.3)["bpr"] > 0.98
    np.testing.assert_allclose(np.reshape(new, (-1, 2)), CENTRES[np.argsort(CENTRES.prod(1))], rtol=0.1)
    kept, message = refit_if_poor(wh, new, iou_thres=0.3, min_bpr=0.98)
    assert kept is None and "kept" in message


def test_refit_keeps_the_anchors_when_kmeans_cannot_help():
    few = clustered_boxes()[:5]  # fewer boxes than anchors: no k-means
    new, message = refit_if_poor(few, HUGE, iou_thres=0.3, min_bpr=0.98)
    assert new is None and "at least 9 boxes" in message


def test_training_refits_poor_anchors_into_its_config_and_model(tmp_path):
    from yolo.config import apply_overrides, config_from_dict
    from yolo.engine import trainer
    from yolo.engine.checkpoint import load_checkpoint
    from yolo.models.detector import build_model
    args = ["--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs"), "--shapes_num_train", "16",
            "--shapes_num_val", "2", "--img_size", "64", "--width", "0.25", "--batch_size", "8", "--num_workers", "0",
            "--epochs", "1", "--device", "cpu", "--tensorboard", "false", "--eval_artifacts", "false",
            "--anchors", str(HUGE)]
    _, run_dir = trainer.train(apply_overrides(BaseConfig(), args + ["--run_name", "refit"]).finalize())
    saved = json.loads((run_dir / "config.json").read_text())["anchors"]
    assert "anchors refit by k-means" in (run_dir / "log.txt").read_text()
    assert np.asarray(saved).tolist() != np.asarray(HUGE).tolist()
    model = build_model(config_from_dict(load_checkpoint(run_dir / "last.pt")["config"]))  # what val/predict build
    np.testing.assert_array_equal(model.decoding.anchors.numpy(), np.asarray(saved, dtype=np.float32))
    # auto_anchor_bpr 0: the configured anchors are trained, however poor
    _, run_dir = trainer.train(apply_overrides(BaseConfig(), args + ["--run_name", "keep", "--auto_anchor_bpr", "0"])
                               .finalize())
    assert np.asarray(json.loads((run_dir / "config.json").read_text())["anchors"]).tolist() == np.asarray(HUGE).tolist()
