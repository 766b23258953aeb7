"""`python main.py --task search_head`: search the detection head's cells (docs/head_search.md).

The model is the configured detector with a search head: box and class towers of mixed edges (yolo/models/
search_cell.py). Every step alternates, first-order (DARTS, Liu et al. 2019, without the second-order term):
    1. architecture step: the loss of a batch, gradient to the alphas only, Adam (lr search_alpha_lr,
       betas (0.5, 0.999), weight decay 1e-3) -- the network weights are frozen for it, so the backward stops at
       the head and costs little;
    2. weight step: the loss of a training batch, gradient to the weights only, the project's optimizer and lr
       schedule (search_epochs long).
With search_alpha_split = "heldout" (default) the alphas learn on a part of the training split the weights never
see (search_heldout_fraction): an op is then preferred because it generalises, not because it helps the weights fit
their own images (a big, fast-fitting op wins that game). "same" uses the weight step's batch for both, as the
reference did: every image trains the weights, cheaper on a small dataset.

Writes runs/<run_name>_search/: genotype.txt (every search_genotype_interval steps and at the end), alphas.png,
cells.png, alphas.pt (the softmax history), config.json and log.txt.
"""
import copy
import time
from types import SimpleNamespace

import numpy as np
import torch
from loguru import logger
from tqdm import tqdm

from ..config import save_config, task_configs
from ..data.dataset import build_loader, hold_out, read_records
from ..engine.checkpoint import save_checkpoint
from ..engine.distributed import select_device
from ..engine.logs import setup_logging
from ..engine.schedules import build_lr_lambda
from ..engine.setup import build_optimizer, new_run_dir, seed_everything
from ..loss import YOLOLoss
from ..models.detector import build_model
from ..models.search_cell import TOWERS, format_genotype, genotype_of, write_genotype
from ..viz.cells import draw_cells, plot_alphas

ALPHA_BETAS, ALPHA_WEIGHT_DECAY = (0.5, 0.999), 1e-3
HISTORY_POINTS = 200  # softmax(alpha) snapshots kept for alphas.png


def run(cfg):
    """Search; returns (genotype dict, run folder)."""
    search_cfg = copy.copy(cfg)
    search_cfg.run_name, search_cfg.epochs = f"{cfg.run_name}_search", cfg.search_epochs  # epochs: the lr schedule
    run_dir = new_run_dir(search_cfg)
    setup_logging(run_dir)
    seed_everything(cfg.seed, cfg.deterministic)
    save_config(search_cfg, run_dir / "config.json")
    data_cfg = task_configs(cfg)[0]
    if len(task_configs(cfg)) > 1:
        logger.info(f"several tasks: the search uses task {data_cfg.task_name}'s data and head")
    weight_loader, alpha_loader = search_loaders(data_cfg)
    device = select_device(cfg.device)
    model = build_model(cfg, head="search").to(device).train()
    head = model.heads[0]
    alphas = head.architecture_parameters()
    weights = [p for p in model.parameters() if all(p is not a for a in alphas)]
    weight_opt = build_optimizer(SimpleNamespace(parameters=lambda: iter(weights)), search_cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(weight_opt, build_lr_lambda(search_cfg, len(weight_loader)))
    alpha_opt = torch.optim.Adam(alphas, lr=cfg.search_alpha_lr, betas=ALPHA_BETAS, weight_decay=ALPHA_WEIGHT_DECAY)
    loss_fn = YOLOLoss(data_cfg)
    total = cfg.search_epochs * len(weight_loader)
    logger.info(f"search in {run_dir}: {len(weight_loader.dataset)} images for the weights, "
                f"{len(alpha_loader.dataset) if alpha_loader else 'the same'} for the alphas "
                f"({cfg.search_alpha_split}); {total} steps of batch {cfg.batch_size}; "
                f"{sum(p.numel() for p in head.parameters()):,} head params")

    history, steps, start = {t: [] for t in TOWERS}, [], time.time()
    every = max(1, total // HISTORY_POINTS)
    batches, alpha_batches = endless(weight_loader), endless(alpha_loader) if alpha_loader else None
    bar = tqdm(range(total), desc="search", dynamic_ncols=True)
    for step in bar:
        if step % every == 0:
            record(head, step, steps, history)
        images, targets = (x.to(device) for x in next(batches)[:2])
        a_images, a_targets = (x.to(device) for x in next(alpha_batches)[:2]) if alpha_batches else (images, targets)
        alpha_loss = train_step(model, loss_fn, a_images, a_targets, alpha_opt, train=alphas, frozen=weights)
        loss = train_step(model, loss_fn, images, targets, weight_opt, train=weights, frozen=alphas,
                          grad_clip=cfg.grad_clip)
        scheduler.step()
        bar.set_postfix(loss=f"{loss:.3f}", alpha_loss=f"{alpha_loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if (step + 1) % cfg.search_genotype_interval == 0:
            write_genotype(genotype_of(head), run_dir / "genotype.txt", header=f"head search, step {step + 1}/{total}")
    record(head, total, steps, history)

    genotype = genotype_of(head)
    elapsed = time.time() - start
    write_genotype(genotype, run_dir / "genotype.txt",
                   header=f"head search, step {total}/{total} (final), {elapsed:.0f} s, alphas on "
                          f"{cfg.search_alpha_split} images")
    save_checkpoint({"steps": torch.tensor(steps), **{t: torch.tensor(np.array(h)) for t, h in history.items()},
                     "alphas": [a.detach().cpu() for a in alphas]}, run_dir / "alphas.pt")
    plot_alphas(np.array(steps), history, run_dir / "alphas.png")
    draw_cells(genotype, run_dir / "cells.png", title=f"genotype after {total} search steps")
    logger.info(f"search done in {elapsed:.0f} s; genotype:\n{format_genotype(genotype)}"
                f"train it: python main.py --task train --head searched --genotype_file {run_dir / 'genotype.txt'}")
    return genotype, run_dir


def search_loaders(cfg):
    """(loader of the weights' images, loader of the alphas' images or None for "same"). The held-out part is a
    seeded random search_heldout_fraction of the train split."""
    records = read_records(cfg, "train")
    if cfg.search_alpha_split == "same":
        return build_loader(cfg, records, train=True), None
    weight_records, alpha_records = hold_out(records, cfg.search_heldout_fraction, cfg.seed, "search_heldout_fraction")
    return build_loader(cfg, weight_records, train=True), build_loader(cfg, alpha_records, train=True)


def train_step(model, loss_fn, images, targets, optimizer, train, frozen, grad_clip=0.0):
    """One update of the `train` parameters; `frozen` get no gradient (their backward is skipped). Returns the loss."""
    for p in frozen:
        p.requires_grad_(False)
    try:
        loss, _, _ = loss_fn(model(images), targets, model.decoding)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(train, grad_clip)
        optimizer.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return loss.item()


def record(head, step, steps, history):
    steps.append(step)
    for tower in TOWERS:
        history[tower].append(getattr(head, f"{tower}_tower").alphas.detach().softmax(-1).cpu().numpy())


def endless(loader):
    while True:
        yield from loader
