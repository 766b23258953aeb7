"""The rules every config field must satisfy: `validate(cfg, defaults)` raises a ValueError that names the field, its
value and what it may be: its type (that of BaseConfig's default), its range (RANGES) or its choices (ALLOWED).
`BaseConfig.finalize` calls it after the command-line overrides, so a typo stops a run before anything is built.
"""
import difflib
import math
import numbers
import re
from pathlib import Path

from .branching import neck_groups

# the names a field may take; the modules that implement them import these lists (one list per choice)
BACKBONES = ("resnet18", "resnet34", "resnet50", "darknet53", "mobilenet_v3_small", "mobilenet_v3_large")
STRATEGIES = ("single_grid", "nearby_grid", "all_grid")  # label assignment, yolo/assign.py
# how far (cells from the cell centre) each assignment's positives lie from their GT's centre: the decoding's reach
# (yolo/models/head.py); None = anywhere on the grid (its largest side)
REACH = {"single_grid": 0.5, "nearby_grid": 1.5, "all_grid": None}
EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")     # COCO evaluation, yolo/metrics.py
HEADS = ("conv1x1", "tower3x3", "searched")             # detection head, yolo/models/heads.py
ACTIVATIONS = ("leaky", "silu", "relu")                 # neck activation, yolo/models/neck.py
# Ray Tune searchers of --task evolve (yolo/research/evolve_ray.py), each with the package it needs: pip install <it>
RAY_SEARCHERS = {"optuna": "optuna", "hyperopt": "hyperopt", "bayesopt": "bayesian-optimization", "hebo": "HEBO",
                 "nevergrad": "nevergrad", "ax": "ax-platform"}
RSA_MEASURES = ("spearman", "cka")                      # comparison of two RDMs, yolo/research/rsa.py
RSA_NODE_COSTS = ("gflops", "equal")                    # weight of a shared layer, yolo/research/tree_search.py

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
    "search_mode": ("cached", "end_to_end"),
    "evolve_backend": ("genetic", "ray"),
    "evolve_ray_searcher": ("random", *RAY_SEARCHERS),
    "task_sampling": ("all", "proportional", "balanced"),  # multi-task steps, yolo/engine/multitask.py
    "rsa_measure": RSA_MEASURES,
    "rsa_node_cost": RSA_NODE_COSTS,
}
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a task or run name: one plain folder name, never a path
# what a task dict of config `tasks` may set: the data fields and the loss gains (everything else is shared)
TASK_FIELDS = ("dataset", "data_root", "train_dirs", "val_dirs", "ann_dir", "img_dir", "train_split", "val_split",
               "train_split_file", "val_split_file", "class_names", "shapes_num_train", "shapes_num_val",
               "shapes_seed", "shapes_class_weights", "augmentations", "mosaic_prob", "cache_images",
               "batch_size", "class_balanced", "box_weight", "obj_weight", "cls_weight")


