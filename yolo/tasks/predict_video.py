"""Video in, annotated video out: `--task predict` on a video file or a webcam (predict_source = its index).

Every predict_vid_stride-th frame is predicted, drawn and written to <out_dir>/<video stem>.mp4 (webcam<index>.mp4
for a webcam) with OpenCV's mp4v codec, at the source's frame rate divided by the stride. OpenCV here is the
headless build, which has no window: a webcam's frames go to that file, until the camera stops delivering,
predict_max_frames frames were read, or Ctrl-C. The detector is a callable given by predict.py (frames in, one
(boxes, scores, labels) per frame out), so this module only reads, draws and writes.
"""
import time

import cv2
import numpy as np
from loguru import logger

from ..metrics import coco_results_json
from ..viz.detections import draw_detections
from .predict_sources import yolo_label_lines

FOURCC = "mp4v"        # written and read back by opencv-python-headless (H.264 needs an encoder it lacks)
DEFAULT_FPS = 30.0     # a webcam often reports no frame rate


def open_capture(source, webcam):
    """cv2.VideoCapture of the video file `source` or of webcam index `webcam`; ValueError naming it if OpenCV
    cannot open it."""
    capture = cv2.VideoCapture(webcam if webcam is not None else str(source))
    if not capture.isOpened():
        capture.release()
        if webcam is not None:
            raise ValueError(f"predict_source {webcam}: webcam {webcam} cannot be opened (no camera with that index, "
                             f"or it is busy)")
        raise ValueError(f"predict_source {source} cannot be read as a video by OpenCV (a damaged file, or a codec "
                         f"this OpenCV build lacks)")
    return capture


def annotate_stream(capture, detect, class_names, cfg, out_dir, name, file_name):
    """Predict every cfg.predict_vid_stride-th frame of `capture`, cfg.batch_size frames per call of detect(list of
    RGB frames); write the drawn frames to out_dir/<name>.mp4, and with cfg.predict_save_txt a label file
    out_dir/labels/<name>_<frame>.txt per predicted frame. Returns (results: COCO entries whose image_id is the frame
    number, with file_name (the video's) and frame, frames read, frames predicted)."""
    stride, limit = cfg.predict_vid_stride, cfg.predict_max_frames
    fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    writer, results, pending, read, predicted = None, [], [], 0, 0
    labels_dir = out_dir / "labels" if cfg.predict_save_txt else None
    start = time.perf_counter()

    def flush():
        nonlocal writer, predicted
        batch = list(pending)
        pending.clear()  # taken first: a Ctrl-C inside leaves nothing to predict twice
        if not batch:
            return
        for (number, frame), (boxes, scores, labels) in zip(batch, detect([frame for _, frame in batch])):
            if writer is None:
                writer = open_writer(out_dir / f"{name}.mp4", fps / stride, frame.shape[1], frame.shape[0])
            drawn = np.asarray(draw_detections(frame, boxes, labels, class_names, scores))
            writer.write(np.ascontiguousarray(drawn[..., ::-1]))  # RGB -> OpenCV's BGR
            for entry in coco_results_json([number], [boxes], [scores], [labels]):
                results.append({**entry, "file_name": file_name, "frame": number})
            if labels_dir:
                lines = yolo_label_lines(boxes, scores, labels, frame.shape[1], frame.shape[0], cfg.predict_save_conf)
                labels_dir.mkdir(exist_ok=True)
                (labels_dir / f"{name}_{number}.txt").write_text("".join(line + "\n" for line in lines))
            predicted += 1

    try:
        while not limit or read < limit:
            ok, frame = capture.read()
            if not ok:
                break
            if read % stride == 0:
                pending.append((read, np.ascontiguousarray(frame[..., ::-1])))  # BGR -> RGB, as images are read
            read += 1
            if len(pending) == cfg.batch_size:
                flush()
        flush()
    except KeyboardInterrupt:  # a webcam runs until it is stopped: keep what was read, close the file properly
        logger.info(f"stopped (Ctrl-C) after {read} frames")
        flush()
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    logger.info(f"{predicted} of {read} frames predicted in {seconds:.1f} s: {predicted / max(seconds, 1e-9):.1f} "
                f"frames/s (reading, letterbox, forward, NMS, drawing and writing)")
    return results, read, predicted


def open_writer(path, fps, width, height):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write the video {path} ({FOURCC}, {width}x{height})")
    return writer
