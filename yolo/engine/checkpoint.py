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
"""
import os
import random
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from ..config import DERIVED, config_from_dict
from ..models.detector import build_model
from .distributed import broadcast_object, select_device, unwrap

# what a checkpoint decides about its model; everything else (thresholds, data paths, ...) comes from the config
MODEL_FIELDS = ("backbone", "width", "neck_activation", "class_names", "anchors", "label_assignment", "img_size",
                "tasks", "branching", "head", "genotype", "head_channels", "cell_channels")

# a resumed run takes these from the current config; every other field (num_workers too: it changes the
# augmentation streams) comes from the checkpoint, so the run continues exactly as it started
RESUME_OVERRIDES = ("device", "dist_backend", "task", "resume", "resume_path")

TMP_PREFIX = "."  # checkpoints are written to .<name>.tmp<pid> and renamed over <name>


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder ...); the previous one is still intact."""


def save_checkpoint(state, path):
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.tmp{os.getpid()}")
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


def load_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a checkpoint, unsafe pickle ...
        raise ValueError(f"cannot load checkpoint {path}: {e}") from e


def load_model_checkpoint(path, needs=("model", "config")):
    """load_checkpoint of a file that must be one of this project's checkpoints: a dict holding `needs`. Anything
    else (a plain state dict, alphas.pt, another project's file) is a ValueError naming the file."""
    ckpt = load_checkpoint(path)
    missing = [key for key in needs if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a checkpoint of this project that can be used here: it has no "
                         f"{', '.join(repr(k) for k in missing)} (it holds {found})")
    return ckpt


def newest_checkpoint(runs_dir, name="best.pt"):
    """The `name` file of the most recently modified run under runs_dir, or None."""
    found = sorted(Path(runs_dir).glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def default_checkpoint(cfg):
    """The checkpoint val / predict / export use without --ckpt_path: runs_dir/run_name/best.pt when it exists,
    else best.pt of the newest run. The choice is logged, since a silent guess could evaluate the wrong model."""
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    own = Path(cfg.runs_dir) / cfg.run_name / "best.pt"
    path = own if own.is_file() else newest_checkpoint(cfg.runs_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint given (--ckpt_path) and no {cfg.runs_dir}/*/best.pt found; "
                                f"train first: python main.py --task train")
    logger.info(f"no --ckpt_path: using {path} ({'the run ' + cfg.run_name if path == own else 'the newest run'})")
    return path


def output_folder(ckpt_path, runs_dir, name):
    """Where a command writes what it makes from a checkpoint: <run folder>/<name> for a checkpoint inside runs_dir,
    else runs_dir/<name>/<checkpoint file stem> (never beside a file of the user's)."""
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
    saved = config_from_dict(ckpt["config"])
    for field in MODEL_FIELDS:
        setattr(cfg, field, getattr(saved, field))
    cfg.finalize()
    device = select_device(cfg.device)
    model = build_model(cfg)
    load_weights(model, ckpt["model"], path)
    logger.info(f"loaded {path} (epoch {ckpt.get('epoch')}, saved mAP@0.5 {ckpt.get('map50', float('nan')):.4f})")
    return model.to(device).eval(), device, Path(path)


def load_onnx_model(cfg, path):
    """(OnnxModel, cpu, path) for an exported file: `path` itself when it ends in .onnx, else the .onnx beside the
    checkpoint (what --task export wrote: <run>/best.onnx for <run>/best.pt). Its metadata's MODEL_FIELDS override
    cfg's, as a checkpoint's do."""
    from ..models.onnx_model import OnnxModel

    onnx_path = path if path.suffix == ".onnx" else exported_path(path, cfg.runs_dir)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"backend onnxruntime needs an exported model: {onnx_path} does not exist; "
                                f"export it first: python main.py --task export --ckpt_path {path}")
    if cfg.backend != "onnxruntime":
        logger.info(f"{onnx_path} is an ONNX file: running it with ONNX Runtime (backend onnxruntime)")
    cfg.backend = "onnxruntime"
    model = OnnxModel(onnx_path)
    for field in MODEL_FIELDS:  # a field newer than the file: the graph holds the model, the config's value is kept
        setattr(cfg, field, model.config.get(field, getattr(cfg, field)))
    cfg.finalize()
    logger.info(f"loaded {onnx_path} (ONNX Runtime, CPU; exported from {model.meta['source'] or 'unknown'})")
    return model.eval(), torch.device("cpu"), onnx_path


def exported_path(ckpt_path, runs_dir):
    """Where --task export writes the .onnx of a checkpoint: beside it (<run>/best.onnx) inside runs_dir, else
    runs_dir/export/<stem>/<stem>.onnx (never beside a file of the user's)."""
    ckpt_path = Path(ckpt_path).resolve()
    if Path(runs_dir).resolve() in ckpt_path.parents:
        return ckpt_path.with_suffix(".onnx")
    return output_folder(ckpt_path, runs_dir, "export") / f"{ckpt_path.stem}.onnx"


def resume_checkpoint_path(cfg):
    """cfg.resume_path, else runs_dir/run_name/last.pt; it must exist."""
    path = Path(cfg.resume_path) if cfg.resume_path else Path(cfg.runs_dir) / cfg.run_name / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"resume=True but checkpoint {path} does not exist; set resume_path to the last.pt "
                                f"of the run to continue")
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


def load_weights(model, state, path):
    """load_state_dict, with shapes or names that do not fit reported as one line naming the checkpoint."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # a checkpoint of an older version of the model code, or an edited config
        lines = str(e).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(e)
        raise ValueError(f"checkpoint {path} does not fit the model its config describes ({first}); "
                         f"it was probably saved by another version of this code: retrain it") from None


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
    saved = config_from_dict(ckpt["config"])
    ignored = [k for k, v in cfg.to_dict().items()
               if k not in RESUME_OVERRIDES and k not in DERIVED and getattr(saved, k, None) != v]
    for name in RESUME_OVERRIDES:
        setattr(saved, name, getattr(cfg, name))
    return saved.finalize(), ignored
