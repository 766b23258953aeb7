"""The configuration: one plain class whose fields all have a default and a one-line comment.

Users subclass `BaseConfig` in configs/my_config.py and change a few fields; `main.py` loads that class,
applies command-line overrides (`--epochs 3`), validates, derives dependent fields and hands the object down.
"""
import ast
import copy
import importlib.util
import json
from pathlib import Path

from loguru import logger

from .config_checks import closest_hint, type_problem, validate  # the rules of every field, and the names a choice field may take


class BaseConfig:
    def __init__(self):
        # ---- task
        self.task = "train"                    # one of yolo.tasks.TASKS (python main.py --help lists them)
        self.run_name = "exp"                  # runs/<run_name>/ holds the config, log, metrics and checkpoints
        self.runs_dir = "runs"                 # parent folder of all runs
        self.device = "auto"                   # auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps
        self.seed = 0                          # seeds python, numpy and torch
        # ---- data
        self.dataset = "shapes"                # shapes (built-in, generated on first use) | voc | coco | yolo (txt)
        self.data = None                       # an Ultralytics / Roboflow data.yaml: sets dataset yolo, data_root and
                                               # class_names; its train / val / test entries are the splits named
                                               # train_split / val_split (docs/data.md)
        self.data_root = "data/shapes"         # dataset root (for shapes: where it is generated)
        self.train_dirs = None                 # folders inside data_root whose splits are concatenated, e.g. VOC's
        self.val_dirs = None                   # ["VOC2007", "VOC2012"]; None = data_root itself
        self.ann_dir = "Annotations"           # annotation folder inside data_root (VOC xml; COCO instances_<split>.json)
        self.img_dir = "JPEGImages"            # image folder inside data_root; "{split}" becomes the split name (COCO)
        self.train_split = "train"             # VOC ImageSets/Main/<split>.txt, COCO instances_<split>.json, YOLO images/<split>
        self.val_split = "val"
        self.train_split_file = None           # VOC: explicit id list (.txt) or file list (.csv, column `filename`);
                                               # COCO: the annotation json (both relative to data_root)
        self.val_split_file = None
        self.val_from_train = 0.0              # > 0: this seeded fraction of the train split is the val split (the
                                               # val split is not read): tune and pick best.pt without the test images
        self.train_images = 0                  # > 0: train on a fixed random subset of this many train images (the same
                                               # whatever the seed): a cheap proxy of the full run; 0 = all of them
        self.val_images = 0                    # > 0: evaluate on a fixed subset of this many val images; 0 = all
        self.class_names = ["circle", "square", "triangle"]
        self.shapes_num_train = 2000           # size of the built-in dataset
        self.shapes_num_val = 200
        self.shapes_seed = 0                   # the built-in dataset's generator seed (another seed, other images)
        self.shapes_class_weights = None       # the built-in dataset's relative class frequencies, one number per
                                               # class (None = equal): [1, 1, 0.1] makes the third class 10x rarer
        self.img_size = 320                    # network input side (multiple of 32); images are letterboxed to it
        self.batch_size = 16                   # images per process: per GPU under DDP, in total under DataParallel/CPU
        self.num_workers = 2                   # data-loader processes (0 = load in the main process)
        self.hflip_prob = 0.5                  # train augmentation: horizontal flip probability
        self.affine_scale = (0.75, 1.25)       # train augmentation: random zoom range
        self.affine_translate = 0.1            # train augmentation: random shift, fraction of the image side
        self.color_jitter = 0.3                # train augmentation: brightness/contrast/saturation strength (0 = off)
        self.augmentations = None              # train augmentation list [(albumentations name, probability, kwargs)],
                                               # after the letterbox; None = LetterboxAugment: flip/zoom/shift/colour
                                               # jitter from the 4 fields above, in one warp (about 4x faster);
                                               # yolo.data.transforms.PHOTO_AUGMENTATIONS: a heavier set
        self.mosaic_prob = 0.0                 # chance that a training sample is a 4-image mosaic (then augmented)
        self.mosaic_off_epochs = 0             # the last N epochs train without mosaics (YOLOX): the model ends on
                                               # whole images like those it will be tested on
        self.augment_off_epochs = 0            # the last N epochs train on the plain letterbox (no flip, zoom, shift,
                                               # colour or mosaic): the boxes' last lessons on test-like images
        self.min_box_size = 2.0                # boxes smaller than this (pixels, after augmentation) are dropped
        self.min_visibility = 0.3              # augmented boxes keeping less than this fraction of their area are dropped
        self.cache_images = False              # keep all images resized to img_size in RAM (small datasets: faster)
        self.class_balanced = False            # draw training images (with replacement) weighted by 1 / the number of
                                               # images holding their rarest class: rare classes seen about as often
                                               # as common ones (a task dict may set it for its task)
        # ---- multi-task (several datasets, one model; see configs/multitask_shapes.py and yolo/models/neck.py)
        self.tasks = None                      # None = one task, the data fields above; else a list of dicts, one per
                                               # dataset: {"name": ..., + any of TASK_FIELDS, e.g. "dataset",
                                               # "data_root", "class_names"}; unset fields come from this config
        self.branching = None                  # [[layer_index, [[task ids], ...]], ...]: after neck layer
                                               # layer_index (numbered as --task info prints them) each group gets
                                               # its own copy of the remaining neck layers. None = whole neck shared
        self.task_weights = None               # weight of each task's loss in the sum (None = all 1)
        self.average_shared_grads = True       # divide a shared parameter's gradient by the number of tasks using it
        self.task_sampling = "all"             # all: each step one batch of every task (an epoch = the longest task's
                                               # pass) | proportional: each step one task's batch, the task drawn by
                                               # its batches per pass | balanced: drawn uniformly (these two: an epoch
                                               # = the sum of the tasks' passes); docs/multitask.md
        # ---- model
        self.backbone = "resnet18"             # one of BACKBONES
        self.width = 0.5                       # channel width multiplier of backbone and neck
        self.neck_activation = "leaky"         # leaky (LeakyReLU 0.1, YOLOv3) | silu (YOLOv5 on) | relu; the
                                               # backbones keep their own (pretrained weights were made with them)
        self.pretrained_path = None            # local backbone weights file (never downloaded); None = from scratch
        self.init_ckpt = None                  # start from this checkpoint's weights (fine-tuning): tensors whose
                                               # shape differs, e.g. heads of another class count, are skipped
        self.freeze_backbone_epochs = 0        # keep the backbone frozen (weights and BN statistics) this many epochs
        self.freeze_shared_epochs = 0          # keep every shared layer frozen this many epochs: the backbone and the
                                               # neck blocks several tasks run (after --task merge: heads adapt first)
        # ---- anchors and label assignment
        self.anchors = [[(14, 14), (22, 22), (30, 30)],        # stride 8 (small objects), pixels at img_size
                        [(42, 42), (58, 58), (80, 80)],        # stride 16
                        [(110, 110), (150, 150), (210, 210)]]  # stride 32 (large objects)
        self.label_assignment = "nearby_grid"  # single_grid | nearby_grid | all_grid (see yolo/assign.py)
        self.decode_reach = None               # cells a predicted centre may move from its cell's centre; None = the
                                               # assignment's (0.5 / 1.5 / the grid): a wider one keeps the farthest
                                               # neighbour positives off the sigmoid's flat ends (bench/decode_range.py)
        self.match_iou_thres = 0.3             # an anchor is positive for a GT when their IoU >= this
        self.filter_by_max_iou = True          # conflicts: highest-IoU GT wins (else a seeded random claimant)
        self.assign_unmatched_to_best = True   # a GT with no positive gets its single best anchor (YOLOv3's rule)
        self.auto_anchor_bpr = 0.98            # before training: anchors whose best-possible recall (yolo/anchors.py)
                                               # on the training boxes is below this are replaced by k-means anchors
                                               # when those fit better (YOLOv5's autoanchor); 0 = keep them always
        # ---- loss
        self.box_loss = "ciou"                 # iou | giou | diou | ciou
        self.box_weight = 5.0                  # weight of the box term
        self.obj_weight = 1.0                  # weight of the objectness term
        self.cls_weight = 0.5                  # weight of the class term
        self.obj_scale_weights = (4.0, 1.0, 0.4)  # objectness weight per scale (stride 8, 16, 32): more cells, more weight
        self.box_scale_weights = (1.0, 1.0, 1.0)  # box term weight per scale (stride 8, 16, 32): small objects sit at
                                               # stride 8, so (2, 1, 1) weighs their placement twice
        self.box_size_gain = 0.0               # box term of a positive x (1 + g (1 - w h / image area)): small objects up
                                               # to 1 + g times a large one's; 1 = YOLOv3's (2 - w h) weighting; 0 = off
        self.obj_iou_ratio = 1.0               # objectness target of a positive: (1 - r) + r * IoU(its box, the GT)
                                               # (YOLOv5's gr): 1 = the IoU, so scores rank boxes by fit; 0 = plain 1
        self.box_bins = 0                      # > 0: each box number predicted as a distribution over this many bins
                                               # (distribution focal loss, GFL / YOLOv8; yolo/models/head.py); 0 = off
        self.dfl_weight = 1.0                  # weight of the distribution focal loss term (with box_bins > 0)
        self.ignore_iou_thres = 0.5            # YOLOv3: negatives whose box overlaps a GT by more than this are ignored
        # ---- training
        self.epochs = 12                       # passes over the training set
        self.time_budget = None                # minutes of training + evaluation: the epoch count is planned after
                                               # every epoch to end inside it (epochs is the first guess); None = off
        self.optimizer = "adamw"               # sgd (Nesterov) | adam | adamw
        self.lr = 2e-3                         # peak lr of one optimizer step (nominal_batch_size images); never rescaled
                                               # for you: x k images per step -> lr x k (SGD) or x sqrt(k) (Adam)
        self.momentum = 0.937                  # SGD momentum / Adam beta1
        self.weight_decay = 5e-4               # applied to conv/linear weights only, never to BN or biases
        self.warmup_epochs = 1.0               # linear warmup length, then cosine decay to lr * final_lr_ratio
        self.warmup_momentum = None            # momentum (Adam beta1) at the warmup's start, rising linearly to momentum
                                               # over the warmup (YOLOv5: 0.8); None = momentum all along
        self.warmup_bias_lr = 0.0              # biases' lr at the warmup's start, falling linearly to the scheduled lr
                                               # (YOLOv5: 0.1 with SGD lr 0.01); 0 = they warm up like every weight
        self.final_lr_ratio = 0.05             # cosine schedule's last lr as a fraction of lr
        self.grad_clip = 10.0                  # max gradient norm (0 = off)
        self.nominal_batch_size = None         # images per optimizer step, all processes together: gradients are
                                               # accumulated over batches until it is reached (None = batch_size x
                                               # processes, no accumulation). lr is the lr of one such step and is never
                                               # rescaled for you: changing the step batch, scale lr (linear: x new/old)
        self.lr_schedule = "cosine"            # after the warmup: cosine | step | cosine_restarts | constant
        self.lr_steps = (0.7, 0.9)             # step: fractions of training at which lr is multiplied by lr_step_factor
        self.lr_step_factor = 0.1              # step: the multiplier applied at each of lr_steps
        self.restart_epochs = 4.0              # cosine_restarts: length of the first cosine cycle in epochs
        self.restart_mult = 1                  # cosine_restarts: each cycle is this many times longer than the previous
        self.precision = "auto"                # auto (fp16 AMP on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
        self.ema = False                       # moving average of the weights, used by evaluation and best.pt
        self.ema_decay = 0.9999                # EMA decay, warmed up as ema_decay * (1 - exp(-updates / ema_tau))
        self.ema_tau = 2000.0                  # optimizer updates over which the EMA decay warms up
        self.multiscale = False                # train on a random input side, redrawn every multiscale_interval batches
        self.multiscale_sizes = (256, 384)     # (min, max) input side of multiscale training, multiples of 32
        self.multiscale_interval = 10          # batches between two multiscale size draws
        self.best_metric = "map50"             # map50 | map (AP@[.5:.95]): what best.pt and early stopping rank by
        self.patience = 0                      # stop after this many evaluations without a new best (0 = never)
        self.resume = False                    # continue the run of resume_path in its folder (a new one outside runs_dir)
        self.resume_path = None                # checkpoint to resume from (None = last.pt of the newest run_name, run_name2 ...)
        self.deterministic = False             # deterministic kernels; with seed, CPU and num_workers 0 runs repeat exactly
        self.tensorboard = True                # TensorBoard scalars + prediction grids in run_dir/tensorboard
        self.log_interval = 10                 # iterations between two TensorBoard points of the loss terms and lr
        self.mlflow_uri = None                 # MLflow tracking (None = off): a folder (an SQLite store in it, e.g.
                                               # "runs/mlflow") or a tracking server URL; pip install mlflow
        self.mlflow_experiment = "yolo"        # the MLflow experiment runs are logged to (created when missing)
        # ---- distributed (launch with torchrun; batch_size is per process, see nominal_batch_size for lr)
        self.sync_bn = False                   # DDP: batch-norm statistics over all processes (SyncBatchNorm)
        self.dist_backend = "auto"             # auto (nccl on GPU, gloo on CPU) | nccl | gloo
        # ---- validation
        self.val_interval = 2                  # evaluate every N epochs (and always after the last)
        self.conf_thres = 0.005                # score threshold before NMS during evaluation
        self.nms_iou = 0.45                    # NMS IoU threshold (per class; 0.45 as in YOLOv3)
        self.nms_merge = False                 # after NMS each kept box becomes the mean of the boxes of its class
                                               # overlapping it by > nms_iou, weighted by score x IoU (merge-NMS)
        self.max_det = 100                     # detections kept per image
        self.pre_nms_topk = 1000               # candidates per image that NMS sees, best first (evaluation warns
                                               # when the cut dropped one scoring predict_conf or more)
        self.eval_backend = "pycocotools"      # pycocotools | faster_coco_eval
        self.ckpt_path = None                  # checkpoint for val/predict/export (None = best.pt of the newest run
                                               # named run_name; without one, of the newest run of any name)
        # ---- prediction
        self.predict_source = None             # image, folder (searched recursively), glob ("photos/**/*.jpg"), .txt
                                               # list of image paths, video file, or webcam index (0); None = a few
                                               # built-in val images (docs/predict.md)
        self.predict_conf = 0.3                # score threshold for drawn predictions
        self.predict_max_images = 8            # how many built-in val images predict uses by default
        self.predict_vid_stride = 1            # video / webcam: predict every k-th frame (the video written has those)
        self.predict_max_frames = 0            # video / webcam: stop after this many frames read (0 = to the end;
                                               # a webcam: until it stops or Ctrl-C)
        self.predict_save_txt = False          # also write labels/<image>.txt: YOLO format class cx cy w h, normalised
        self.predict_save_conf = False         # predict_save_txt: add each box's score as a 6th column
        # ---- debug
        self.num_debug_batch = 1               # --task debug: batches of augmented training data to draw
        self.debug_demos = False               # --task debug: also redraw the pictures of docs/how_it_works.md,
                                               # imgs/<strategy>_demo.png (writes into the project's imgs/)
        # ---- evaluation artifacts
        self.eval_artifacts = True             # after training (best.pt's evaluation) and --task val: pr_curve.png,
                                               # f1/p/r_curve.png, confusion_matrix.png, per_class.csv (docs/evaluation.md)
        self.confusion_conf = 0.25             # confusion matrix: detections with a score below this are left out
        self.confusion_iou = 0.45              # confusion matrix: a detection and a GT pair when their IoU >= this
        # ---- export (python main.py --task export writes an .onnx file; docs/export.md)
        self.export_fuse = True                # fold every BatchNorm into its conv first (same outputs, faster)
        self.export_check_images = 8           # validation images per task on which ONNX Runtime must match PyTorch
        self.export_nms = False                # decoding, score threshold (conf_thres) and NMS (nms_iou, max_det,
                                               # pre_nms_topk) inside the graph: one (N, 7) output per task
        self.export_dynamic = False            # any input height and width (multiples of 32), not only img_size
        self.predict_fuse = True               # --task predict (backend torch) folds BatchNorm into convs first:
                                               # the same detections, a faster forward (bench/predict.py)
        self.backend = "torch"                 # val / predict: torch | onnxruntime (runs the .onnx file; a ckpt_path
                                               # ending in .onnx implies it; a .pt one means the newest export of
                                               # that file as it is now: <run>/best.onnx, best2.onnx ... whose
                                               # recorded source has the .pt's SHA-256; refused when none has)
        # ---- head search (python main.py --task search_head; docs/head_search.md)
        self.head = "conv1x1"                  # conv1x1 (one 1x1 conv per scale) | tower3x3 (hand-made 3x3 conv
                                               # towers) | searched (the cells of genotype_file)
        self.genotype_file = None              # head searched: a genotype.txt written by --task search_head
        self.genotype = None                   # the genotype text itself; read from genotype_file when None, so
                                               # config.json and checkpoints carry it without the file
        self.head_channels = 32                # tower heads: the width every scale is projected to (towers shared)
        self.cell_channels = 16                # searched / search cells: the narrow width their edges run at
        self.search_mode = "cached"            # --task search_head: cached (the towers alone, on the backbone + neck
                                               # features of a trained detector, computed once) | end_to_end (the
                                               # whole model trains, augmented batches; docs/head_search.md)
        self.search_steps = 2000               # cached: architecture steps (each followed by one weight step)
        self.search_batch_size = 2             # cached: images per step; small, as the towers' 9 mixed edges per
                                               # cell (not the frozen backbone) are what a step costs per image
        self.search_cache_flip = True          # cached: each image is cached as it is and mirrored (2 views)
        self.search_order = 1                  # 1: first-order alpha gradient | 2: DARTS's unrolled second order
        self.search_latency_weight = 0.0       # loss per ms of expected CPU latency of the cells' ops (0 = off)
        self.search_epochs = 4                 # end_to_end: passes over the weights' part of the train split
        self.search_alpha_split = "heldout"    # images the architecture weights learn on: heldout (a part of the
                                               # train split the weights never see) | same (the weights' batch)
        self.search_heldout_fraction = 0.5     # heldout: fraction of the train split kept for the alphas
        self.search_alpha_lr = 1e-2            # Adam lr of the alphas (betas (0.5, 0.999)); DARTS's 3e-4 is for
                                               # ~20,000 steps; in 2,000, 3e-3 left them near uniform, 1e-2
                                               # separates them (docs/head_search.md)
        self.search_alpha_weight_decay = 0.0   # the alphas' L2 decay in Adam; it holds an alpha where decay x
                                               # alpha = its mean gradient: DARTS's 1e-3 pinned these (detection
                                               # gradients of ~1e-5) near zero (docs/head_search.md)
        self.search_genotype_interval = 200    # search steps between two rewrites of genotype.txt (and at the end)
        # ---- evolution (--task evolve: hyperparameter search, yolo/research/evolve.py; trials in runs/<run_name>_evolve/)
        self.evolve_generations = 10           # trials in all (generation 1 trains this config); each trains `epochs`
        self.evolve_params = None              # fields to evolve, a list or "lr,box_weight,zoom" (None = all of
                                               # yolo.research.evolve.EVOLVE_SPACE); multi-task: task_weights and the
                                               # task-dict fields that are genes (box/obj/cls_weight, mosaic_prob)
                                               # evolve per task
        self.evolve_confirm_seeds = 2          # after the search: generation 1 and the best evolve_confirm_top results
                                               # train again with seed + 1 .. seed + this; the winner is the best mean
                                               # of those retrainings (2: the fewest that give a spread); 0 = off
        self.evolve_confirm_top = 3            # how many of the best results are confirmed (besides generation 1)
        self.evolve_backend = "genetic"        # genetic (mutate the best, one trial at a time) | ray (Ray Tune)
        self.evolve_ray_address = None         # ray: address of a running cluster ("auto", "10.0.0.1:6379"); None = a
                                               # local Ray instance on this machine
        self.evolve_ray_concurrency = 2        # ray: trials trained at the same time
        self.evolve_ray_searcher = "optuna"    # ray: a Ray Tune searcher (config_checks.RAY_SEARCHERS: optuna = TPE,
                                               # hyperopt, bayesopt, hebo, nevergrad, ax) or random
        self.evolve_ray_cpus = 1               # ray: CPUs each trial reserves (gpus: 1 each when the cluster has GPUs)
        self.evolve_asha = True                # ray: ASHA stops weak trials early (fitness evaluated every epoch)
        # ---- representation similarity (which layers tasks should share; see docs/multitask_rsa.md)
        self.rsa_ckpts = None                  # --task rsa: one single-task checkpoint per task, in the order of
                                               # `tasks`: "a.pt,b.pt" or a list of paths
        self.rsa_images = 100                  # --task rsa: val images of each task every model runs over (>= 4)
        self.rsa_measure = "spearman"          # --task rsa: spearman (rank correlation of the RDMs, the reference's) | cka
        self.rsa_budget = 0.7                  # --task rsa: recommend the least dissimilar tree within this compute
                                               # (a fraction of one single-task model per task)
        self.rsa_node_cost = "gflops"          # --task rsa: weight of a shared layer in a tree's dissimilarity: gflops
                                               # (its share of the model's compute) | equal (1 each, the reference's)
        self.merge_ckpts = None                # --task merge: single-task checkpoints, one per task, in task order
        self.merge_average = False             # --task merge: shared layers = the mean of the tasks sharing them
                                               # (False: taken from the first of those tasks)
        self.peel_task = None                  # --task peel: name of the task to take out of a multi-task checkpoint

    # ---------------------------------------------------------------- derived fields
    def finalize(self):
        """Validate every field and compute the ones that depend on others. Call after overrides."""
        validate(self, BaseConfig().to_dict())  # the types of BaseConfig's defaults are the fields' types
        self.num_classes = len(self.class_names)
        self.strides = (8, 16, 32)
        self.run_dir = str(Path(self.runs_dir) / self.run_name)
        self.task_names = tuple(t["name"] for t in self.tasks) if self.tasks else (self.dataset,)
        self.task_name = None if self.tasks else self.dataset  # set per task by task_configs
        # classes of each task's head: what the model needs of the tasks, without building every task's config
        self.task_num_classes = (tuple(len(t.get("class_names", self.class_names)) for t in self.tasks) if self.tasks
                                 else (self.num_classes,))
        return self

    def to_dict(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


DERIVED = ("num_classes", "strides", "run_dir", "task_names", "task_name", "task_num_classes")


def task_configs(cfg):
    """One finalized config per task: a copy of `cfg` with the task's data fields. A config without `tasks` is its
    own only task. Each copy knows its `task_name`, and its `num_classes` is the task's."""
    if not cfg.tasks:
        return [cfg]
    configs = []
    for spec in cfg.tasks:
        task_cfg = copy.copy(cfg)
        for key, value in spec.items():
            if key != "name":
                setattr(task_cfg, key, value)
        task_cfg.tasks = task_cfg.branching = task_cfg.task_weights = None
        try:
            task_cfg.finalize()
        except ValueError as e:
            raise ValueError(f"config field 'tasks', task {spec['name']!r}: {e}") from None
        task_cfg.task_name = spec["name"]
        configs.append(task_cfg)
    return configs


# -------------------------------------------------------------------- loading and overrides
def load_config(path):
    """Import a config file and return an instance of the BaseConfig subclass it defines. Whatever is wrong in the
    file (a syntax error, an exception, a field BaseConfig does not have: a typo) is one ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix != ".py":
        raise ValueError(f"config file {path} must be a Python file (.py) that defines a subclass of BaseConfig")
    spec = importlib.util.spec_from_file_location(f"user_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    run_config_code(path, spec.loader.exec_module, module)
    classes = [v for v in vars(module).values()
               if isinstance(v, type) and issubclass(v, BaseConfig) and v is not BaseConfig
               and v.__module__ == module.__name__]
    if len(classes) != 1:
        raise ValueError(f"config file {path} must define exactly one subclass of BaseConfig, found {len(classes)}")
    cfg = run_config_code(path, classes[0])
    fields = BaseConfig().to_dict()
    for key, value in vars(cfg).items():  # a typo would set a field nothing reads (_names: the file's own helpers)
        if not key.startswith("_") and (key not in fields or key in DERIVED):
            raise ValueError(f"config file {path}: {unknown_field(key, fields)}")
        kind = type_problem(value, fields.get(key))
        if kind:  # (finalize checks every type again, after the overrides; here the file is named)
            raise ValueError(f"config file {path}: config field '{key}' = {value!r} must be {kind}")
    return cfg


def run_config_code(path, function, *args):
    """function(*args) with whatever the config file's code raises turned into a ValueError naming the file."""
    try:
        return function(*args)
    except SyntaxError as e:
        raise ValueError(f"config file {path}: syntax error in {e.filename}, line {e.lineno}: {e.msg}") from None
    except Exception as e:  # a user's code may raise anything; main.py prints ValueErrors as one line
        raise ValueError(f"config file {path} raised {type(e).__name__}: {e}") from None


def unknown_field(key, fields):
    """The message for a name that is no config field, with the closest field name."""
    return f"unknown config field '{key}'{closest_hint(key, [f for f in fields if f not in DERIVED])}"


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
            raise ValueError(unknown_field(key, fields))
        try:
            setattr(cfg, key, parse_value(text, base_defaults.get(key, fields[key])))
        except ValueError as e:
            raise ValueError(f"config field '{key}': {e}") from None
    return cfg


def save_config(cfg, path):
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2, default=str))


def config_from_dict(d, warn=True):
    """Rebuild a config saved in a checkpoint (BaseConfig defaults for fields the dict lacks). A key that is no
    field is ignored, with a warning when `warn` (checkpoint_config warns once per file itself)."""
    cfg = BaseConfig()
    fields = cfg.to_dict()
    for k, v in d.items():
        if k in DERIVED:
            continue
        if k not in fields:  # a field of another version of this code: the rest of the checkpoint still loads
            if warn:
                logger.warning(f"checkpoint config: '{k}' is not a config field of this version: ignored")
            continue
        setattr(cfg, k, v)
    return cfg.finalize()
