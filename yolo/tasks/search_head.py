"""`python main.py --task search_head`: search the detection head's cells (docs/head_search.md).

The model is the configured detector with a search head: box and class towers of mixed edges (yolo/models/
search_cell.py). Two modes (config search_mode):
    cached (default): on top of a trained detector (init_ckpt, else best.pt of the newest run named run_name), its
        backbone and neck frozen; their features of every training image (letterboxed, as it is and mirrored) are
        computed once and kept in memory (yolo/research/head_search.py), the head starts from the trained 1x1
        head's predictions, and each step is only the towers' forward and backward: search_steps (2,000) steps fit
        a CPU's minutes. The alphas then judge ops on features that have learned, as the searched head will use them.
    end_to_end: the whole detector trains with the search head on augmented batches (search_epochs passes), as a
        search from scratch does; each step costs a whole model's forward and backward, twice.
Every step alternates:
    1. architecture step: the loss of an alpha batch, gradient to the alphas only (search_order 1), or DARTS's
       unrolled second-order gradient (search_order 2, Liu et al. ICLR 2019), plus search_latency_weight x the
       cells' expected CPU ms per image (a table measured once, yolo/models/op_latency.py); Adam (lr
       search_alpha_lr, betas (0.5, 0.999), L2 decay search_alpha_weight_decay);
    2. weight step: the loss of a weight batch, gradient to the weights only, the project's optimizer and lr
       schedule.
With search_alpha_split = "heldout" (default) the alphas learn on a part of the training split the weights never
see (search_heldout_fraction): an op is then preferred because it generalises, not because it helps the weights fit
their own images (a big, fast-fitting op wins that game). "same" uses the weight step's batch for both, as the
reference did: every image trains the weights, cheaper on a small dataset.

Writes runs/<run_name>_search/: genotype.txt and genotype_reference.txt (the same genotype in the reference's
form; every search_genotype_interval steps and at the end), alphas.png, cells.png, alphas.pt (the softmax history,
the final alphas, the seconds), config.json and log.txt (alpha steps per second). With mlflow_uri the search is an
MLflow run: the config, both losses at every genotype write, and those files but alphas.pt.
"""
import copy
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from loguru import logger
from tqdm import tqdm

from ..config import save_config, task_configs
from ..data.dataset import build_loader, hold_out, read_records
from ..engine.checkpoint import checkpoint_config, load_model_checkpoint, newest_own_checkpoint, save_checkpoint
from ..engine.distributed import select_device
from ..engine.logs import setup_logging
from ..engine.mlflow_log import MLflowLog
from ..engine.schedules import build_scheduler
from ..engine.setup import build_optimizer, load_initial_weights, new_run_dir, seed_everything
from ..loss import YOLOLoss
from ..models.detector import build_model
from ..models.op_latency import expected_latency_ms, latency_table
from ..models.search_cell import TOWERS, format_genotype, genotype_of, write_genotype
from ..research.head_search import HeadOnFeatures, alpha_step, cache_features, feature_bytes, start_from_checkpoint
from ..viz.cells import draw_cells, plot_alphas

ALPHA_BETAS = (0.5, 0.999)
HISTORY_POINTS = 200  # softmax(alpha) snapshots kept for alphas.png
MLFLOW_FILES = ("genotype.txt", "genotype_reference.txt", "alphas.png", "cells.png", "config.json", "log.txt")
LATENCY_FILE = "op_latency.json"  # under runs_dir: the op latency table of this machine, shared by every search
# what a cached search takes from the checkpoint it searches on (its model: the features, anchors and decoding it was
# trained with, and the prediction conv's layout, box_bins, which the search starts from); the towers' own fields
# (head_channels, cell_channels) stay the config's
MODEL_FIELDS_OF_CHECKPOINT = ("backbone", "width", "neck_activation", "anchors", "label_assignment",
                              "decode_reach", "box_bins", "img_size", "branching")


def run(cfg):
    """Search; returns (genotype dict, run folder)."""
    tracking = MLflowLog(cfg.mlflow_uri)  # asked for but not installed: stops before the run folder is made
    try:
        return search(cfg, tracking)
    finally:
        tracking.end()  # still open: the search ended by an exception


