"""The training loop: data -> model -> assignment + loss -> optimizer step, with evaluation and checkpoints."""
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from loguru import logger
from tqdm import tqdm

from ..config import save_config
from ..data.dataset import build_loader, read_records
from ..loss import YOLOLoss
from ..models.detector import build_model
from ..models.weights import load_backbone_weights, load_matching_state
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluator import evaluate, unwrap
from .logs import MetricsCSV, setup_logging
from .plots import plot_results
from .schedules import build_lr_lambda


def select_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"config field 'device' = {name!r} but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(name)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_run_dir(cfg):
    """runs/<run_name>, or runs/<run_name>2, 3 ... when it exists: a new run never overwrites an old one."""
    base = Path(cfg.runs_dir) / cfg.run_name
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}{n}")
    run_dir.mkdir(parents=True)
    return run_dir


def build_optimizer(model, cfg):
    """Weight decay on conv/linear weights only: decaying BN scales and biases only fights normalisation."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
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
        loaded, skipped = load_matching_state(model, load_checkpoint(cfg.init_ckpt)["model"])
        logger.info(f"init_ckpt {cfg.init_ckpt}: {len(loaded)} tensors loaded, {len(skipped)} skipped")
        for line in skipped:
            logger.info(f"  skipped {line}")


def set_backbone_frozen(model, frozen):
    """Frozen = no gradients and BN in eval mode, so the statistics of pretrained weights are kept too."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        model.backbone.eval()


def train(cfg):
    """Train as configured. Returns (best mAP@0.5, run folder)."""
    device = select_device(cfg.device)
    seed_everything(cfg.seed)
    run_dir = new_run_dir(cfg)
    setup_logging(run_dir)
    save_config(cfg, run_dir / "config.json")
    logger.info(f"run folder {run_dir} | device {device} | torch threads {torch.get_num_threads()}")

    train_loader = build_loader(cfg, read_records(cfg, "train"), train=True)
    val_loader = build_loader(cfg, read_records(cfg, "val"), train=False)
    logger.info(f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, "
                f"{len(train_loader)} iterations per epoch of {cfg.batch_size}")

    model = build_model(cfg).to(device)
    load_initial_weights(model, cfg)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, build_lr_lambda(cfg, len(train_loader)))
    loss_fn = YOLOLoss(cfg)
    metrics = MetricsCSV(run_dir / "metrics.csv")
    best_map50, start = -1.0, time.time()

    for epoch in range(cfg.epochs):
        epoch_stats = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn, cfg, device, epoch)
        row = {"epoch": epoch + 1, "time_s": round(time.time() - start, 1), **epoch_stats,
               "map50": float("nan"), "map": float("nan")}
        state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                 "config": cfg.to_dict(), "best_map50": best_map50}
        if (epoch + 1) % cfg.val_interval == 0 or epoch + 1 == cfg.epochs:
            result, _ = evaluate(model, val_loader, cfg, device)
            logger.info(f"epoch {epoch + 1} evaluation\n{result.table}")
            row.update(map50=result.map50, map=result.map)
            if result.map50 > best_map50:
                best_map50 = state["best_map50"] = result.map50
                save_checkpoint({**state, "map50": result.map50, "map": result.map}, run_dir / "best.pt")
                logger.info(f"new best mAP@0.5 {best_map50:.4f} -> {run_dir / 'best.pt'}")
        save_checkpoint(state, run_dir / "last.pt")
        metrics.append(row)

    plot_results(metrics.read(), run_dir / "results.png")
    logger.info(f"done in {time.time() - start:.0f} s; best mAP@0.5 {best_map50:.4f}; results in {run_dir}")
    return best_map50, run_dir


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, cfg, device, epoch):
    model.train()
    set_backbone_frozen(unwrap(model), epoch < cfg.freeze_backbone_epochs)
    sums, count = {}, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
    for it, (images, targets, _) in enumerate(bar):
        images, targets = images.to(device, non_blocking=True), targets.to(device)
        outputs = model(images)
        loss, items, stats = loss_fn(outputs, targets, unwrap(model).anchors)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, iteration {it}; the last "
                                     f"saved checkpoint is still good. Lower lr or check the data.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        values = {"loss": loss.item(), **{k: v.item() for k, v in items.items()},
                  "pos_per_gt": stats["pos_per_gt"], "unmatched_pct": stats["unmatched_pct"]}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        bar.set_postfix(loss=f"{values['loss']:.3f}", box=f"{values['box']:.3f}", obj=f"{values['obj']:.3f}",
                        cls=f"{values['cls']:.3f}", pos=f"{values['pos_per_gt']:.1f}",
                        lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return {k: v / max(count, 1) for k, v in sums.items()}
