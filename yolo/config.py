"""The configuration: one plain class whose fields all have a default and a one-line comment.

Users subclass `BaseConfig` in configs/my_config.py and change a few fields; `main.py` loads that class,
applies command-line overrides (`--epochs 3`), validates, derives dependent fields and hands the object down.
"""
import ast
import difflib
import importlib.util
import json
from pathlib import Path

TASKS = ("train", "val", "predict", "debug", "info")
BACKBONES = ("resnet18", "resnet34", "resnet50", "darknet53", "mobilenet_v3_small", "mobilenet_v3_large")


class BaseConfig:
    def __init__(self):
        # ---- task
        self.task = "train"                    # one of TASKS
        self.run_name = "exp"                  # runs/<run_name>/ holds the config, log, metrics and checkpoints
        self.runs_dir = "runs"                 # parent folder of all runs
        self.device = "auto"                   # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
        self.seed = 0                          # seeds python, numpy and torch
        # ---- data
        self.dataset = "shapes"                # shapes (built-in, generated on first use) | voc
        self.data_root = "data/shapes"         # VOC-layout root (for shapes: where it is generated)
        self.ann_dir = "Annotations"           # annotation folder inside data_root
        self.img_dir = "JPEGImages"            # image folder inside data_root
        self.train_split = "train"             # ImageSets/Main/<split>.txt, or a .txt/.csv file given by *_split_file
        self.val_split = "val"
        self.train_split_file = None           # optional explicit id list (.txt) or file list (.csv, column `filename`)
        self.val_split_file = None
        self.class_names = ["circle", "square", "triangle"]
        self.shapes_num_train = 2000           # size of the built-in dataset
        self.shapes_num_val = 200
        self.img_size = 320                    # network input side (multiple of 32); images are letterboxed to it
        self.batch_size = 16                   # images per process: per GPU under DDP, in total under DataParallel/CPU
        self.num_workers = 2                   # data-loader processes (0 = load in the main process)
        self.hflip_prob = 0.5                  # train augmentation: horizontal flip probability
        self.affine_scale = (0.75, 1.25)       # train augmentation: random zoom range
        self.affine_translate = 0.1            # train augmentation: random shift, fraction of the image side
        self.color_jitter = 0.3                # train augmentation: brightness/contrast/saturation strength (0 = off)
        self.min_box_size = 2.0                # boxes smaller than this (pixels, after augmentation) are dropped
        # ---- model
        self.backbone = "resnet18"             # one of BACKBONES
        self.width = 0.5                       # channel width multiplier of backbone and neck (seed's channel_sparsity)
        self.pretrained_path = None            # local backbone weights file (never downloaded); None = from scratch
        self.init_ckpt = None                  # start from this checkpoint's weights (fine-tuning): tensors whose
                                               # shape differs, e.g. heads of another class count, are skipped
        self.freeze_backbone_epochs = 0        # keep the backbone frozen (weights and BN statistics) this many epochs
        # ---- anchors and label assignment
        self.anchors = [[(14, 14), (22, 22), (30, 30)],        # stride 8 (small objects), pixels at img_size
                        [(42, 42), (58, 58), (80, 80)],        # stride 16
                        [(110, 110), (150, 150), (210, 210)]]  # stride 32 (large objects)
        self.label_assignment = "nearby_grid"  # single_grid | nearby_grid | all_grid (see yolo/assign.py)
        self.match_iou_thres = 0.3             # an anchor is positive for a GT when their IoU >= this
        self.filter_by_max_iou = True          # conflicts: highest-IoU GT wins (else a seeded random claimant)
        self.assign_unmatched_to_best = True   # a GT with no positive gets its single best anchor (YOLOv3's rule)
        # ---- loss
        self.box_loss = "ciou"                 # iou | giou | diou | ciou
        self.box_weight = 5.0                  # weight of the box term
        self.obj_weight = 1.0                  # weight of the objectness term
        self.cls_weight = 0.5                  # weight of the class term
        self.obj_scale_weights = (4.0, 1.0, 0.4)  # objectness weight per scale (stride 8, 16, 32): more cells, more weight
        self.ignore_iou_thres = 0.5            # YOLOv3: negatives whose box overlaps a GT by more than this are ignored
        # ---- training
        self.epochs = 12                       # passes over the training set
        self.optimizer = "adamw"               # sgd (Nesterov) | adam | adamw
        self.lr = 2e-3                         # peak learning rate (for batch_size; scale it yourself with the batch)
        self.momentum = 0.937                  # SGD momentum / Adam beta1
        self.weight_decay = 5e-4               # applied to conv/linear weights only, never to BN or biases
        self.warmup_epochs = 1.0               # linear warmup length, then cosine decay to lr * final_lr_ratio
        self.final_lr_ratio = 0.05             # cosine schedule's last lr as a fraction of lr
        self.grad_clip = 10.0                  # max gradient norm (0 = off)
        # ---- validation
        self.val_interval = 2                  # evaluate every N epochs (and always after the last)
        self.conf_thres = 0.005                # score threshold before NMS during evaluation
        self.nms_iou = 0.5                     # NMS IoU threshold (per class)
        self.max_det = 100                     # detections kept per image
        self.eval_backend = "pycocotools"      # pycocotools | faster_coco_eval
        self.ckpt_path = None                  # checkpoint for val/predict (None = best.pt of the newest run)
        # ---- prediction
        self.predict_source = None             # folder or image file (None = a few built-in val images)
        self.predict_conf = 0.3                # score threshold for drawn predictions
        self.predict_max_images = 8            # how many built-in val images predict uses by default
        # ---- debug
        self.num_debug_batch = 1               # --task debug: batches of augmented training data to draw
        self.debug_demos = False               # --task debug: also redraw imgs/<strategy>_demo.png for the README

    # ---------------------------------------------------------------- derived fields
    def finalize(self):
        """Validate every field and compute the ones that depend on others. Call after overrides."""
        validate(self)
        self.num_classes = len(self.class_names)
        self.strides = (8, 16, 32)
        self.run_dir = str(Path(self.runs_dir) / self.run_name)
        return self

    def to_dict(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


ALLOWED = {
    "task": TASKS,
    "dataset": ("shapes", "voc"),
    "backbone": BACKBONES,
    "label_assignment": ("single_grid", "nearby_grid", "all_grid"),
    "box_loss": ("iou", "giou", "diou", "ciou"),
    "optimizer": ("sgd", "adam", "adamw"),
    "eval_backend": ("pycocotools", "faster_coco_eval"),
}
DERIVED = ("num_classes", "strides", "run_dir")


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
    for name in ("batch_size", "epochs", "val_interval", "max_det"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)} must be >= 1")
    for name in ("match_iou_thres", "conf_thres", "nms_iou", "predict_conf"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"config field '{name}' = {getattr(cfg, name)} must be in [0, 1]")
    if cfg.num_workers < 0:
        raise ValueError(f"config field 'num_workers' = {cfg.num_workers} must be >= 0")


