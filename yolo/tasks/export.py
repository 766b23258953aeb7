"""`python main.py --task export`: the checkpoint as an ONNX file, kept only once it is shown to compute what the
checkpoint computes.

    <run folder>/best.onnx for <run folder>/best.pt (a checkpoint outside runs_dir: runs_dir/export/<stem>-<hash of
    its path>/<stem>.onnx); best2.onnx ... when that name holds the export of another checkpoint content or of
    other options (yolo/engine/exports.py), which is never replaced

Checks, in order, each fatal: onnx.checker (a well-formed graph); then ONNX Runtime (CPU) against the *unfused*
PyTorch model of the checkpoint on the first export_check_images validation images of every task, letterboxed
as evaluation does. Every output must satisfy

    max |onnx - torch|  <=  PARITY_TOL * max(1, max |torch|)

The relative term: outputs are float32 sums over hundreds of products, and a different but equally valid order of
those sums (fused weights, ORT's kernels) moves the result by a few float32 ulps *of the largest terms*, so logits
near 20 may move ten times more than logits near 2. Below 1 the bound is absolute.

With export_nms the file's outputs are detections (yolo/models/onnx_nms.py); they must match, one to one, those of
yolo/postprocess.py (multi-label, the file's thresholds) on the unfused model: same class, boxes within
PARITY_TOL * max(1, image side) pixels, scores within SCORE_TOL. A detection without a partner passes only when its
score sits within SCORE_TOL of a cut (conf_thres, or the last score kept in an image cut at max_det), where float
rounding decides the side. With export_dynamic the check images are also run padded to a wider, non-square size.
"""
import glob
import os

import numpy as np
import torch
from loguru import logger

from ..config import task_configs
from ..data.dataset import build_loader, read_records
from ..data.transforms import PAD_FILL
from ..engine.checkpoint import MODEL_FIELDS, default_checkpoint, load_model, tmp_path
from ..engine.exports import export_destination, exported_path, fingerprint
from ..engine.logs import setup_logging
from ..models.fuse import fuse_batchnorm
from ..models.onnx_model import OPSET, OnnxModel, export_onnx, output_names
from ..models.onnx_nms import detection_output_names
from ..postprocess import postprocess, split_detections

PARITY_TOL = 1e-4
SCORE_TOL = 1e-4  # export_nms: |score difference| of two detections paired by the check


class ExportCheckError(ValueError):
    """The exported graph is malformed, or does not reproduce the checkpoint's outputs within tolerance."""


