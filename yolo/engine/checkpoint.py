"""Checkpoints: plain dicts of tensors and Python primitives, so `torch.load(..., weights_only=True)` reads them.

Writes are atomic: the file is written beside its destination and renamed over it, so a crash mid-write
leaves the previous checkpoint intact (a rename within one folder is atomic on POSIX and Windows).

A training checkpoint (last.pt / best.pt) holds:
    model         weights to predict with: the EMA when config `ema` is on, else the trained weights
    train_model   the trained (non-averaged) weights, only when `ema` is on
    ema_updates   how many updates the EMA has seen (its decay warm-up depends on it)
    optimizer, scaler, scheduler   their state_dicts;   epoch   epochs completed
    rng           python / numpy / torch (/ cuda) generator states and the loss's generator
    config        the run's config as a dict;   best_fitness, evals_without_improvement, elapsed_s
    map50, map    (best.pt) the scores of this checkpoint
    mlflow_run_id the run's MLflow run, when config mlflow_uri is set (a resumed run continues it)
    format        CHECKPOINT_FORMAT, the version of this layout (every checkpoint the project writes has it)
"""
import os
import random
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from ..config import DERIVED, BaseConfig, config_from_dict
from ..models.detector import build_model
from .distributed import broadcast_object, select_device, unwrap
from .exports import export_of
from .folders import numbered_dirs
from .model_files import (CHECKPOINT_FORMAT, checkpoint_config, load_checkpoint,  # noqa: F401 (re-exported)
                          load_model_checkpoint, load_weights)

# what a checkpoint decides about its model; everything else (thresholds, data paths, ...) comes from the config.
# Of `tasks` only the names and classes (the heads): each task's data fields come from the command (model_tasks)
MODEL_FIELDS = ("backbone", "width", "neck_activation", "class_names", "anchors", "label_assignment", "img_size",
                "tasks", "branching", "head", "genotype", "head_channels", "cell_channels", "box_bins", "decode_reach")

# a resumed run takes these from the current config; every other field (num_workers too: it changes the
# augmentation streams) comes from the checkpoint, so the run continues exactly as it started. runs_dir is where
# this command may write: a checkpoint outside it continues in a new run folder there (setup.py resume_run_dir)
RESUME_OVERRIDES = ("device", "dist_backend", "task", "resume", "resume_path", "runs_dir")

TMP_PREFIX = "."  # checkpoints are written to .<name>.tmp<pid> and renamed over <name>


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder ...); the previous one is still intact."""


def tmp_path(path, pid=None):
    """The hidden file a write of `path` goes to before it is renamed over it: .<name>.tmp<pid>, pid that of this
    process unless given (the pid lets a later run tell a killed writer's file from a running one's)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{path.name}.tmp{os.getpid() if pid is None else pid}")


def save_checkpoint(state, path):
    """Write `state` atomically; a checkpoint (a dict holding "model") is stamped with CHECKPOINT_FORMAT unless it
    states its own."""
    path = Path(path)
    if isinstance(state, dict) and "model" in state:
        state = {"format": CHECKPOINT_FORMAT, **state}
    tmp = tmp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: after a power cut the name holds a whole file
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError from its zip writer
        tmp.unlink(missing_ok=True)
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {e}. Free disk space or make the folder "
                                   f"writable, then continue with --resume true (the last good checkpoint is kept)"
                                   ) from None


def remove_partial_writes(run_dir):
    """Delete the half-written checkpoint (or exported) files a killed run left in its run folder (never the files
    themselves: only the hidden .<name>.tmp<pid> ones save_checkpoint and the export write first)."""
    for tmp in Path(run_dir).glob(f"{TMP_PREFIX}*.tmp*"):
        logger.warning(f"removing {tmp}: a checkpoint write that did not finish (the run was killed while saving)")
        tmp.unlink()


