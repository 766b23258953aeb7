"""The rules every config field must satisfy: `validate(cfg)` raises a ValueError that names the field, its value
and what it may be. `BaseConfig.finalize` calls it after the command-line overrides, so a typo stops a run before
anything is built.
"""
import difflib
from pathlib import Path

from .branching import neck_groups

# the names a field may take; the modules that implement them import these lists (one list per choice)
BACKBONES = ("resnet18", "resnet34", "resnet50", "darknet53", "mobilenet_v3_small", "mobilenet_v3_large")
STRATEGIES = ("single_grid", "nearby_grid", "all_grid")  # label assignment, yolo/assign.py
EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")     # COCO evaluation, yolo/metrics.py
HEADS = ("conv1x1", "tower3x3", "searched")             # detection head, yolo/models/search_cell.py
ACTIVATIONS = ("leaky", "silu", "relu")                 # neck activation, yolo/models/neck.py

ALLOWED = {
    "dataset": ("shapes", "voc", "coco", "yolo"),
    "backbone": BACKBONES,
    "neck_activation": ACTIVATIONS,
    "label_assignment": STRATEGIES,
    "box_loss": ("iou", "giou", "diou", "ciou"),
    "optimizer": ("sgd", "adam", "adamw"),
    "eval_backend": EVAL_BACKENDS,
    "lr_schedule": ("cosine", "step", "cosine_restarts", "constant"),
    "precision": ("auto", "fp32", "fp16", "bf16"),
    "best_metric": ("map50", "map"),
    "dist_backend": ("auto", "nccl", "gloo"),
    "backend": ("torch", "onnxruntime"),
    "head": HEADS,
    "search_alpha_split": ("heldout", "same"),
    "evolve_backend": ("genetic", "ray"),
    "evolve_ray_searcher": ("optuna", "random"),
}
# what a task dict of config `tasks` may set: the data fields and the loss gains (everything else is shared)
TASK_FIELDS = ("dataset", "data_root", "train_dirs", "val_dirs", "ann_dir", "img_dir", "train_split", "val_split",
               "train_split_file", "val_split_file", "class_names", "shapes_num_train", "shapes_num_val",
               "shapes_seed", "augmentations", "mosaic_prob", "cache_images",
               "box_weight", "obj_weight", "cls_weight")


def validate(cfg):
    for name, allowed in ALLOWED.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)!r} is not allowed; choose one of {list(allowed)}")
    if cfg.img_size % 32:
        raise ValueError(f"config field 'img_size' = {cfg.img_size} must be a multiple of 32 (the coarsest stride)")
    if not (0 < cfg.width <= 2):
        raise ValueError(f"config field 'width' = {cfg.width} must be in (0, 2]")
    if len(cfg.anchors) != 3 or any(len(a) == 0 or any(len(wh) != 2 for wh in a) for a in cfg.anchors):
        raise ValueError("config field 'anchors' must be 3 lists (strides 8, 16, 32) of (w, h) pairs")
    if len({len(a) for a in cfg.anchors}) != 1:
        raise ValueError("config field 'anchors' needs the same number of anchors on every scale")
    if not cfg.class_names:
        raise ValueError("config field 'class_names' must name at least one class")
    for name in ("batch_size", "epochs", "val_interval", "max_det", "pre_nms_topk"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)} must be >= 1")
    for name in ("match_iou_thres", "conf_thres", "nms_iou", "predict_conf", "confusion_conf", "confusion_iou"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)} must be in [0, 1]")
    if cfg.num_workers < 0:
        raise ValueError(f"config field 'num_workers' = {cfg.num_workers} must be >= 0")
    if not isinstance(cfg.export_check_images, int) or cfg.export_check_images < 1:
        raise ValueError(f"config field 'export_check_images' = {cfg.export_check_images!r} must be an int >= 1")
    for name in ("evolve_generations", "evolve_ray_concurrency", "evolve_ray_cpus"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)!r} must be an int >= 1")
    params = cfg.evolve_params
    if params is not None and not (isinstance(params, str) or all(isinstance(p, str) for p in params)):
        raise ValueError(f"config field 'evolve_params' = {params!r} must be None, a list of field names or "
                         f"a comma-separated string")
    validate_data_fields(cfg)
    validate_engine_fields(cfg)
    validate_task_fields(cfg)
    validate_head_fields(cfg)
    validate_rsa_fields(cfg)


