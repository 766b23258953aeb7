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
"""
import glob
import os

import torch
from loguru import logger

from ..config import task_configs
from ..data.dataset import build_loader, read_records
from ..engine.checkpoint import MODEL_FIELDS, default_checkpoint, load_model
from ..engine.exports import export_destination, exported_path, fingerprint
from ..engine.logs import setup_logging
from ..models.fuse import fuse_batchnorm
from ..models.onnx_model import OPSET, OnnxModel, export_onnx, output_names

PARITY_TOL = 1e-4


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
    source, options = fingerprint(ckpt_path), {"fuse": cfg.export_fuse, "opset": OPSET}
    batches = check_batches(task_configs(cfg), cfg.export_check_images)
    exported = fuse_batchnorm(model, batches[0], task=None) if cfg.export_fuse else model
    base = exported_path(ckpt_path, cfg.runs_dir)
    base.parent.mkdir(parents=True, exist_ok=True)
    remove_killed_exports(base)
    tmp = base.with_name(f".{base.name}.tmp{os.getpid()}")  # checked first, then renamed: no unchecked file is left
    try:
        export_onnx(exported, tmp, batches[0][:1], {f: getattr(cfg, f) for f in MODEL_FIELDS}, cfg.task_names,
                    source=source, options=options)
        check_graph(tmp)
        rows = parity(model, OnnxModel(tmp), batches)
        logger.info(f"ONNX Runtime vs PyTorch on {sum(len(b) for b in batches)} validation images "
                    f"(fused: {cfg.export_fuse})\n{parity_table(rows)}")
        failed = [r for r in rows if r["max_diff"] > r["bound"]]
        if failed:
            raise ExportCheckError(f"{tmp.name} does not reproduce {ckpt_path}: output(s) "
                                    f"{', '.join(r['name'] for r in failed)} differ by more than {PARITY_TOL:g} x "
                                    f"max(1, max|output|):\n{parity_table(rows)}")
        out, replaces = export_destination(ckpt_path, cfg.runs_dir, source, options)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    where = ("replacing the earlier export of the same checkpoint content and options; " if replaces else
             f"a new name: {base.name} ... hold exports of another checkpoint content or other options, kept; "
             if out != base else "")
    logger.info(f"wrote {out} ({where}opset {OPSET}, fused: {cfg.export_fuse}, input 'images' (B, 3, {cfg.img_size}, "
                f"{cfg.img_size}) uint8, outputs {', '.join(output_names(len(cfg.task_names), cfg.strides))}); "
                f"evaluate it: python main.py --task val --ckpt_path {out}")
    return out, rows


def remove_killed_exports(base):
    """Delete the hidden .<name>.tmp<pid> files that exports of this name, killed while writing, left beside it:
    only this name's, and only those whose process no longer runs (an export running now keeps its file)."""
    for tmp in base.parent.glob(f".{glob.escape(base.name)}.tmp*"):
        pid = tmp.name[len(f".{base.name}.tmp"):]
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

