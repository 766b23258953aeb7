"""Run a model over a loader, map detections back to original images, and score them with the COCO tools.

Under DDP each process predicts the images its loader's sampler gives it (yolo.engine.distributed.ShardSampler),
the detections are gathered on rank 0 and scored there once, on the whole set: the same numbers as a single
process evaluating the same weights.
"""
import numpy as np
import torch
from loguru import logger

from ..data.transforms import boxes_to_original
from ..metrics import evaluate_detections
from ..postprocess import postprocess, split_detections
from .distributed import gather_detections, is_main_process, unwrap
from .logs import progress


@torch.no_grad()
def predict_loader(model, loader, cfg, device, show_progress=True, multi_label=False, task=0):
    """Detections of task `task`'s head for every image of the loader's dataset, in original-image pixels:
    index -> (boxes, scores, labels).

    multi_label=True keeps every class above conf_thres for a box (for mAP); False only its best class (to draw).
    A model with its post-processing inside (an ONNX export with export_nms) returns detections itself: every class
    above its own threshold, whatever multi_label says; conf_thres filters them further."""
    model.eval()
    records = loader.dataset.records
    detections = {}
    decoding = unwrap(model).decoding
    capped = []  # (candidates, best score cut) of the images where the pre_nms_topk cut may have mattered
    end_to_end = getattr(unwrap(model), "nms", None)
    if end_to_end and cfg.nms_merge != end_to_end.get("nms_merge", False):
        logger.warning(f"nms_merge {cfg.nms_merge} has no effect on {unwrap(model).path}: its NMS, inside the graph, "
                       f"was exported with nms_merge {end_to_end.get('nms_merge', False)}")
    if end_to_end and cfg.conf_thres < end_to_end["conf_thres"]:
        logger.warning(f"conf_thres {cfg.conf_thres:g} is below the score threshold {end_to_end['conf_thres']:g} "
                       f"inside {unwrap(model).path} (fixed at export): detections between are not in its output")
    bar = progress(loader, show=show_progress and is_main_process(), desc="eval", leave=False)
    for images, _, indices, _ in bar:
        outputs = model(images.to(device, non_blocking=True), task=task)
        if end_to_end:
            results = split_detections(outputs, images.shape[0], cfg.conf_thres)
        else:
            results = postprocess(outputs, decoding, cfg.conf_thres, cfg.nms_iou, cfg.max_det, multi_label,
                                  cfg.pre_nms_topk, capped, cfg.nms_merge)
        for index, (boxes, scores, labels) in zip(indices, results):
            rec = records[index]
            boxes = boxes_to_original(boxes.cpu().numpy(), rec.width, rec.height, images.shape[-1])
            detections[index] = (boxes, scores.cpu().numpy(), labels.cpu().numpy())
    # the cut matters only where it dropped a candidate predict would draw (score >= predict_conf): below that, on
    # the default run at 256 px, it moved mAP@0.5:0.95 by 1e-4 and mAP@0.5 not at all (docs/data.md)
    harmful = [count for count, best_cut in capped if best_cut >= cfg.predict_conf]
    if harmful:
        logger.warning(f"{len(harmful)} of {len(records)} images had more than pre_nms_topk = {cfg.pre_nms_topk} "
                       f"candidates above conf_thres (up to {max(harmful)}), and the cut dropped some scoring "
                       f"predict_conf = {cfg.predict_conf:g} or more: raise --pre_nms_topk if images hold that many "
                       f"objects")
    return detections


def evaluate(model, loader, cfg, device, show_progress=True, task=0):
    """COCO metrics of `model` on the loader's records. Returns (EvalResult, detections); under DDP only rank 0
    gets them, the other ranks get (None, None)."""
    # every class above the threshold per box, as YOLOv5's validation: an uncertain box still counts for its class
    detections = gather_detections(predict_loader(model, loader, cfg, device, show_progress, True, task))
    if detections is None:
        return None, None
    records = loader.dataset.records
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    dets = [detections.get(i, empty) for i in range(len(records))]
    result = evaluate_detections(
        [r.boxes for r in records], [r.labels for r in records], [r.difficult for r in records],
        [(r.width, r.height) for r in records],
        [d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets], list(cfg.class_names), cfg.eval_backend)
    return result, detections


def evaluate_tasks(model, loaders, task_cfgs, device, show_progress=True):
    """Evaluate every task on its own val loader with its own head. Returns (results, detections, scores, table):
    lists with one EvalResult / detections dict per task; scores = {"map50", "map"} (the means over the tasks) and,
    with several tasks, map50_<name> and map_<name>; table = markdown of mAP per task and the mean.
    Under DDP the other ranks get (None, None, None, None)."""
    results, detections = [], []
    for task, (loader, task_cfg) in enumerate(zip(loaders, task_cfgs)):
        result, dets = evaluate(model, loader, task_cfg, device, show_progress, task)
        results.append(result)
        detections.append(dets)
    if results[0] is None:
        return None, None, None, None
    scores = {"map50": float(np.mean([r.map50 for r in results])), "map": float(np.mean([r.map for r in results]))}
    lines = ["| task | images | mAP@0.5 | mAP@0.5:0.95 |", "|---|---:|---:|---:|"]
    for loader, task_cfg, result in zip(loaders, task_cfgs, results):
        if len(results) > 1:
            scores.update({f"map50_{task_cfg.task_name}": result.map50, f"map_{task_cfg.task_name}": result.map})
        lines.append(f"| {task_cfg.task_name} | {len(loader.dataset)} | {result.map50:.4f} | {result.map:.4f} |")
    lines.append(f"| mean | | {scores['map50']:.4f} | {scores['map']:.4f} |")
    return results, detections, scores, "\n".join(lines)