# the range of every numeric field: ">= a", "> a" or an interval "[a, b)"; NaN and infinity never pass. Their types
# come from BaseConfig's defaults (an int field holds an int), so "epochs": ">= 1" means 1, 2, ...
RANGES = {
    # data
    "seed": ">= 0", "shapes_seed": ">= 0", "shapes_num_train": ">= 1", "shapes_num_val": ">= 1",
    "val_from_train": "[0, 1)", "train_images": ">= 0", "val_images": ">= 0", "img_size": ">= 32",
    "batch_size": ">= 1", "num_workers": ">= 0",
    "hflip_prob": "[0, 1]", "affine_translate": "[0, 1)", "color_jitter": "[0, 1)", "mosaic_prob": "[0, 1]",
    "mosaic_off_epochs": ">= 0", "augment_off_epochs": ">= 0", "min_box_size": ">= 0", "min_visibility": "[0, 1]",
    # model, assignment, loss
    "width": "(0, 2]", "freeze_backbone_epochs": ">= 0", "freeze_shared_epochs": ">= 0", "match_iou_thres": "[0, 1]",
    "auto_anchor_bpr": "[0, 1]",
    "box_weight": ">= 0", "obj_weight": ">= 0", "cls_weight": ">= 0", "ignore_iou_thres": "[0, 1]",
    "obj_iou_ratio": "[0, 1]", "box_bins": ">= 0", "dfl_weight": ">= 0", "box_size_gain": ">= 0",
    # training
    "epochs": ">= 1", "lr": "> 0", "momentum": "[0, 1)", "weight_decay": ">= 0", "warmup_epochs": ">= 0",
    "warmup_bias_lr": ">= 0", "final_lr_ratio": "[0, 1]", "grad_clip": ">= 0", "lr_step_factor": "> 0",
    "restart_epochs": "> 0", "restart_mult": ">= 1", "ema_decay": "[0, 1)", "ema_tau": "> 0",
    "multiscale_interval": ">= 1", "patience": ">= 0", "log_interval": ">= 1",
    # evaluation, prediction, debug, export
    "val_interval": ">= 1", "conf_thres": "[0, 1]", "nms_iou": "[0, 1]", "max_det": ">= 1", "pre_nms_topk": ">= 1",
    "predict_conf": "[0, 1]", "predict_max_images": ">= 1", "num_debug_batch": ">= 1", "confusion_conf": "[0, 1]",
    "confusion_iou": "[0, 1]", "export_check_images": ">= 1",
    "predict_vid_stride": ">= 1", "predict_max_frames": ">= 0",
    # head search, evolution, representation similarity (the unbiased HSIC needs 4 images)
    "head_channels": ">= 1", "cell_channels": ">= 1", "search_epochs": ">= 1", "search_heldout_fraction": "(0, 1)",
    "search_alpha_lr": "> 0", "search_genotype_interval": ">= 1", "evolve_generations": ">= 1",
    "search_steps": ">= 1", "search_batch_size": ">= 1", "search_order": "[1, 2]", "search_latency_weight": ">= 0",
    "search_alpha_weight_decay": ">= 0",
    "evolve_confirm_seeds": ">= 0", "evolve_confirm_top": ">= 1",
    "evolve_ray_concurrency": ">= 1", "evolve_ray_cpus": ">= 1", "rsa_images": ">= 4",
    "rsa_budget": "> 0",
}
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # whether that device exists: engine/distributed.py select_device


def validate(cfg, defaults):
    """defaults: BaseConfig's fields, whose types the config's fields must have."""
    for name, default in defaults.items():
        problem = field_problem(name, getattr(cfg, name), default)
        if problem:
            raise ValueError(problem)
    for name, allowed in ALLOWED.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)!r} is not allowed; choose one of {list(allowed)}")
    if not PLAIN_NAME.fullmatch(cfg.run_name) or cfg.run_name in (".", ".."):
        raise ValueError(f"config field 'run_name' = {cfg.run_name!r} must be a plain name (letters, digits, _ - and "
                         f".; not '.' or '..'): it names the run's folder inside runs_dir, which says where runs go")
    if not DEVICE.fullmatch(cfg.device):
        raise ValueError(f"config field 'device' = {cfg.device!r} must be auto, cpu, cuda, cuda:N (N: the GPU's "
                         f"index) or mps")
    if cfg.img_size % 32:
        raise ValueError(f"config field 'img_size' = {cfg.img_size} must be a multiple of 32 (the coarsest stride)")
    validate_box_fields(cfg)
    validate_anchors(cfg.anchors)
    for field, what in (("obj_scale_weights", "objectness"), ("box_scale_weights", "box term")):
        weights = getattr(cfg, field)
        if not is_numbers(weights, 3) or min(weights) < 0:
            raise ValueError(f"config field '{field}' = {weights!r} must be 3 numbers >= 0, the {what} weights of "
                             f"strides 8, 16 and 32")
    names = cfg.class_names
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"config field 'class_names' = {names!r} must name at least one class: a list of strings")
    params = cfg.evolve_params
    if params is not None and not (isinstance(params, str) or all(isinstance(p, str) for p in params)):
        raise ValueError(f"config field 'evolve_params' = {params!r} must be None, a list of field names or "
                         f"a comma-separated string")
    if params is not None and not "".join(params.split(",") if isinstance(params, str) else params).strip():
        raise ValueError(f"config field 'evolve_params' = {params!r} names no field to evolve; name some or leave "
                         f"it None (all of them)")
    validate_data_fields(cfg)
    validate_engine_fields(cfg)
    validate_task_fields(cfg)
    validate_task_values(cfg, defaults)
    validate_head_fields(cfg)
    validate_rsa_fields(cfg)
    validate_predict_source(cfg.predict_source)


def field_problem(name, value, default):
    """What is wrong with `value` as config field `name`, by the type of its default and its RANGES rule; None
    when nothing is."""
    kind = type_problem(value, default)
    if kind:
        return f"config field '{name}' = {value!r} must be {kind}"
    rule = RANGES.get(name)
    if rule and not in_range(value, rule):
        return f"config field '{name}' = {value!r} must be {rule if rule[0] == '>' else 'in ' + rule}"
    return None


