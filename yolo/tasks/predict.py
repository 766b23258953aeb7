"""`python main.py --task predict`: detections drawn on images or video frames, predictions.json in the COCO results
format, and with predict_save_txt YOLO-format labels. What predict_source may name: predict_sources.py; videos and
webcams: predict_video.py."""
import json
import time
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from ..config import task_configs
from ..data.checks import DataError, Problems
from ..data.dataset import build_loader, read_records
from ..data.records import Record, checked_image_size, load_image_rgb
from ..engine.checkpoint import load_model, output_folder
from ..engine.evaluator import predict_loader
from ..engine.folders import next_free_dir
from ..engine.logs import setup_logging
from ..metrics import coco_results_json
from ..models.fuse import fuse_batchnorm
from ..viz.figures import save_figure
from ..viz.detections import draw_detections, prediction_figure
from .predict_sources import (image_files, image_ids, is_video, picture_names, relative_names, webcam_index,
                              yolo_label_lines)
from .predict_video import annotate_stream, open_capture

EMPTY_LABELS = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)  # a Record without boxes


def source_records(cfg, tasks):
    """Images to predict on: those cfg.predict_source names (predict_sources.image_files), else the first val images
    of every task. Returns (records, skipped paths). A file that cannot be read (not an image, truncated, over PIL's
    pixel limit, missing from a .txt list) is skipped with a warning naming it, as the dataset readers skip it; none
    readable at all is a DataError."""
    if cfg.predict_source is None:
        per_task = max(1, -(-cfg.predict_max_images // len(tasks)))
        return [rec for task in tasks for rec in read_records(task, "val", generate=False)[:per_task]], []
    source = cfg.predict_source
    files = image_files(source)
    problems = Problems(f"predict_source {source}", show_per_kind=len(files))  # every skipped file named
    records = []
    for f in files:
        size = checked_image_size(str(f), problems)  # header and end checked; a suspect file decoded
        if size is not None:
            records.append(Record(str(f), *size, *EMPTY_LABELS))
    if not records:
        reasons = "\n  ".join(f"{p.file}: {p.detail}" for p in problems.items[:10])
        tried = f"{len(files)} file{'s' if len(files) > 1 else ''} tried"
        raise DataError(f"predict_source {source}: no image can be read ({tried})\n  {reasons}")
    return records, [p.file for p in problems.items]


def draw_predictions(records, detections, class_names, pictures, out_dir):
    """Each image with its detections as out_dir/<picture name>.jpg (pictures: picture_names of the records). An
    image without detections (it failed to decode in the loader, which warned) or that fails to decode now is
    skipped. Returns the indices of the images drawn."""
    drawn = []
    for index, rec in enumerate(records):
        if index not in detections:
            continue
        try:
            image = load_image_rgb(rec.image_path)
        except DataError as e:
            logger.warning(f"{e}; skipped")
            continue
        boxes, scores, labels = detections[index]
        draw_detections(image, boxes, labels, class_names, scores).save(out_dir / f"{pictures[index]}.jpg", quality=90)
        drawn.append(index)
    return drawn


def run(cfg):
    """Run every task's head on each image; draw all detections (labelled task/class with several tasks) and an
    overview predictions.png of the first four images (ground truth dashed), and write predictions.json (COCO results
    format plus file_name and category_name) and images.json (each image's id, file_name, width and height; the id
    is the file name's stem when every stem is a distinct number, else the image's index in the sorted list) into
    the checkpoint's run folder (predictions/), or runs_dir/predictions/<checkpoint name>/ for a checkpoint outside
    runs_dir; an .onnx model writes to predictions_onnx/ instead; when the folder exists, to predictions2/, 3 ...
    predict_save_txt adds labels/<picture name>.txt. A video file or webcam: predict_stream. A PyTorch model has its
    BatchNorms folded first (config predict_fuse). Returns the output folder."""
    setup_logging()
    model, device, ckpt_path = prediction_model(cfg)
    webcam = webcam_index(cfg.predict_source)
    if webcam is not None or is_video(cfg.predict_source):
        return predict_stream(model, device, ckpt_path, cfg, webcam)
    records, skipped = source_records(cfg, task_configs(cfg))
    start = time.perf_counter()
    detections, class_names = predict_records(model, device, cfg, records)
    seconds, count = time.perf_counter() - start, len(detections)
    every_task = " of every task" if len(cfg.task_names) > 1 else ""
    logger.info(f"{count} image{'s' if count != 1 else ''} predicted in {seconds:.1f} s: "
                f"{count / max(seconds, 1e-9):.1f} images/s (reading, letterbox, forward and NMS{every_task})")
    out_dir = prediction_folder(cfg, ckpt_path)
    pictures = picture_names([rec.image_path for rec in records])  # two a.jpg: a.jpg, a_<index>.jpg
    drawn = draw_predictions(records, detections, class_names, pictures, out_dir)
    drawn_set = set(drawn)
    skipped += [rec.image_path for i, rec in enumerate(records) if i not in drawn_set]
    if not drawn:
        out_dir.rmdir()  # made above and still empty: the next run takes its name, not predictions2/
        raise DataError(f"no image could be decoded: {', '.join(skipped[:10])}")
    # one overview of the first images: detections with a caption each, the ground truth dashed (val images)
    save_figure(prediction_figure([records[i] for i in drawn], [detections[i] for i in drawn], class_names,
                                  cfg.predict_conf), out_dir / "predictions.png", dpi=80, palette=True)
    write_results(out_dir, records, pictures, drawn, detections, class_names, cfg)
    if skipped:
        logger.warning(f"{len(skipped)} of {len(skipped) + len(drawn)} images skipped as unreadable (each named "
                       f"above): {', '.join(Path(p).name for p in skipped[:10])}{', ...' if len(skipped) > 10 else ''}")
    logger.info(f"{len(drawn)} annotated images and predictions.json written to {out_dir}")
    return out_dir


def prediction_folder(cfg, ckpt_path):
    """A new output folder: an exported model's pictures go beside, not over, those of the checkpoint it came from,
    and pictures of other images or thresholds never mix with or replace earlier ones."""
    return next_free_dir(output_folder(ckpt_path, cfg.runs_dir,
                                       "predictions_onnx" if cfg.backend == "onnxruntime" else "predictions"))


def write_results(out_dir, records, pictures, drawn, detections, class_names, cfg):
    """predictions.json and images.json of the drawn images (their records' indices), and with predict_save_txt one
    labels/<picture name>.txt each (empty when nothing was detected: in YOLO format, an image without objects);
    pictures: picture_names of the records."""
    paths = [records[i].image_path for i in drawn]
    ids, names = image_ids(paths), relative_names(paths)
    results = coco_results_json(ids, *([detections[i][k] for i in drawn] for k in range(3)))
    name_of = dict(zip(ids, names))
    for entry in results:
        entry.update(file_name=name_of[entry["image_id"]], category_name=class_names[entry["category_id"] - 1])
    (out_dir / "predictions.json").write_text(json.dumps(results))
    images = [{"id": image_id, "file_name": name, "width": records[i].width, "height": records[i].height}
              for image_id, name, i in zip(ids, names, drawn)]
    (out_dir / "images.json").write_text(json.dumps(images, indent=1))
    if cfg.predict_save_txt:
        (out_dir / "labels").mkdir()
        for i in drawn:
            lines = yolo_label_lines(*detections[i], records[i].width, records[i].height, cfg.predict_save_conf)
            (out_dir / "labels" / f"{pictures[i]}.txt").write_text("".join(line + "\n" for line in lines))


def predict_stream(model, device, ckpt_path, cfg, webcam):
    """--task predict on a video file or a webcam (predict_video.py): the annotated video, predictions.json of its
    predicted frames (image_id = frame number) and with predict_save_txt their labels, in a new output folder."""
    source = cfg.predict_source
    capture = open_capture(source, webcam)  # before the output folder: a video that cannot be read leaves none
    name, file_name = (f"webcam{webcam}",) * 2 if webcam is not None else (Path(source).stem, Path(source).name)
    cfg.num_workers = 0  # the frames are in memory: worker processes would only copy them
    class_names = merged_class_names(task_configs(cfg))

    def detect(frames):
        records = [Record(f"{file_name} frame", f.shape[1], f.shape[0], *EMPTY_LABELS) for f in frames]
        detections, _ = predict_records(model, device, cfg, records, frames, show_progress=False)
        return [detections[i] for i in range(len(frames))]

    out_dir = prediction_folder(cfg, ckpt_path)
    results, read, predicted = annotate_stream(capture, detect, class_names, cfg, out_dir, name, file_name)
    if not predicted:
        out_dir.rmdir()  # made above and still empty
        raise DataError(f"predict_source {source}: {'webcam' if webcam is not None else 'video'} delivered no frame")
    for entry in results:
        entry["category_name"] = class_names[entry["category_id"] - 1]
    (out_dir / "predictions.json").write_text(json.dumps(results))
    logger.info(f"{predicted} annotated frames ({name}.mp4) and predictions.json written to {out_dir}")
    return out_dir


def prediction_model(cfg):
    """load_model for prediction (this command and yolo.api): a PyTorch model has its BatchNorms folded (config
    predict_fuse), and cfg.conf_thres becomes predict_conf. Returns (model, device, checkpoint path)."""
    model, device, ckpt_path = load_model(cfg)
    if cfg.predict_fuse and cfg.backend == "torch":
        example = torch.zeros(1, 3, cfg.img_size, cfg.img_size, dtype=torch.uint8, device=device)
        model = fuse_batchnorm(model, example, task=None)
    cfg.conf_thres = cfg.predict_conf
    return model, device, ckpt_path


def predict_records(model, device, cfg, records, images=None, show_progress=True):
    """Every task's detections on the records' images, letterboxed as evaluation does and mapped back to original
    pixels: ({record index: (boxes, scores, labels)}, class names). images: the records' decoded images when they
    are in memory (build_loader), else the files are read."""
    tasks = task_configs(cfg)
    loader = build_loader(tasks[0], records, train=False, images=images)
    per_task = [predict_loader(model, loader, cfg, device, show_progress, task=k) for k in range(len(tasks))]
    return merge_task_detections(per_task, tasks)


def merge_task_detections(per_task, tasks):
    """One detection set per image from every task's: labels are shifted into one list of class names, each
    name prefixed by its task when there are several ("symbols/star"). Returns (detections, class names)."""
    class_names = merged_class_names(tasks)
    if len(tasks) == 1:
        return per_task[0], class_names
    offsets = np.cumsum([0] + [len(task.class_names) for task in tasks])
    merged = {}
    for index in per_task[0]:
        parts = [dets[index] for dets in per_task]
        merged[index] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                         np.concatenate([p[2] + offset for p, offset in zip(parts, offsets)]))
    return merged, class_names


def merged_class_names(tasks):
    """What the labels of merge_task_detections index: the task's class names, or with several tasks every task's,
    each prefixed by its task ("symbols/star")."""
    if len(tasks) == 1:
        return list(tasks[0].class_names)
    return [f"{task.task_name}/{name}" for task in tasks for name in task.class_names]