def run(cfg):
    """Export the checkpoint (default_checkpoint), check it, and return (path of the .onnx file, parity rows)."""
    setup_logging()
    ckpt_path = default_checkpoint(cfg)
    if ckpt_path.suffix == ".onnx":
        raise ValueError(f"ckpt_path {ckpt_path} is already an ONNX file; export reads a .pt checkpoint")
    cfg.ckpt_path, cfg.backend, cfg.device = str(ckpt_path), "torch", "cpu"  # ORT runs on the CPU: compare on it
    model, _, ckpt_path = load_model(cfg)
    source, options = fingerprint(ckpt_path), export_options(cfg)
    batches = check_batches(task_configs(cfg), cfg.export_check_images)
    exported = fuse_batchnorm(model, batches[0], task=None) if cfg.export_fuse else model
    if cfg.export_dynamic:  # also checked at a size it was not traced at
        batches.append(wider(batches[0]))
    base = exported_path(ckpt_path, cfg.runs_dir)
    base.parent.mkdir(parents=True, exist_ok=True)
    remove_killed_exports(base)
    tmp = tmp_path(base)  # checked first, then renamed: no unchecked file is left
    try:
        export_onnx(exported, tmp, batches[0][:1], {f: getattr(cfg, f) for f in MODEL_FIELDS}, cfg.task_names,
                    source=source, options=options, nms=options.get("nms"), dynamic=cfg.export_dynamic)
        check_graph(tmp)
        if cfg.export_nms:
            rows = detection_parity(model, OnnxModel(tmp), batches, options["nms"])
            table, failed = detection_table(rows), [r for r in rows if r["unexplained"]]
            why = (f"have detections without a partner in PyTorch's post-processing (same class, boxes within "
                   f"{PARITY_TOL:g} x max(1, image side), scores within {SCORE_TOL:g})")
        else:
            rows = parity(model, OnnxModel(tmp), batches)
            table, failed = parity_table(rows), [r for r in rows if r["max_diff"] > r["bound"]]
            why = f"differ by more than {PARITY_TOL:g} x max(1, max|output|)"
        logger.info(f"ONNX Runtime vs PyTorch on {sum(len(b) for b in batches)} validation images "
                    f"(fused: {cfg.export_fuse})\n{table}")
        if failed:
            raise ExportCheckError(f"{tmp.name} does not reproduce {ckpt_path}: output(s) "
                                   f"{', '.join(r['name'] for r in failed)} {why}:\n{table}")
        out, replaces = export_destination(ckpt_path, cfg.runs_dir, source, options)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    where = ("replacing the earlier export of the same checkpoint content and options; " if replaces else
             f"a new name: {base.name} ... hold exports of another checkpoint content or other options, kept; "
             if out != base else "")
    size = "H, W" if cfg.export_dynamic else f"{cfg.img_size}, {cfg.img_size}"
    names = (detection_output_names(len(cfg.task_names)) if cfg.export_nms
             else output_names(len(cfg.task_names), cfg.strides))
    layout = " (N, 7): image, x1, y1, x2, y2, score, class" if cfg.export_nms else ""
    logger.info(f"wrote {out} ({where}opset {OPSET}, fused: {cfg.export_fuse}, input 'images' (B, 3, {size}) uint8, "
                f"outputs {', '.join(names)}{layout}); evaluate it: python main.py --task val --ckpt_path {out}")
    return out, rows


def export_options(cfg):
    """How a file is made: recorded in it, and an export of other options never replaces it (exports.py). Options
    left at their defaults are not written, so a plain export is recognised as the same export it was before."""
    options = {"fuse": cfg.export_fuse, "opset": OPSET}
    if cfg.export_nms:
        options["nms"] = {"conf_thres": cfg.conf_thres, "nms_iou": cfg.nms_iou, "max_det": cfg.max_det,
                          "pre_nms_topk": cfg.pre_nms_topk, **({"nms_merge": True} if cfg.nms_merge else {})}
    if cfg.export_dynamic:
        options["dynamic"] = True
    return options


def remove_killed_exports(base):
    """Delete the hidden .<name>.tmp<pid> files that exports of this name, killed while writing, left beside it:
    only this name's, and only those whose process no longer runs (an export running now keeps its file)."""
    prefix = tmp_path(base, pid="").name
    for tmp in base.parent.glob(f"{glob.escape(prefix)}*"):
        pid = tmp.name[len(prefix):]
        if pid.isdigit() and not process_running(int(pid)):
            logger.warning(f"removing {tmp}: an export that did not finish (it was killed while writing)")
            tmp.unlink(missing_ok=True)


