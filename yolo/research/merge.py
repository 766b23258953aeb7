"""Checkpoints between single-task and multi-task models: read T single-task checkpoints for the tasks of a config
(--task rsa, --task merge), merge them into one multi-task checkpoint, peel one task out of a multi-task one.
The tensor mapping itself is yolo/models/merge.py."""
import copy
from pathlib import Path

from loguru import logger

from ..branching import neck_groups
from ..config import task_configs
from ..config_checks import path_list
from ..models.detector import build_model
from ..models.merge import merge_states, peel_state
from ..engine.checkpoint import (CheckpointWriteError, checkpoint_config, load_model_checkpoint,
                               load_weights, output_folder, save_checkpoint)
from ..engine.folders import next_free_path

# what every single-task model of one multi-task model must agree on (the heads may differ in classes)
SHARED_MODEL_FIELDS = ("backbone", "width", "img_size", "anchors", "label_assignment", "head", "genotype",
                       "head_channels", "cell_channels", "box_bins", "decode_reach")


def load_single_task_checkpoints(cfg, field, may_differ=()):
    """The checkpoints of config field `field` (one per task of cfg, in task order), checked: single-task, trained
    on the task's classes, and all of one architecture (SHARED_MODEL_FIELDS but those in may_differ).
    Returns (list of (saved config, state dict), paths)."""
    paths = path_list(getattr(cfg, field), field)
    tasks = task_configs(cfg)
    if len(tasks) < 2 or len(paths) != len(tasks):
        raise ValueError(f"config field '{field}' names {len(paths)} checkpoint(s) for {len(tasks)} task(s) "
                         f"{list(cfg.task_names)}: it needs a multi-task config (--config configs/multitask_shapes.py) "
                         f"and one single-task checkpoint per task, in the order of `tasks` (--{field} a.pt,b.pt)")
    loaded = []
    for path, task in zip(paths, tasks):
        ckpt = load_model_checkpoint(path)
        saved = checkpoint_config(ckpt, path)
        if saved.tasks:
            raise ValueError(f"config field '{field}': {path} is a multi-task checkpoint (tasks {list(saved.task_names)});"
                             f" give single-task ones (--task peel --peel_task NAME makes one)")
        if list(saved.class_names) != list(task.class_names):
            raise ValueError(f"config field '{field}': {path} was trained on classes {list(saved.class_names)}, but "
                             f"task {task.task_name!r} has {list(task.class_names)}; give the checkpoints in the order "
                             f"of `tasks`")
        loaded.append((saved, ckpt["model"]))
    for (saved, _), path in zip(loaded[1:], paths[1:]):
        for name in SHARED_MODEL_FIELDS:
            if name in may_differ or getattr(saved, name) == getattr(loaded[0][0], name):
                continue
            if name == "anchors":  # refit per dataset by training (auto_anchor_bpr): say how to train them alike
                raise ValueError(f"config field '{field}': {path} has anchors {saved.anchors!r} but {paths[0]} has "
                                 f"{loaded[0][0].anchors!r} (training refits anchors to each dataset); one model needs "
                                 f"one set: train {path}'s task again with --anchors \"{loaded[0][0].anchors!r}\" "
                                 f"--auto_anchor_bpr 0 (those anchors, not refit), or train every model with "
                                 f"--auto_anchor_bpr 0 (the config's anchors)")
            raise ValueError(f"config field '{field}': {path} has {name} = {getattr(saved, name)!r} but {paths[0]} "
                             f"has {getattr(loaded[0][0], name)!r}; the models of one comparison or merge must "
                             f"share {', '.join(f for f in SHARED_MODEL_FIELDS if f not in may_differ)}")
    return loaded, paths


