"""The Python API: load a checkpoint (.pt, or an .onnx file of --task export) and predict on images, and the
commands of main.py as functions. Each runs its command's code (load_model, the predict command's letterbox, decode
and NMS, the tasks' run(cfg)): nothing here is a second implementation.

    import yolo

    model = yolo.load("runs/shapes/best.pt")             # config fields as keywords: yolo.load(path, predict_conf=0.5)
    results = model.predict(["a.jpg", rgb_array, pil_image])    # one Detections per image
    results[0].boxes, results[0].scores, results[0].class_ids, results[0].names

    yolo.train(epochs=3)                                 # = python main.py --task train --epochs 3
    yolo.val(ckpt_path="runs/shapes/best.pt")            # = --task val; yolo.export(...), yolo.run("check", ...)

`config` is what the command would read: None = configs/my_config.py of the working folder (else BaseConfig's
defaults), or a config file's path, or a BaseConfig object (copied, never changed); keywords override its fields.
"""
import copy
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .cli import finish_config, load_command_config
from .config import DERIVED, BaseConfig, task_configs, unknown_field
from .data.records import Record, load_image_rgb, rgb_array
from .tasks import run_task
from .tasks.predict import EMPTY_LABELS, merged_class_names, predict_records, prediction_model

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would otherwise query PyPI on import


@dataclass
class Detections:
    """The detections of one image."""
    boxes: np.ndarray      # (N, 4) float32 x1, y1, x2, y2 in the pixels of the image as given (not letterboxed)
    scores: np.ndarray     # (N,) float32 objectness x class probability
    class_ids: np.ndarray  # (N,) int64 index into the model's class_names
    names: list            # the N class names

    def __len__(self):
        return len(self.scores)


class Detector:
    """A model loaded for prediction, as --task predict loads it (BatchNorm folded for PyTorch: predict_fuse).
    cfg: the finalized config; class_names: what class_ids index (with several tasks "task/class")."""

    def __init__(self, cfg):
        cfg.num_workers = 0  # the images are in memory: worker processes would only copy them
        self.model, self.device, self.path = prediction_model(cfg)
        self.cfg = cfg
        self.class_names = merged_class_names(task_configs(cfg))

    def predict(self, images, bgr=False, conf=None):
        """Detections of every image: a path, an RGB numpy array (H, W, 3) or grayscale (H, W) uint8, a PIL image,
        or a list of them. Arrays are RGB as PIL and matplotlib give them; bgr=True for OpenCV's cv2.imread order.
        conf: the score threshold (None = config predict_conf). Returns a list of Detections, one per image."""
        listed = images if isinstance(images, (list, tuple)) else [images]
        arrays = [as_rgb(image, bgr, i) for i, image in enumerate(listed)]
        records = [Record(str(image) if isinstance(image, (str, os.PathLike)) else f"<image {i}>", a.shape[1],
                          a.shape[0], *EMPTY_LABELS)
                   for i, (image, a) in enumerate(zip(listed, arrays))]
        cfg = self.cfg
        if conf is not None:
            if not 0 <= conf <= 1:
                raise ValueError(f"conf = {conf!r} must be a score threshold in [0, 1]")
            cfg = copy.copy(self.cfg)
            cfg.conf_thres = conf
        detections, names = predict_records(self.model, self.device, cfg, records, arrays, show_progress=False)
        return [Detections(*detections[i], [names[c] for c in detections[i][2]]) for i in range(len(records))]


def as_rgb(image, bgr, index):
    """(H, W, 3) uint8 RGB of one input: files are decoded as the datasets decode them (load_image_rgb)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image_rgb(os.fspath(image))
    if isinstance(image, Image.Image):
        return rgb_array(image)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index}: expected a path, an RGB numpy array or a PIL image, got "
                         f"{type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image {index}: a numpy image must be uint8 (0-255), got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)  # grayscale: the same in every channel
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {index}: a numpy image must be (H, W, 3) RGB or (H, W) grayscale, got shape "
                         f"{image.shape}")
    if image.size == 0:
        raise ValueError(f"image {index}: the array is empty (shape {image.shape})")
    return np.ascontiguousarray(image[..., ::-1] if bgr else image)


def make_config(config, task, fields):
    """The finalized config of a command: `config` (see the module doc) with `fields` set and task = `task`."""
    if isinstance(config, BaseConfig):
        cfg = copy.deepcopy(config)
    elif config is None or isinstance(config, (str, os.PathLike)):
        cfg = load_command_config(None if config is None else os.fspath(config))
    else:
        raise ValueError(f"config must be None, a config file's path or a BaseConfig, got {type(config).__name__}")
    known = BaseConfig().to_dict()
    for key, value in fields.items():
        if key not in known or key in DERIVED:
            raise ValueError(unknown_field(key, known))
        setattr(cfg, key, os.fspath(value) if isinstance(value, os.PathLike) else value)
    cfg.task = task
    return finish_config(cfg)


def load(path, config=None, **fields):
    """A Detector of the checkpoint (.pt) or ONNX file (.onnx) at `path`; its model fields come from the file, data
    and thresholds from the config (predict_conf, nms_iou, max_det, device ...)."""
    return Detector(make_config(config, "predict", {**fields, "ckpt_path": os.fspath(path)}))


def run(task, config=None, **fields):
    """Run command `task` (python main.py --task TASK) and return what it returns."""
    return run_task(make_config(config, task, fields))


def train(config=None, **fields):
    """--task train. Returns (best fitness, run folder)."""
    return run("train", config, **fields)


def val(config=None, **fields):
    """--task val (ckpt_path=..., else best.pt of the newest run of run_name). Returns one EvalResult per task
    (.map50, .map, .table)."""
    return run("val", config, **fields)


def export(config=None, **fields):
    """--task export. Returns (path of the checked .onnx file, parity rows)."""
    return run("export", config, **fields)


def check(config=None, **fields):
    """--task check. Returns, per task, {split: (records, problems)}."""
    return run("check", config, **fields)


__all__ = ["Detections", "Detector", "load", "run", "train", "val", "export", "check"]