# -------------------------------------------------------------------- loading and overrides
def load_config(path):
    """Import a config file and return an instance of the BaseConfig subclass it defines."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"user_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = [v for v in vars(module).values()
               if isinstance(v, type) and issubclass(v, BaseConfig) and v is not BaseConfig
               and v.__module__ == module.__name__]
    if len(classes) != 1:
        raise ValueError(f"config file {path} must define exactly one subclass of BaseConfig, found {len(classes)}")
    return classes[0]()


def parse_value(text, default):
    """Parse a command-line string to the type of the field's default value."""
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a bool (true/false), got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    if text == "None":
        return None
    # lists, tuples, None defaults: a Python literal, or a plain string when it is not one
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(default, (list, tuple)):
            raise ValueError(f"expected a Python literal like {default!r}, got {text!r}")
        return text
    if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list/tuple like {default!r}, got {text!r}")
    return value


def apply_overrides(cfg, overrides):
    """overrides: list like ['--epochs', '3', '--img_size=320']. Every field of the config can be set."""
    fields = cfg.to_dict()
    base_defaults = BaseConfig().to_dict()  # the type to parse to is the base default's (None: any literal)
    i = 0
    while i < len(overrides):
        arg = overrides[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected command-line argument {arg!r}: use --field value")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(overrides):
                raise ValueError(f"command-line option {arg} needs a value")
            key, text = arg[2:], overrides[i + 1]
            i += 2
        key = key.replace("-", "_")
        if key not in fields or key in DERIVED:
            close = difflib.get_close_matches(key, [f for f in fields if f not in DERIVED], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown config field '{key}'{hint}")
        try:
            setattr(cfg, key, parse_value(text, base_defaults.get(key, fields[key])))
        except ValueError as e:
            raise ValueError(f"config field '{key}': {e}") from None
    return cfg


def save_config(cfg, path):
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2, default=str))


def config_from_dict(d):
    """Rebuild a config saved in a checkpoint (BaseConfig defaults for fields the dict lacks)."""
    cfg = BaseConfig()
    for k, v in d.items():
        if k in DERIVED:
            continue
        setattr(cfg, k, v)
    return cfg.finalize()