def adopt_model_fields(cfg, saved):
    """cfg with the architecture of the checkpoints (SHARED_MODEL_FIELDS of `saved`), its tasks and branching kept;
    each field that changes is logged."""
    cfg = copy.copy(cfg)
    for name in SHARED_MODEL_FIELDS:
        if getattr(cfg, name) != getattr(saved, name):
            logger.info(f"{name} = {getattr(saved, name)!r} from the checkpoints (the config had {getattr(cfg, name)!r})")
            setattr(cfg, name, getattr(saved, name))
    return cfg.finalize()


def single_task_models(cfg, field):
    """(models in eval mode, the config of their architecture with cfg's tasks) for --task rsa. The models may have
    different anchors (refit to each task's data) and decodings (box_bins, decode_reach): RSA compares neck features,
    which do not depend on them; each model is built with its own."""
    loaded, paths = load_single_task_checkpoints(cfg, field, may_differ=("anchors", "box_bins", "decode_reach"))
    models = []
    for (saved, state), path in zip(loaded, paths):
        model = build_model(saved)
        load_weights(model, state, path)
        models.append(model.eval())
    return models, adopt_model_fields(cfg, loaded[0][0])


def merge_checkpoints(cfg):
    """One multi-task checkpoint for cfg's tasks and branching from cfg.merge_ckpts, written to
    runs_dir/merge/<run_name>.pt (then <run_name>2.pt ...: save_as_new). Returns its path."""
    loaded, paths = load_single_task_checkpoints(cfg, "merge_ckpts")
    merged_cfg = adopt_model_fields(cfg, loaded[0][0])
    groups = neck_groups(merged_cfg.branching, len(loaded))
    state = merge_states([s for _, s in loaded], groups, cfg.merge_average)
    model = build_model(merged_cfg)
    load_weights(model, state, "the merged checkpoint")  # every tensor has its place and shape
    out = save_as_new({"model": model.state_dict(), "config": merged_cfg.to_dict(), "epoch": 0,
                       "merged_from": [str(p) for p in paths]},
                      Path(cfg.runs_dir) / "merge" / f"{cfg.run_name}.pt")
    shared = "the mean of the tasks sharing them" if cfg.merge_average else "the first task sharing them"
    logger.info(f"merged {len(paths)} single-task checkpoints for branching {merged_cfg.branching} (shared layers: "
                f"{shared}) -> {out}\nfine-tune it: python main.py --config <this config> --task train "
                f"--init_ckpt {out}")
    return out


def peel_checkpoint(path, task_name, runs_dir):
    """The single-task checkpoint of task `task_name` out of the multi-task checkpoint `path`; written to
    <run folder>/peel/<task>.pt (output_folder; then <task>2.pt ...: save_as_new). Returns its path."""
    ckpt = load_model_checkpoint(path)
    saved = checkpoint_config(ckpt, path)
    if task_name not in saved.task_names or not saved.tasks:
        raise ValueError(f"config field 'peel_task' = {task_name!r}: {path} has the task(s) {list(saved.task_names)}; "
                         f"peel takes one task of a multi-task checkpoint")
    task = list(saved.task_names).index(task_name)
    state = peel_state(ckpt["model"], neck_groups(saved.branching, len(saved.task_names)), task)
    task_cfg = task_configs(saved)[task]
    model = build_model(task_cfg)
    load_weights(model, state, f"task {task_name} of {path}")
    out = save_as_new({"model": model.state_dict(), "config": task_cfg.to_dict(), "epoch": ckpt.get("epoch"),
                       "peeled_from": str(path), "peeled_task": task_name},
                      output_folder(path, runs_dir, "peel") / f"{task_name}.pt")
    logger.info(f"task {task_name} of {path} -> {out} (python main.py --task val --ckpt_path {out})")
    return out


def save_as_new(state, path):
    """save_checkpoint under the next free name of `path` (x.pt, else x2.pt, x3.pt ...: next_free_path), so an
    earlier merge or peel is never replaced. Returns the path written."""
    out = next_free_path(path)
    try:
        save_checkpoint(state, out)
    except CheckpointWriteError:
        out.unlink(missing_ok=True)  # the name next_free_path reserved: empty, no checkpoint
        raise
    return out