def type_problem(value, default):
    """The type `value` must have and has not, by its field's default: a bool, an int, a number (an int is a
    float too; a bool is never a number) or a string. None when it has it, or when the default is of another type."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "a bool (True or False)"
    if isinstance(default, int):
        return None if number and isinstance(value, numbers.Integral) else "an int"
    if isinstance(default, float):
        return None if number else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None


def in_range(value, rule):
    """Whether a number keeps a RANGES rule (">= a", "> a", "[a, b)", ...); NaN and infinity never do."""
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return False
    if rule[0] == ">":
        bound = float(rule.lstrip(">= "))
        return value >= bound if rule.startswith(">=") else value > bound
    low, high = (float(x) for x in rule[1:-1].split(","))
    return (low <= value if rule[0] == "[" else low < value) and (value <= high if rule[-1] == "]" else value < high)


def is_numbers(value, count=None):
    """Whether value is a list or tuple of finite numbers (of `count` of them when given)."""
    return (isinstance(value, (list, tuple)) and (count is None or len(value) == count)
            and all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in value))


def validate_box_fields(cfg):
    """decode_reach: None or at least the label assignment's reach (a nearer one could not reach the GTs that
    assignment gives a cell); box_bins: 0 or at least 2 (one bin is no distribution)."""
    reach, assigned = cfg.decode_reach, REACH[cfg.label_assignment]
    if reach is not None and assigned is None:
        raise ValueError(f"config field 'decode_reach' = {reach!r}: label_assignment 'all_grid' already reaches the "
                         f"whole grid; leave it None")
    is_number = isinstance(reach, numbers.Real) and not isinstance(reach, bool) and math.isfinite(reach)
    if reach is not None and not (is_number and reach >= assigned):
        raise ValueError(f"config field 'decode_reach' = {reach!r} must be None or a number of cells >= {assigned} "
                         f"(label_assignment {cfg.label_assignment!r} assigns GTs that far from a cell's centre)")
    if cfg.box_bins == 1:
        raise ValueError("config field 'box_bins' = 1 cannot spread a box number over bins: 0 (off) or >= 2, e.g. 8")


def validate_anchors(anchors):
    """3 scales (strides 8, 16, 32) of as many (w, h) pairs each, every side > 0 pixels: a zero-size anchor would
    match no box and train to mAP 0."""
    scales = anchors if isinstance(anchors, (list, tuple)) and len(anchors) == 3 else []
    if not scales or any(not isinstance(a, (list, tuple)) or not a or not all(is_numbers(wh, 2) for wh in a)
                         for a in scales):
        raise ValueError(f"config field 'anchors' = {anchors!r} must be 3 lists (strides 8, 16, 32) of (w, h) "
                         f"pairs of numbers")
    if len({len(a) for a in anchors}) != 1:
        raise ValueError("config field 'anchors' needs the same number of anchors on every scale")
    small = [tuple(wh) for a in anchors for wh in a if min(wh) <= 0]
    if small:
        raise ValueError(f"config field 'anchors': anchor {small[0]} must have a width and height > 0 pixels")


def validate_task_values(cfg, defaults):
    """The values a task dict sets (its loss gains, shapes sizes, ...) by the rules of the fields they replace."""
    for spec in cfg.tasks or ():
        for key, value in spec.items():
            problem = field_problem(key, value, defaults[key]) if key in defaults else None
            if problem:
                raise ValueError(f"config field 'tasks', task {spec['name']!r}: {problem}")


def validate_data_fields(cfg):
    """The data fields RANGES does not cover (albumentations names are checked when the pipeline is built)."""
    low, high = cfg.affine_scale if is_numbers(cfg.affine_scale, 2) else (0, 0)
    if not 0 < low <= high:
        raise ValueError(f"config field 'affine_scale' = {cfg.affine_scale!r} must be a (low, high) zoom range with "
                         f"0 < low <= high, e.g. (0.75, 1.25)")
    data = cfg.data
    if data is not None and (not isinstance(data, str) or Path(data).suffix.lower() not in (".yaml", ".yml")):
        raise ValueError(f"config field 'data' = {cfg.data!r} must be None or the path of a data.yaml (.yaml / .yml)")
    if cfg.data is not None and cfg.tasks:
        raise ValueError("config field 'data' names one dataset: with 'tasks', give each task its dataset, data_root "
                         "and class_names (a task dict cannot read a data.yaml)")
    weights = cfg.shapes_class_weights
    if weights is not None and (not is_numbers(weights, len(cfg.class_names)) or min(weights) < 0
                                or not sum(weights)):
        raise ValueError(f"config field 'shapes_class_weights' = {weights!r} must be None or one number >= 0 per "
                         f"class of class_names ({len(cfg.class_names)}), not all 0: the classes' relative frequencies")
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
    if nbs is not None and (type_problem(nbs, 1) or nbs < 1):
        raise ValueError(f"config field 'nominal_batch_size' = {cfg.nominal_batch_size!r} must be None or an int >= 1")
    if cfg.time_budget is not None and (not is_numbers([cfg.time_budget]) or cfg.time_budget <= 0):
        raise ValueError(f"config field 'time_budget' = {cfg.time_budget!r} must be None or minutes > 0")
    if cfg.warmup_momentum is not None and (type_problem(cfg.warmup_momentum, 0.0)
                                            or not in_range(cfg.warmup_momentum, "[0, 1)")):
        raise ValueError(f"config field 'warmup_momentum' = {cfg.warmup_momentum!r} must be None or a number in [0, 1)")
    steps = cfg.lr_steps
    if not is_numbers(steps) or list(steps) != sorted(steps) or any(not 0 < s < 1 for s in steps):
        raise ValueError(f"config field 'lr_steps' = {cfg.lr_steps!r} must be increasing fractions of training in (0, 1)")
    sizes = cfg.multiscale_sizes
    if (not is_numbers(sizes, 2) or sizes[0] > sizes[1] or sizes[0] < 32
            or any(not isinstance(s, numbers.Integral) or s % 32 for s in sizes)):
        raise ValueError(f"config field 'multiscale_sizes' = {sizes!r} must be (min, max), multiples of 32, min <= max")
    uri = cfg.mlflow_uri
    if uri is not None and (not isinstance(uri, str) or not uri.strip()):
        raise ValueError(f"config field 'mlflow_uri' = {uri!r} must be None (off), a folder or a tracking server URL")
    if not cfg.mlflow_experiment.strip():
        raise ValueError("config field 'mlflow_experiment' must name an experiment, got an empty string")


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
    for name in names:  # a task name becomes a folder name (val's per-task artifacts, peel's <task>.pt)
        if not PLAIN_NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"config field 'tasks': task name {name!r} must be a plain name (letters, digits, "
                             f"_ - and .; not '.' or '..'), since it names folders and files")
    for i, spec in enumerate(cfg.tasks):
        for key in spec:
            if key != "name" and key not in TASK_FIELDS:
                hint = closest_hint(key, TASK_FIELDS) or f"; a task may set {', '.join(TASK_FIELDS)}"
                raise ValueError(f"config field 'tasks': task {i} ({names[i]}) sets unknown field '{key}'{hint}")
    weights = cfg.task_weights
    if weights is not None and (not is_numbers(weights, len(cfg.tasks)) or min(weights) < 0):
        raise ValueError(f"config field 'task_weights' = {weights!r} must hold one number >= 0 per task "
                         f"({len(cfg.tasks)} tasks)")
    neck_groups(cfg.branching, len(cfg.tasks))  # raises ValueError naming the bad entry


def closest_hint(key, names):
    """"; did you mean '<name>'?" for the name of `names` closest to a misspelt `key`, or "" when none is close."""
    close = difflib.get_close_matches(key, names, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def validate_head_fields(cfg):
    """The head-search fields; a searched head's genotype text is read from genotype_file here (parsed when the
    model is built, yolo/models/heads.py)."""
    if cfg.head == "searched" and cfg.genotype is None:
        if not cfg.genotype_file:
            raise ValueError("config field 'head' = 'searched' needs 'genotype_file' (the genotype.txt of "
                             "python main.py --task search_head)")
        path = Path(cfg.genotype_file)
        if not path.is_file():
            raise FileNotFoundError(f"config field 'genotype_file': {path} does not exist")
        cfg.genotype = path.read_text()


def validate_predict_source(source):
    """None, a path or glob (a string), or a webcam index (an int >= 0: the command line reads `0` as one)."""
    webcam = isinstance(source, numbers.Integral) and not isinstance(source, bool) and source >= 0
    if not (source is None or webcam or (isinstance(source, str) and source.strip())):
        raise ValueError(f"config field 'predict_source' = {source!r} must be None, a path (image, folder, glob, "
                         f".txt list, video) or a webcam index (an int >= 0)")


def validate_rsa_fields(cfg):
    """rsa_ckpts, merge_ckpts, peel_task (whether the files exist is checked by the commands)."""
    for name in ("rsa_ckpts", "merge_ckpts"):
        path_list(getattr(cfg, name), name)
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
