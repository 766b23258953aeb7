"""The tasks main.py dispatches to: train, val, predict. Each is a few lines on top of the engine."""
import json
from pathlib import Path

import numpy as np
from loguru import logger

from .config import config_from_dict
from .data.dataset import build_loader, read_records
from .data.formats import IMAGE_EXTENSIONS, load_image_rgb, read_image_size, Record
from .engine.checkpoint import load_checkpoint, newest_checkpoint
from .engine.evaluator import evaluate, predict_loader
from .engine.logs import setup_logging
from .engine.trainer import select_device, train
from .metrics import coco_results_json
from .models.detector import build_model
from .viz import draw_detections

# what a checkpoint decides about its model; everything else (thresholds, data paths, ...) comes from the config
MODEL_FIELDS = ("backbone", "width", "class_names", "anchors", "label_assignment", "img_size")


def run_task(cfg):
    if cfg.task == "train":
        return train(cfg)
    if cfg.task == "val":
        return validate(cfg)
    if cfg.task == "predict":
        return predict(cfg)
    if cfg.task == "debug": from .engine.debug import run_debug; return run_debug(cfg)  # noqa: E701, E702
    if cfg.task == "info": from .engine.info import run_info; return run_info(cfg)  # noqa: E701, E702
    if cfg.task == "schedule": from .engine.schedules import run_schedule_plot; return run_schedule_plot(cfg)  # noqa: E701, E702, E501
    if cfg.task == "check": from .data.report import run_check; setup_logging(); return run_check(cfg)  # noqa: E701, E702
    if cfg.task == "anchors": from .anchors import run_anchors; setup_logging(); return run_anchors(cfg)  # noqa: E701, E702
    if cfg.task == "show_batch": from .data.report import run_show_batch; setup_logging(); return run_show_batch(cfg)  # noqa: E701, E702, E501
    raise ValueError(f"task {cfg.task!r} is not implemented yet")


def load_model_for_eval(cfg):
    """Load the checkpoint (cfg.ckpt_path, else best.pt of the newest run); its model fields override cfg's."""
    path = Path(cfg.ckpt_path) if cfg.ckpt_path else newest_checkpoint(cfg.runs_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint given (ckpt_path) and no {cfg.runs_dir}/*/best.pt found; "
                                f"train first: python main.py --task train")
    ckpt = load_checkpoint(path)
    saved = config_from_dict(ckpt["config"])
    for field in MODEL_FIELDS:
        setattr(cfg, field, getattr(saved, field))
    cfg.finalize()
    device = select_device(cfg.device)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # shapes that do not fit: a checkpoint of an older version of the model code
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"checkpoint {path} does not fit the model its config describes ({first}); "
                                f"it was probably saved by another version of this code: retrain it") from None
    logger.info(f"loaded {path} (epoch {ckpt.get('epoch')}, saved mAP@0.5 {ckpt.get('map50', float('nan')):.4f})")
    return model.to(device).eval(), device, Path(path)


def validate(cfg):
    setup_logging()
    model, device, _ = load_model_for_eval(cfg)
    loader = build_loader(cfg, read_records(cfg, "val"), train=False)
    result, _ = evaluate(model, loader, cfg, device)
    logger.info(f"validation on {len(loader.dataset)} images\n{result.table}")
    return result


def source_records(cfg):
    """Images to predict on: cfg.predict_source (file or folder), else the first built-in val images."""
    if cfg.predict_source is None:
        return read_records(cfg, "val")[:cfg.predict_max_images]
    source = Path(cfg.predict_source)
    files = [source] if source.is_file() else sorted(p for p in source.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"predict_source {source} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    empty = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    return [Record(str(f), *read_image_size(str(f)), *empty) for f in files]


def predict(cfg):
    setup_logging()
    model, device, ckpt_path = load_model_for_eval(cfg)
    records = source_records(cfg)
    cfg.conf_thres = cfg.predict_conf
    detections = predict_loader(model, build_loader(cfg, records, train=False), cfg, device)
    out_dir = ckpt_path.parent / "predictions"
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, rec in enumerate(records):
        boxes, scores, labels = detections[index]
        image = draw_detections(load_image_rgb(rec.image_path), boxes, labels, cfg.class_names, scores)
        image.save(out_dir / (Path(rec.image_path).stem + ".jpg"), quality=90)
    results = coco_results_json([Path(r.image_path).name for r in records], *(
        [detections[i][k] for i in range(len(records))] for k in range(3)))
    (out_dir / "predictions.json").write_text(json.dumps(results))
    logger.info(f"{len(records)} annotated images and predictions.json written to {out_dir}")
    return out_dir