def search(cfg, tracking):
    search_cfg = copy.copy(cfg)
    search_cfg.run_name = f"{cfg.run_name}_search"
    # the trained detector first: without one, one line and no run folder
    source = trained_checkpoint(cfg) if cfg.search_mode == "cached" else None
    run_dir = new_run_dir(search_cfg)
    setup_logging(run_dir)
    tracking.start(search_cfg, run_dir)
    seed_everything(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    setup = cached_setup(search_cfg, source, device) if source else end_to_end_setup(search_cfg, device)
    save_config(search_cfg, run_dir / "config.json")
    head, net = setup.head, setup.net
    alphas, weights, weight_opt, scheduler = weight_training(setup, search_cfg)
    alpha_opt = torch.optim.Adam(alphas, lr=cfg.search_alpha_lr, betas=ALPHA_BETAS,
                                 weight_decay=cfg.search_alpha_weight_decay)
    loss_fn = YOLOLoss(setup.data_cfg)
    latency, table = latency_term(head, search_cfg) if cfg.search_latency_weight > 0 else (None, None)
    total = setup.total
    logger.info(f"search in {run_dir} ({cfg.search_mode}, order {cfg.search_order}): {setup.about}; {total} steps "
                f"of batch {setup.batch_size}; {sum(p.numel() for p in head.parameters()):,} head params")

    def loss_of(batch):
        return loss_fn(net(batch[0]), batch[1], net.decoding)[0]

    history, steps, start = {t: [] for t in TOWERS}, [], time.time()
    every = max(1, total // HISTORY_POINTS)
    bar = tqdm(range(total), desc="search", dynamic_ncols=True)
    for step in bar:
        if step % every == 0:
            record(head, step, steps, history)
        batch = next(setup.weight_batches)
        alpha_batch = next(setup.alpha_batches) if setup.alpha_batches else batch
        alpha_loss = alpha_step(loss_of, alpha_batch, batch, alphas, weights, alpha_opt, cfg.search_order,
                                xi=scheduler.get_last_lr()[0], latency=latency)
        loss = train_step(net, loss_fn, *batch, weight_opt, train=weights, frozen=alphas, grad_clip=cfg.grad_clip)
        scheduler.step()
        bar.set_postfix(loss=f"{loss:.3f}", alpha_loss=f"{alpha_loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if (step + 1) % cfg.search_genotype_interval == 0:
            write_genotypes(genotype_of(head), run_dir, f"head search, step {step + 1}/{total}")
            logger.info(f"step {step + 1}/{total}: loss {loss:.4f}, alpha loss {alpha_loss:.4f}"
                        + (f", expected {expected_ms(alphas, table):.2f} ms/img" if table else "")
                        + f", {(step + 1) / (time.time() - start):.2f} alpha steps/s")
            tracking.log_metrics({"loss": loss, "alpha_loss": alpha_loss}, step=step + 1)
    record(head, total, steps, history)

    genotype = genotype_of(head)
    elapsed = time.time() - start
    write_genotypes(genotype, run_dir, f"head search, step {total}/{total} (final), {elapsed:.0f} s, "
                                       f"{cfg.search_mode}, alphas on {cfg.search_alpha_split} images")
    moved = max(float(np.abs(h[-1] - h[0]).max()) for h in history.values())
    save_checkpoint({"steps": torch.tensor(steps), **{t: torch.tensor(np.array(h)) for t, h in history.items()},
                     "alphas": [a.detach().cpu() for a in alphas], "search_s": elapsed, "prepare_s": setup.seconds},
                    run_dir / "alphas.pt")
    plot_alphas(np.array(steps), history, run_dir / "alphas.png")
    draw_cells(genotype, run_dir / "cells.png", title=f"genotype after {total} search steps")
    logger.info(f"search done: {total} alpha steps in {elapsed:.0f} s = {total / elapsed:.2f} alpha steps/s (each with "
                f"one weight step; {setup.seconds:.0f} s before them to prepare); the largest change of a "
                f"softmax(alpha) weight over the search: {moved:.4f}" + genotype_latency(genotype, table, alphas))
    logger.info(f"genotype:\n{format_genotype(genotype)}"
                f"train it: python main.py --task train --head searched --genotype_file {run_dir / 'genotype.txt'}")
    tracking.finish(run_dir, MLFLOW_FILES)
    return genotype, run_dir


def weight_training(setup, cfg):
    """(alphas, the other parameters of the searched net, their optimizer, its lr scheduler): the project's optimizer
    and training's scheduler (the lr schedule, and the warmups of the momentum and the biases' lr when they are set)."""
    alphas = setup.head.architecture_parameters()
    named_weights = [(n, p) for n, p in setup.net.named_parameters() if all(p is not a for a in alphas)]
    optimizer = build_optimizer(SimpleNamespace(named_parameters=lambda: iter(named_weights)), cfg)
    return alphas, [p for _, p in named_weights], optimizer, build_scheduler(optimizer, cfg, setup.steps_per_pass)


# ------------------------------------------------------------------------------------------------- the two modes
def trained_checkpoint(cfg):
    """The detector a cached search starts from: init_ckpt, else best.pt of the newest run named run_name."""
    if cfg.init_ckpt:
        return Path(cfg.init_ckpt)
    own = newest_own_checkpoint(cfg, "best.pt")
    if own is None:
        raise FileNotFoundError(f"search_mode 'cached' searches the head of a trained detector, and {cfg.runs_dir}/"
                                f"{cfg.run_name}*/best.pt does not exist: give one with --init_ckpt, or train the "
                                f"run {cfg.run_name} first (python main.py --task train), or search end to end "
                                f"(--search_mode end_to_end)")
    return own


def cached_setup(cfg, path, device):
    """The cached search (module docstring): the head on the features of a trained detector, computed once."""
    ckpt = load_model_checkpoint(path)
    take_model_fields(cfg, checkpoint_config(ckpt, path), path)
    data_cfg = task_configs(cfg)[0]
    model = build_model(cfg, head="search").to(device)
    start_from_checkpoint(model, ckpt["model"], path)
    start = time.time()
    caches = [cache_features(model, loader, device, cfg.search_cache_flip) if loader else None
              for loader in search_loaders(data_cfg, augment=False)]
    seconds = time.time() - start
    weight_cache, alpha_cache = caches
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_pass = max(1, len(weight_cache) // cfg.search_batch_size)
    cfg.epochs = math.ceil(cfg.search_steps / steps_per_pass)  # the weights' lr schedule, in passes over their views
    views = "each as it is and mirrored" if cfg.search_cache_flip else "as they are"
    size = sum(feature_bytes(c) for c in caches if c is not None) / 1e9
    about = (f"backbone and neck of {path} frozen; their features of {len(weight_cache)} views for the weights, "
             f"{len(alpha_cache) if alpha_cache else 'the same'} for the alphas ({cfg.search_alpha_split}), images "
             f"{views}, cached in {seconds:.0f} s ({size:.2f} GB)")
    return SimpleNamespace(net=HeadOnFeatures(model.heads[0], model.decoding), head=model.heads[0], data_cfg=data_cfg,
                           weight_batches=weight_cache.batches(cfg.search_batch_size, gen),
                           alpha_batches=alpha_cache.batches(cfg.search_batch_size, gen) if alpha_cache else None,
                           total=cfg.search_steps, batch_size=cfg.search_batch_size, steps_per_pass=steps_per_pass,
                           about=about, seconds=seconds)


def take_model_fields(cfg, saved, path):
    """The search runs on the checkpoint's model: its backbone, neck, anchors and input size replace the config's
    (each change logged); a checkpoint of other classes than the search's data is refused."""
    own, theirs = task_configs(cfg)[0].class_names, task_configs(saved)[0].class_names
    if list(own) != list(theirs):
        raise ValueError(f"{path} detects {list(theirs)}, the search's data has {list(own)}: search on a detector "
                         f"trained on this data (--init_ckpt)")
    for field in MODEL_FIELDS_OF_CHECKPOINT:
        mine, trained = getattr(cfg, field), getattr(saved, field)
        if json.dumps(mine) != json.dumps(trained):
            logger.info(f"{field} = {trained!r} from {path} (the config says {mine!r}): the search runs on its model")
            setattr(cfg, field, trained)
    cfg.finalize()


def end_to_end_setup(cfg, device):
    """The end-to-end search: the whole detector trains on augmented batches (from init_ckpt's weights if set)."""
    data_cfg = task_configs(cfg)[0]
    weight_loader, alpha_loader = search_loaders(data_cfg)
    model = build_model(cfg, head="search").to(device).train()
    load_initial_weights(model, cfg)
    cfg.epochs = cfg.search_epochs  # the weights' lr schedule

    def on_device(loader):
        return ((images.to(device), targets.to(device)) for images, targets, *_ in endless(loader))

    about = (f"the whole model trains; {len(weight_loader.dataset)} images for the weights, "
             f"{len(alpha_loader.dataset) if alpha_loader else 'the same'} for the alphas ({cfg.search_alpha_split}), "
             f"augmented")
    return SimpleNamespace(net=model, head=model.heads[0], data_cfg=data_cfg, weight_batches=on_device(weight_loader),
                           alpha_batches=on_device(alpha_loader) if alpha_loader else None,
                           total=cfg.search_epochs * len(weight_loader), batch_size=cfg.batch_size,
                           steps_per_pass=len(weight_loader), about=about, seconds=0.0)


def latency_term(head, cfg):
    """(a function of the alphas: search_latency_weight x the cells' expected ms per image, the table of ms per op)
    from the op latency table of this machine (yolo/models/op_latency.py), measured where it lacks an entry."""
    sizes = [(cfg.img_size // stride,) * 2 for stride in cfg.strides]
    threads = torch.get_num_threads()
    table = latency_table(cfg.cell_channels, sizes, threads, Path(cfg.runs_dir) / LATENCY_FILE)
    logger.info(f"CPU ms per image of each op at {cfg.cell_channels} channels on the {len(sizes)} scales ({threads} "
                f"threads, {Path(cfg.runs_dir) / LATENCY_FILE}): "
                + ", ".join(f"{op} {ms:.2f}" for op, ms in sorted(table.items(), key=lambda item: item[1])))
    cells = (head.box_tower, head.cls_tower)
    return (lambda: cfg.search_latency_weight * sum(expected_latency_ms(c.alphas, table) for c in cells)), table


def expected_ms(alphas, table):
    """The cells' expected CPU ms per image of their ops (all 9 edges of each cell), without the weight."""
    return sum(expected_latency_ms(a.detach(), table).item() for a in alphas)


def genotype_latency(genotype, table, alphas):
    """For the log: the expected ms of the final alphas and the ms of the ops the genotype keeps (with a table)."""
    if table is None:
        return ""
    kept = sum(table[op] for tower in TOWERS for node in genotype[tower] for op, _ in node)
    return (f"; expected CPU ms per image of the cells' ops {expected_ms(alphas, table):.2f} (all 9 edges of each "
            f"cell), of the genotype's {kept:.2f} (its 6 kept edges per cell)")


def write_genotypes(genotype, run_dir, header):
    """genotype.txt (this project's text) and genotype_reference.txt (the reference's form); either trains."""
    write_genotype(genotype, run_dir / "genotype.txt", header=header)
    write_genotype(genotype, run_dir / "genotype_reference.txt", header=header, form="reference")


def search_loaders(cfg, augment=True):
    """(loader of the weights' images, loader of the alphas' images or None for "same"). The held-out part is a
    seeded random search_heldout_fraction of the train split. augment=False: the letterbox alone (to cache)."""
    records = read_records(cfg, "train")
    if cfg.search_alpha_split == "same":
        return build_loader(cfg, records, train=augment), None
    weight_records, alpha_records = hold_out(records, cfg.search_heldout_fraction, cfg.seed, "search_heldout_fraction")
    return build_loader(cfg, weight_records, train=augment), build_loader(cfg, alpha_records, train=augment)


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