def validate_data_fields(cfg):
    """The data fields the checks above do not cover (albumentations names are checked when the pipeline is built)."""
    for name in ("mosaic_prob", "min_visibility", "hflip_prob", "auto_anchor_bpr"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)} must be in [0, 1]")
    for name in ("color_jitter", "affine_translate", "val_from_train"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)} must be in [0, 1)")
    if not isinstance(cfg.mosaic_off_epochs, int) or cfg.mosaic_off_epochs < 0:
        raise ValueError(f"config field 'mosaic_off_epochs' = {cfg.mosaic_off_epochs!r} must be an int >= 0")
    low, high = cfg.affine_scale if len(cfg.affine_scale) == 2 else (0, 0)
    if not 0 < low <= high:
        raise ValueError(f"config field 'affine_scale' = {cfg.affine_scale!r} must be a (low, high) zoom range with "
                         f"0 < low <= high, e.g. (0.75, 1.25)")
    for name in ("train_dirs", "val_dirs"):
        dirs = getattr(cfg, name)
        if dirs is not None and (isinstance(dirs, str) or not all(isinstance(d, str) for d in dirs)):
            raise ValueError(f"config field '{name}' = {dirs!r} must be None or a list of folder names")
    if cfg.augmentations is not None:
        for entry in cfg.augmentations:
            if (not isinstance(entry, (list, tuple)) or len(entry) != 3 or not isinstance(entry[0], str)
                    or not isinstance(entry[1], (int, float)) or not 0 <= entry[1] <= 1 or not isinstance(entry[2], dict)):
                raise ValueError(f"config field 'augmentations': entry {entry!r} must be (albumentations transform "
                                 f"name, probability in [0, 1], keyword-argument dict), e.g. ('HorizontalFlip', 0.5, {{}})")


def validate_engine_fields(cfg):
    """The training-engine fields (optimisation, schedules, checkpoints, distributed)."""
    nbs = cfg.nominal_batch_size
    if nbs is not None and (not isinstance(nbs, int) or nbs < 1):
        raise ValueError(f"config field 'nominal_batch_size' = {cfg.nominal_batch_size!r} must be None or an int >= 1")
    for name in ("multiscale_interval", "restart_mult", "log_interval"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)!r} must be an int >= 1")
    if cfg.time_budget is not None and (isinstance(cfg.time_budget, bool) or not isinstance(cfg.time_budget, (int, float))
                                        or cfg.time_budget <= 0):
        raise ValueError(f"config field 'time_budget' = {cfg.time_budget!r} must be None or minutes > 0")
    if not isinstance(cfg.patience, int) or cfg.patience < 0:
        raise ValueError(f"config field 'patience' = {cfg.patience!r} must be an int >= 0 (0 = no early stopping)")
    if not 0 <= cfg.ema_decay < 1 or cfg.ema_tau <= 0:
        raise ValueError(f"config fields 'ema_decay' = {cfg.ema_decay} must be in [0, 1), 'ema_tau' = {cfg.ema_tau} > 0")
    if cfg.restart_epochs <= 0 or cfg.lr_step_factor <= 0:
        raise ValueError("config fields 'restart_epochs' and 'lr_step_factor' must be > 0")
    steps = list(cfg.lr_steps)
    if steps != sorted(steps) or any(not 0 < s < 1 for s in steps):
        raise ValueError(f"config field 'lr_steps' = {cfg.lr_steps!r} must be increasing fractions of training in (0, 1)")
    sizes = cfg.multiscale_sizes
    if len(sizes) != 2 or sizes[0] > sizes[1] or sizes[0] < 32 or any(s % 32 for s in sizes):
        raise ValueError(f"config field 'multiscale_sizes' = {sizes!r} must be (min, max), multiples of 32, min <= max")