def process_running(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def check_batches(tasks, per_task):
    """The first `per_task` validation images of every task, letterboxed to img_size as evaluation does:
    one uint8 batch (n, 3, S, S) per task."""
    batches = []
    for task in tasks:
        records = read_records(task, "val", generate=False)[:per_task]
        loader = build_loader(task, records, train=False)
        batches.append(torch.cat([images for images, _, _, _ in loader]))
    return batches


def wider(images, extra=32):
    """The batch with `extra` more columns on the right, of the letterbox's grey: a non-square size."""
    b, _, h, w = images.shape
    out = torch.tensor(PAD_FILL, dtype=torch.uint8).view(1, 3, 1, 1).repeat(b, 1, h, w + extra)
    out[..., :w] = images
    return out


def check_graph(path):
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportCheckError(f"onnx.checker rejects the exported graph: {e}") from None


@torch.no_grad()
def parity(model, onnx_model, batches):
    """One row per output name: max |onnx - torch| over all batches, max |torch|, and the bound it must stay under."""
    rows = {}
    for images in batches:
        expected = [o for task in model(images, task=None) for o in task]
        got = [o for task in onnx_model(images, task=None) for o in task]
        for name, e, g in zip(onnx_model.names, expected, got):
            row = rows.setdefault(name, {"name": name, "max_diff": 0.0, "max_abs": 0.0})
            row["max_diff"] = max(row["max_diff"], float((e.float() - g).abs().max()))
            row["max_abs"] = max(row["max_abs"], float(e.abs().max()))
    for row in rows.values():
        row["bound"] = PARITY_TOL * max(1.0, row["max_abs"])
    return list(rows.values())


def parity_table(rows):
    lines = ["| output | max abs diff | max abs output | bound | ok |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['name']} | {r['max_diff']:.2e} | {r['max_abs']:.2f} | {r['bound']:.2e} | "
              f"{'yes' if r['max_diff'] <= r['bound'] else 'NO'} |" for r in rows]
    return "\n".join(lines)



@torch.no_grad()
def detection_parity(model, onnx_model, batches, nms):
    """export_nms: one row per task output: the graph's detections paired one to one with postprocess's
    (multi-label, the graph's thresholds) on `model` (module docstring): counts of pairs, of unpaired detections at
    a cut and of unexplained ones, and the largest box and score differences of the pairs."""
    rows = []
    for task, name in enumerate(onnx_model.names):
        row = {"name": name, "matched": 0, "at_cut": 0, "unexplained": 0, "max_box_diff": 0.0, "bound": 0.0,
               "max_score_diff": 0.0}
        for images in batches:
            bound = PARITY_TOL * max(1.0, *images.shape[2:])
            row["bound"] = max(row["bound"], bound)
            expected = postprocess(model(images, task=task), model.decoding, nms["conf_thres"], nms["nms_iou"],
                                   nms["max_det"], True, nms["pre_nms_topk"], merge=nms.get("nms_merge", False))
            for e, g in zip(expected, split_detections(onnx_model(images, task=task), len(images))):
                pair_detections(e, g, bound, nms, row)
        rows.append(row)
    return rows


def pair_detections(expected, got, bound, nms, row):
    """Pair one image's expected detections, best first, each with the closest free detection of `got` of its class
    within the bounds; add the counts and differences to `row`."""
    (e_boxes, e_scores, e_labels), (g_boxes, g_scores, g_labels) = [[t.numpy() for t in d] for d in (expected, got)]
    free, unpaired = np.ones(len(g_scores), bool), []
    for box, score, label in zip(e_boxes, e_scores, e_labels):
        box_diff = np.abs(g_boxes - box).max(1) if len(g_boxes) else np.zeros(0)
        score_diff = np.abs(g_scores - score)
        fits = free & (g_labels == label) & (box_diff <= bound) & (score_diff <= SCORE_TOL)
        if not fits.any():
            unpaired.append(score)
            continue
        best = np.flatnonzero(fits)[np.argmin(box_diff[fits])]
        free[best] = False
        row["matched"] += 1
        row["max_box_diff"] = max(row["max_box_diff"], float(box_diff[best]))
        row["max_score_diff"] = max(row["max_score_diff"], float(score_diff[best]))
    # a cut: the threshold, and the last score kept in an image that reached max_det on either side
    cuts = [nms["conf_thres"]] + [float(s.min()) for s in (e_scores, g_scores) if len(s) >= nms["max_det"]]
    for score in unpaired + g_scores[free].tolist():
        at_cut = any(abs(score - cut) <= SCORE_TOL for cut in cuts)
        row["at_cut" if at_cut else "unexplained"] += 1


def detection_table(rows):
    lines = ["| output | pairs | unpaired at a cut | unexplained | max box diff (px) | bound | max score diff | ok |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['name']} | {r['matched']} | {r['at_cut']} | {r['unexplained']} | {r['max_box_diff']:.2e} | "
              f"{r['bound']:.2e} | {r['max_score_diff']:.2e} | {'yes' if not r['unexplained'] else 'NO'} |"
              for r in rows]
    return "\n".join(lines)