def newest_checkpoint(runs_dir, name="best.pt"):
    """The `name` file of the most recently modified run under runs_dir, or None."""
    found = sorted(Path(runs_dir).glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def newest_own_checkpoint(cfg, name):
    """The `name` file (best.pt, last.pt) of the newest run named run_name: runs_dir/run_name, run_name2, ...
    run_name10 (folders.numbered_dirs), the highest number holding one; None when none does."""
    own = [run / name for run in numbered_dirs(Path(cfg.runs_dir) / cfg.run_name) if (run / name).is_file()]
    return own[-1] if own else None


def default_checkpoint(cfg):
    """The checkpoint val / predict / export use without --ckpt_path: best.pt of the newest run named run_name
    (newest_own_checkpoint), else best.pt of the most recently modified run. The choice is logged, since a silent
    guess could evaluate the wrong model."""
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    own = newest_own_checkpoint(cfg, "best.pt")
    path = own or newest_checkpoint(cfg.runs_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint given (--ckpt_path) and no {cfg.runs_dir}/*/best.pt found; "
                                f"train first: python main.py --task train")
    which = f"the newest run named {cfg.run_name}" if own else f"the newest run: none is named {cfg.run_name}"
    logger.info(f"no --ckpt_path: using {path} ({which})")
    return path


def output_folder(ckpt_path, runs_dir, name):
    """Where a command writes what it makes from a checkpoint: <run folder>/<name> for a checkpoint inside runs_dir,
    else runs_dir/<name>/<checkpoint file stem> (never beside a file of the user's). Only the path: val, predict and
    peel write to its next free name (yolo/engine/folders.py), so a second result never replaces the first."""
    ckpt_path, runs_dir = Path(ckpt_path).resolve(), Path(runs_dir).resolve()
    if runs_dir in ckpt_path.parents:
        return ckpt_path.parent / name
    return runs_dir / name / ckpt_path.stem


def load_model(cfg):
    """The model of cfg.ckpt_path (else default_checkpoint), in eval mode on cfg.device.
    The checkpoint's MODEL_FIELDS override cfg's (in place), so data and thresholds come from cfg and the model
    from the file. Returns (model, device, checkpoint path). An .onnx file (or config backend onnxruntime) gives
    an OnnxModel instead, on the CPU: see load_onnx_model."""
    path = default_checkpoint(cfg)
    if cfg.backend == "onnxruntime" or path.suffix == ".onnx":
        return load_onnx_model(cfg, path)
    ckpt = load_model_checkpoint(path)
    saved, given_tasks = checkpoint_config(ckpt, path), cfg.tasks
    for field in MODEL_FIELDS:
        setattr(cfg, field, getattr(saved, field))
    cfg.tasks = model_tasks(saved.tasks, saved.class_names, given_tasks, path)
    cfg.finalize()
    device = select_device(cfg.device)
    model = build_model(cfg)
    load_weights(model, ckpt["model"], path)
    logger.info(f"loaded {path} (epoch {ckpt.get('epoch')}, saved mAP@0.5 {ckpt.get('map50', float('nan')):.4f})")
    return model.to(device).eval(), device, Path(path)


def model_tasks(saved_tasks, saved_classes, given_tasks, path):
    """The `tasks` to run the model of file `path` on: each task's name and classes from the file (its heads), every
    data field from the command's `tasks` when that lists the same names, else the file's own (where the model was
    trained; read only: val, predict and export never generate data). None for a single-task model."""
    if not saved_tasks:
        if given_tasks:
            logger.warning(f"config field 'tasks' is not used: {path} is a single-task model; it runs on the data of "
                           f"the config's own data fields (data_root, dataset ...)")
        return None
    names = [t["name"] for t in saved_tasks]
    if not given_tasks:
        logger.info(f"tasks {names}: their data as stored in {path} (give --tasks or a multi-task --config to "
                    f"evaluate other data)")
        return saved_tasks
    given_names = [t.get("name") for t in given_tasks]
    if given_names != names:
        raise ValueError(f"config field 'tasks' names the tasks {given_names}, but {path} holds a model of the tasks "
                         f"{names}: give the data of those tasks in that order, or leave 'tasks' out to read the data "
                         f"stored in the checkpoint")
    tasks = []
    for own, given in zip(saved_tasks, given_tasks):
        classes = list(own.get("class_names", saved_classes))
        if given.get("class_names", classes) != classes:
            logger.warning(f"task {own['name']}: the model of {path} predicts the classes {classes}, not "
                           f"{given['class_names']} as config field 'tasks' says; using the model's")
        tasks.append({**given, "class_names": classes})
    return tasks


def load_onnx_model(cfg, path):
    """(OnnxModel, cpu, path) for an exported file: `path` itself when it ends in .onnx, else the export of that
    checkpoint which records its content as it is now (exports.export_of: <run>/best.onnx for <run>/best.pt, or a
    later best2.onnx ...; refused when there is none). Its metadata's MODEL_FIELDS override cfg's, as a
    checkpoint's do."""
    from ..models.onnx_model import OnnxModel

    if path.suffix == ".onnx" and not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    onnx_path = path if path.suffix == ".onnx" else export_of(path, cfg.runs_dir)
    if cfg.backend != "onnxruntime":
        logger.info(f"{onnx_path} is an ONNX file: running it with ONNX Runtime (backend onnxruntime)")
    cfg.backend = "onnxruntime"
    model, given_tasks = OnnxModel(onnx_path), cfg.tasks
    defaults = BaseConfig()
    for field in MODEL_FIELDS:  # a field newer than the file: its model had the field's default (e.g. no box bins)
        setattr(cfg, field, model.config.get(field, getattr(defaults, field)))
    cfg.tasks = model_tasks(cfg.tasks, cfg.class_names, given_tasks, onnx_path)  # data from the command, as for a .pt
    cfg.finalize()
    source = model.meta["source"] if isinstance(model.meta["source"], dict) else {}
    logger.info(f"loaded {onnx_path} (ONNX Runtime, CPU; exported from {source.get('checkpoint', 'unknown')}, "
                f"sha256 {source.get('sha256', 'unknown')})")
    if model.end_to_end:
        nms = model.nms
        logger.info(f"{onnx_path.name} decodes and runs NMS inside (fixed at export: score > {nms['conf_thres']:g}, "
                    f"IoU {nms['nms_iou']:g}, max_det {nms['max_det']}, pre_nms_topk {nms['pre_nms_topk']}, "
                    f"nms_merge {nms.get('nms_merge', False)}; every "
                    f"class above the threshold per box); config nms_iou, max_det and pre_nms_topk are not used")
    return model.eval(), torch.device("cpu"), onnx_path


def resume_checkpoint_path(cfg):
    """cfg.resume_path (it must exist), else last.pt of the newest run named run_name (newest_own_checkpoint: the
    run a killed training of that name left, as val and predict pick its best.pt), logged."""
    if cfg.resume_path:
        path = Path(cfg.resume_path)
        if not path.is_file():
            raise FileNotFoundError(f"resume=True but checkpoint {path} does not exist; set resume_path to the "
                                    f"last.pt of the run to continue")
        return path
    path = newest_own_checkpoint(cfg, "last.pt")
    if path is None:
        base = Path(cfg.runs_dir) / cfg.run_name
        raise FileNotFoundError(f"resume=True but no run named {cfg.run_name} holds a last.pt ({base}/last.pt, "
                                f"{base}2/last.pt ...); set resume_path to the last.pt of the run to continue")
    logger.info(f"resume: no --resume_path: using {path} (the newest run named {cfg.run_name})")
    return path


def load_resume_checkpoint(cfg, info):
    """(path, checkpoint) to resume from. Rank 0 reads it and hands it to the other processes: on several machines
    only rank 0's holds the run folder. Errors are handed over too, so no process waits forever."""
    if info.is_main:
        try:
            path = resume_checkpoint_path(cfg)
            payload = path, load_model_checkpoint(path, ("model", "config", "optimizer", "epoch"))
        except (FileNotFoundError, ValueError) as e:
            payload = e
    payload = broadcast_object(payload if info.is_main else None, info)
    if isinstance(payload, Exception):
        raise payload
    return payload


# ------------------------------------------------------------------------------------------------- RNG states
def rng_state(loss_generators=()):
    """Every random generator training draws from, in types the weights_only unpickler accepts: numpy's state
    (which holds an ndarray) is stored as a tensor plus ints."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),  # (version, tuple of 625 ints, None or float)
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        # this process's GPU only: get_rng_state_all() would open a context on every visible GPU from every rank
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "loss": [g.get_state() for g in loss_generators],  # one per task
    }


def set_rng_state(state, loss_generators=()):
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    for generator, generator_state in zip(loss_generators, state["loss"]):
        generator.set_state(generator_state)


# ------------------------------------------------------------------------------------------------- resume
def checkpoint_state(t, cfg, elapsed_s):
    """Everything a resumed run needs (the layout is in the module docstring)."""
    state = {"model": t.eval_model().state_dict(), "optimizer": t.optimizer.state_dict(),
             "scaler": t.scaler.state_dict(), "scheduler": t.scheduler.state_dict(), "epoch": t.epoch,
             "rng": rng_state([f.generator for f in t.loss_fns]), "config": cfg.to_dict(), "best_fitness": t.best_fitness,
             "evals_without_improvement": t.evals_without_improvement, "elapsed_s": elapsed_s}
    if t.ema is not None:
        state.update(train_model=unwrap(t.model).state_dict(), ema_updates=t.ema.updates)
    return state


def model_differences(cfg, saved_cfg):
    """'field: checkpoint value (config value)' for each MODEL_FIELDS entry on which the two configs differ."""
    return [f"{k}: {getattr(saved_cfg, k)!r} (the config asks for {getattr(cfg, k)!r})" for k in MODEL_FIELDS
            if getattr(saved_cfg, k) != getattr(cfg, k)]


def restore_training(t, ckpt, path="the checkpoint"):
    load_weights(unwrap(t.model), ckpt.get("train_model", ckpt["model"]), path)
    if t.ema is not None:
        load_weights(t.ema.module, ckpt["model"], path)
        t.ema.updates = ckpt.get("ema_updates", 0)
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:  # empty when saved by a disabled scaler
        t.scaler.load_state_dict(ckpt["scaler"])
    t.epoch, t.best_fitness = ckpt["epoch"], ckpt["best_fitness"]
    t.evals_without_improvement = ckpt["evals_without_improvement"]
    set_rng_state(ckpt["rng"], [f.generator for f in t.loss_fns])  # last: building the model above drew from the generators


def resumed_config(cfg, ckpt):
    """The checkpoint's config, except the fields of RESUME_OVERRIDES, which come from `cfg`.
    Returns (config, names of the fields whose value in `cfg` is ignored)."""
    saved = config_from_dict(ckpt["config"], warn=False)  # load_model_checkpoint warned of unknown keys
    ignored = [k for k, v in cfg.to_dict().items()
               if k not in RESUME_OVERRIDES and k not in DERIVED and getattr(saved, k, None) != v]
    for name in RESUME_OVERRIDES:
        setattr(saved, name, getattr(cfg, name))
    return saved.finalize(), ignored