def validate_task_fields(cfg):
    """tasks, task_weights and branching (its grammar: yolo/branching.py)."""
    if cfg.tasks is None:
        if cfg.branching or cfg.task_weights:
            raise ValueError("config fields 'branching' and 'task_weights' need a list of 'tasks'")
        return
    if not isinstance(cfg.tasks, (list, tuple)) or not cfg.tasks or not all(isinstance(t, dict) for t in cfg.tasks):
        hint = (" (on the command line, a Python literal: --tasks \"[{'name': 'a'}, {'name': 'b', 'data_root': "
                "'data/b'}]\")" if isinstance(cfg.tasks, str) else "")
        raise ValueError(f"config field 'tasks' must be None or a non-empty list of dicts, got {cfg.tasks!r}{hint}")
    names = [t.get("name") for t in cfg.tasks]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"config field 'tasks': every task needs a unique non-empty 'name', got {names}")
    for i, spec in enumerate(cfg.tasks):
        for key in spec:
            if key != "name" and key not in TASK_FIELDS:
                close = difflib.get_close_matches(key, TASK_FIELDS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; a task may set {', '.join(TASK_FIELDS)}"
                raise ValueError(f"config field 'tasks': task {i} ({names[i]}) sets unknown field '{key}'{hint}")
    weights = cfg.task_weights
    if weights is not None and (len(weights) != len(cfg.tasks) or any(not w >= 0 for w in weights)):
        raise ValueError(f"config field 'task_weights' = {weights!r} must hold one number >= 0 per task "
                         f"({len(cfg.tasks)} tasks)")
    neck_groups(cfg.branching, len(cfg.tasks))  # raises ValueError naming the bad entry


def validate_head_fields(cfg):
    """The head-search fields; a searched head's genotype text is read from genotype_file here (parsed when the
    model is built, yolo/models/search_cell.py)."""
    for name in ("head_channels", "cell_channels", "search_epochs", "search_genotype_interval"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)!r} must be an int >= 1")
    if not 0 < cfg.search_heldout_fraction < 1:
        raise ValueError(f"config field 'search_heldout_fraction' = {cfg.search_heldout_fraction} must be in (0, 1)")
    if cfg.search_alpha_lr <= 0:
        raise ValueError(f"config field 'search_alpha_lr' = {cfg.search_alpha_lr} must be > 0")
    if cfg.head == "searched" and cfg.genotype is None:
        if not cfg.genotype_file:
            raise ValueError("config field 'head' = 'searched' needs 'genotype_file' (the genotype.txt of "
                             "python main.py --task search_head)")
        path = Path(cfg.genotype_file)
        if not path.is_file():
            raise FileNotFoundError(f"config field 'genotype_file': {path} does not exist")
        cfg.genotype = path.read_text()


def validate_rsa_fields(cfg):
    """rsa_ckpts, merge_ckpts, rsa_images, peel_task (whether the files exist is checked by the commands)."""
    for name in ("rsa_ckpts", "merge_ckpts"):
        path_list(getattr(cfg, name), name)
    if not isinstance(cfg.rsa_images, int) or cfg.rsa_images < 4:
        raise ValueError(f"config field 'rsa_images' = {cfg.rsa_images!r} must be an int >= 4 (the unbiased HSIC "
                         f"needs 4 images)")
    if cfg.peel_task is not None and not isinstance(cfg.peel_task, str):
        raise ValueError(f"config field 'peel_task' = {cfg.peel_task!r} must be None or a task name")


def path_list(value, name):
    """A list of paths from None, "a.pt,b.pt" or a list of strings; ValueError naming config field `name`."""
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        return list(value)
    raise ValueError(f"config field '{name}' = {value!r} must be None, \"a.pt,b.pt\" or a list of paths")
