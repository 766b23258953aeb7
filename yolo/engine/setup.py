"""Setting a training run up: its loaders, model, optimizer, scheduler, EMA and losses (one `Training`), the run
folder, seeds, and the set-up lines of the log. trainer.py runs the loop over what this builds.
"""
import os
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from ..anchors import refit_if_poor
from ..data.dataset import build_loader, read_train_val
from ..data.sampling import class_balanced_weights, class_shares
from ..data.transforms import letterboxed_box_sizes
from ..loss import YOLOLoss
from ..models.detector import build_model
from ..models.weights import load_backbone_weights, load_fitting_state
from .checkpoint import load_model_checkpoint
from .distributed import (DistInfo, average_over_ranks, broadcast_object, eval_sampler, main_process_first,
                          train_sampler, unwrap, wrap_model)
from .ema import ModelEMA
from .folders import next_free_dir
from .multitask import steps_per_epoch
from .schedules import build_scheduler


@dataclass
class Training:
    """What the loop updates and a checkpoint saves, and how this process runs."""
    model: torch.nn.Module          # possibly wrapped in DDP / DataParallel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler    # fp16 loss scaling; a pass-through when disabled
    ema: ModelEMA | None
    loss_fns: list                  # one YOLOLoss (or any loss callable) per task
    dist: DistInfo
    amp_dtype: torch.dtype | None   # autocast dtype; None = fp32
    accumulate: int = 1             # batches per optimizer update
    task_weights: tuple = (1.0,)    # weight of each task's loss in the sum
    task_names: tuple = ("task",)
    shared_params: list = ()        # (parameter, tasks using it), for average_shared_grads
    epoch: int = 0                  # epochs completed
    best_fitness: float = -1.0      # best value of cfg.best_metric so far
    evals_without_improvement: int = 0
    evaluation: tuple | None = None  # rank 0: (EvalResults, detections) of the latest evaluation, for the artifacts

    @property
    def device(self):
        return self.dist.device

    def eval_model(self):
        """The weights evaluation, best.pt and predictions use: the EMA when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.model)


def build_loaders(tasks, cfg, info):
    """(train loaders, val loaders), one of each per task config of `tasks`."""
    train_loaders, val_loaders = [], []
    for task_cfg in tasks:
        with main_process_first(info):  # rank 0 generates the built-in dataset, the others then read it
            train_records, val_records = read_train_val(task_cfg)
        weights = class_balanced_weights(train_records) if task_cfg.class_balanced else None
        if weights is not None:
            logger.info(f"{task_label(task_cfg, tasks)}class_balanced: share of drawn images holding each class, "
                        f"uniform -> by weight: {class_shares(train_records, task_cfg.class_names, weights)}")
        # the samplers only need len(): records stand in for the datasets build_loader wraps them in
        train_loader = build_loader(task_cfg, train_records, train=True,
                                    sampler=train_sampler(train_records, info, cfg.seed, weights))
        if cfg.num_workers > 0:
            train_loader.worker_init_fn = partial(seed_worker_augmentation, rank=info.rank)
        val_loader = build_loader(task_cfg, val_records, train=False, sampler=eval_sampler(val_records, info))
        train_loaders.append(train_loader)
        val_loaders.append(val_loader)
    return train_loaders, val_loaders


def task_label(task_cfg, tasks):
    """'task <name>: ' in front of a log line about one task, with several tasks; '' with one."""
    return f"task {task_cfg.task_name}: " if len(tasks) > 1 else ""


def refit_anchors(cfg, tasks, train_loaders, info):
    """Before a new run: replace anchors that fit the training boxes of all tasks poorly by k-means anchors
    (yolo/anchors.py refit_if_poor). Rank 0 decides, every process takes its answer. A run that starts from
    init_ckpt keeps the anchors its heads were trained for."""
    if not cfg.auto_anchor_bpr or cfg.init_ckpt:
        return
    new = None
    if info.is_main:
        records = [rec for loader in train_loaders for rec in loader.dataset.records]
        new, message = refit_if_poor(letterboxed_box_sizes(records, cfg.img_size), cfg.anchors,
                                     cfg.match_iou_thres, cfg.auto_anchor_bpr, cfg.seed)
        logger.info(message)
    new = broadcast_object(new, info)
    if new is not None:
        for c in (cfg, *tasks):
            c.anchors = new


def start_epoch(loader, epoch, cfg, info):
    """Reshuffle the DDP shards and reseed the augmentation from (seed, epoch, rank) alone, so a resumed run draws
    what the uninterrupted run would have drawn. (albumentations has its own generators: global seeds miss it.)
    The last mosaic_off_epochs epochs (of the plan so far: a time budget may move them) train without mosaics, the
    last augment_off_epochs on the plain letterbox."""
    dataset = loader.dataset
    mosaics = epoch < cfg.epochs - cfg.mosaic_off_epochs
    if dataset.mosaic_prob > 0 and bool(dataset.mosaic_on) != mosaics:
        dataset.mosaic_on.fill_(mosaics)
        logger.info(f"epoch {epoch + 1}: mosaics {'on' if mosaics else 'off'} "
                    f"(mosaic_prob {dataset.mosaic_prob:g}, mosaic_off_epochs {cfg.mosaic_off_epochs})")
    augment = epoch < cfg.epochs - cfg.augment_off_epochs
    if bool(dataset.augment_on) != augment:
        dataset.augment_on.fill_(augment)
        logger.info(f"epoch {epoch + 1}: augmentation {'on' if augment else 'off: the plain letterbox'} "
                    f"(augment_off_epochs {cfg.augment_off_epochs})")
    if hasattr(loader.sampler, "set_epoch"):  # DDP shards, class-balanced draws
        loader.sampler.set_epoch(epoch)
    if cfg.num_workers == 0:
        seed = np.random.SeedSequence([cfg.seed, epoch, info.rank]).generate_state(1)[0]
        loader.dataset.transform.set_random_seed(int(seed))


def seed_worker_augmentation(worker_id, rank=0):
    """Data-loader workers: each its own augmentation stream (forked copies would otherwise repeat each other)."""
    worker = torch.utils.data.get_worker_info()
    seed = np.random.SeedSequence([worker.seed % 2**32, rank]).generate_state(1)[0]
    worker.dataset.transform.set_random_seed(int(seed))


def build_training(cfg, tasks, info, iters_per_epoch):
    model = build_model(cfg).to(info.device)
    load_initial_weights(model, cfg)
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None
    model = wrap_model(model, cfg, info)
    optimizer = build_optimizer(unwrap(model), cfg)
    scheduler = build_scheduler(optimizer, cfg, iters_per_epoch)
    amp_dtype = autocast_dtype(cfg.precision, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp_dtype == torch.float16)
    shared = unwrap(model).tasks_sharing() if cfg.average_shared_grads else []
    # under DDP the loss divides by the positives and cells of the global batch (see YOLOLoss)
    average_counts = partial(average_over_ranks, info=info) if info.is_distributed else None
    losses = [YOLOLoss(task, average_counts) for task in tasks]
    return Training(model, optimizer, scheduler, scaler, ema, losses, info, amp_dtype,
                    accumulation_steps(cfg, info.world_size), tuple(cfg.task_weights or [1.0] * len(tasks)),
                    cfg.task_names, shared)


def accumulation_steps(cfg, world_size):
    """Batches whose gradients are summed before each update, so an update sees nominal_batch_size images."""
    step_batch = cfg.batch_size * world_size
    nominal = cfg.nominal_batch_size or step_batch
    if nominal % step_batch:
        raise ValueError(f"config field 'nominal_batch_size' = {nominal} must be a multiple of batch_size x "
                         f"processes = {cfg.batch_size} x {world_size} = {step_batch}")
    return nominal // step_batch


def autocast_dtype(precision, device):
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision in ("auto", "fp16"):
        if device.type != "cuda":
            raise ValueError("config field 'precision' = 'fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
        return torch.float16
    return torch.bfloat16


def build_optimizer(model, cfg):
    """Weight decay on conv/linear weights only: decaying BN scales and biases only fights normalisation. With
    warmup_bias_lr > 0 the biases are a third group, named "bias", whose lr warms up on its own (schedules.py)."""
    decay, no_decay, biases = [], [], []
    split_biases = cfg.warmup_bias_lr > 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else biases if split_biases and name.endswith("bias") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if split_biases:
        groups.append({"params": biases, "weight_decay": 0.0, "name": "bias"})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return adam(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def load_initial_weights(model, cfg):
    """Backbone weights from pretrained_path, then (fine-tuning) every matching tensor of init_ckpt."""
    if cfg.pretrained_path:
        load_backbone_weights(model.backbone, cfg.backbone, cfg.pretrained_path)
        logger.info(f"backbone weights loaded from {cfg.pretrained_path}")
    elif not cfg.init_ckpt:
        logger.info(f"no pretrained_path set: the {cfg.backbone} backbone starts from random weights")
    if cfg.init_ckpt:
        state = load_model_checkpoint(cfg.init_ckpt, ("model",))["model"]
        loaded, skipped = load_fitting_state(model, state, f"init_ckpt {cfg.init_ckpt}")  # warns of any skipped
        if not skipped:
            logger.info(f"init_ckpt {cfg.init_ckpt}: all {len(loaded)} tensors loaded")
        for line in skipped:
            logger.info(f"  skipped {line}")


def frozen_layers(model, epoch, cfg):
    """The layers that do not train in epoch `epoch` (0-based): all shared layers (Detector.shared_layers: the
    backbone, then the neck blocks several tasks run) in the first freeze_shared_epochs epochs, the backbone -- the
    first shared layer -- in the first freeze_backbone_epochs."""
    shared = model.shared_layers()
    if epoch < cfg.freeze_shared_epochs:
        return shared
    return shared[:1] if epoch < cfg.freeze_backbone_epochs else []


def freeze_shared_layers(model, epoch, cfg):
    """Freeze the frozen_layers of this epoch -- no gradients, and BN in eval mode so that their statistics (of
    pretrained or merged weights) are kept too -- and let the other shared layers train. Call after model.train()."""
    if not cfg.freeze_backbone_epochs and not cfg.freeze_shared_epochs:
        return
    frozen = frozen_layers(model, epoch, cfg)
    for layer in model.shared_layers():
        layer.requires_grad_(not any(layer is f for f in frozen))
    for layer in frozen:
        layer.eval()
    before = frozen_layers(model, epoch - 1, cfg) if epoch else []
    if len(frozen) != len(before):
        neck = f" and {len(frozen) - 1} shared neck block(s)" if len(frozen) > 1 else ""
        logger.info(f"epoch {epoch + 1}: the backbone{neck} frozen" if frozen else
                    f"epoch {epoch + 1}: the shared layers train")


def seed_everything(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic matmuls
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def new_run_dir(cfg):
    """runs/<run_name>, or runs/<run_name>2, 3 ... when it exists: a new run never overwrites an old one, and two
    runs started at once with one run_name get two folders (next_free_dir)."""
    return next_free_dir(Path(cfg.runs_dir) / cfg.run_name)


def resume_run_dir(resume_path, cfg, info):
    """The folder a resumed run continues in: its checkpoint's folder when that lies inside runs_dir, else a new run
    folder runs_dir/<run_name>N. A folder outside runs_dir is the user's: its files (a metrics.csv, a best.pt) are
    never appended to or replaced. Rank 0 decides and every process takes its answer (the broadcast is a collective
    all of them call: a process resolving the paths on its own machine could decide otherwise and skip it)."""
    run_dir = None
    if info.is_main:
        inside = Path(cfg.runs_dir).resolve() in Path(resume_path).resolve().parents
        run_dir = Path(resume_path).parent if inside else new_run_dir(cfg)
    return broadcast_object(run_dir, info)


def log_setup(cfg, tasks, info, t, run_dir, train_loaders, val_loaders):
    # images of a task per optimizer step: one number per distinct task batch size
    step_images = "/".join(str(size * info.world_size * t.accumulate)
                           for size in sorted({loader.batch_size for loader in train_loaders}))
    logger.info(f"run folder {run_dir} | device {info.device} | {info.world_size} process(es) | "
                f"torch threads {torch.get_num_threads()} | precision {t.amp_dtype or torch.float32}")
    for task_cfg, train_loader, val_loader in zip(tasks, train_loaders, val_loaders):
        logger.info(f"{task_label(task_cfg, tasks)}{len(train_loader.dataset)} train / {len(val_loader.dataset)} "
                    f"val images, {len(train_loader)} iterations per pass of {train_loader.batch_size} per process")
    per_task = ""
    if len(train_loaders) > 1:
        each = "of one drawn task" if cfg.task_sampling != "all" else "per task"
        per_task = f" {each} (task_sampling {cfg.task_sampling}, task weights {t.task_weights})"
    iters = steps_per_epoch([len(loader) for loader in train_loaders], cfg.task_sampling)
    logger.info(f"{iters} iterations per epoch; {t.accumulate} batch(es) per update = {step_images} images{per_task} "
                f"per optimizer step at lr {cfg.lr}")
