"""The training loop: data -> model -> assignment + loss -> optimizer step, with evaluation and checkpoints.

Read `run_training` top to bottom: the process (one of several under torchrun), the run folder (new, or the one
being resumed; a new one for a checkpoint outside runs_dir), data, model and optimizer, then the epochs: train,
evaluate every val_interval epochs, write metrics.csv, last.pt and best.pt, stop early when the metric stalls.
`train_one_epoch` is the inner loop.

Multi-task (config `tasks`): every task has its own loaders and loss; each step takes one batch of every task (or of
one drawn task: task_sampling, multitask.py), sums the task losses with `task_weights`, and (average_shared_grads)
divides the gradient of each shared parameter by the number of tasks using it, so the backbone learns from the
tasks' mean rather than their sum. A single-task run is the one-task case of the same loop.
"""
import copy
import math
import random
import time
import warnings

import torch
import torch.nn.functional as F
from loguru import logger

from ..config import save_config, task_configs
from ..viz.detections import prediction_grid
from ..viz.plots import plot_results
from .artifacts import write_tasks_artifacts
from .budget import TimeBudget
from .checkpoint import (checkpoint_state, load_resume_checkpoint, model_differences, remove_partial_writes,
                         restore_training, resumed_config, save_checkpoint)
from .distributed import (all_ranks_true, barrier, broadcast_object, cleanup_distributed, init_distributed,
                          no_sync_unless, sum_over_ranks, sync_buffers_from_main, unwrap)
from .evaluator import evaluate_tasks
from .logs import MetricsCSV, TensorBoard, log_dropped_boxes, log_resumed_config, progress, setup_logging
from .mlflow_log import RUN_ID_KEY, MLflowLog
from .multitask import (epoch_means, forward_tasks, score_names, steps_per_epoch, task_batches, task_schedule,
                        tasks_loss)
from .setup import (build_loaders, build_training, log_setup, new_run_dir, refit_anchors, resume_run_dir,
                    seed_everything, freeze_shared_layers, start_epoch)

# with gradient accumulation the scheduler steps (every batch) before the optimizer's first update: intended
warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")


def train(cfg, on_epoch=None, mlflow_parent=None):
    """Train as configured, or continue a run when cfg.resume. Returns (best fitness, run folder). on_epoch(row) is
    called with every epoch's metrics.csv row on the main process (hyperparameter search reads the mAP there).
    mlflow_parent: the id of the MLflow run this training's run nests in (an evolve trial's search)."""
    mlflow = MLflowLog(cfg.mlflow_uri, mlflow_parent)  # asked for but not installed: stops here, before any file
    info = init_distributed(cfg.device, cfg.dist_backend)
    try:
        return run_training(cfg, info, on_epoch, mlflow)
    finally:
        mlflow.end()  # a run still open here ended by an exception: FAILED
        cleanup_distributed(info)


def run_training(cfg, info, on_epoch, mlflow):
    resume_path, ckpt = load_resume_checkpoint(cfg, info) if cfg.resume else (None, None)
    given = cfg
    cfg, ignored = resumed_config(cfg, ckpt) if ckpt else (copy.copy(cfg), [])  # a time budget changes epochs
    run_dir = (resume_run_dir(resume_path, cfg, info) if ckpt
               else broadcast_object(new_run_dir(cfg) if info.is_main else None, info))
    setup_logging(run_dir if info.is_main else None, level="INFO" if info.is_main else "WARNING")
    if ckpt and info.is_main:
        remove_partial_writes(run_dir)
        log_resumed_config(resume_path, model_differences(given, cfg), ignored)
        if run_dir != resume_path.parent:
            logger.info(f"resume: {resume_path} lies outside runs_dir {cfg.runs_dir}: continuing it in the new run "
                        f"folder {run_dir}, its own folder left as it is (best.pt appears once the run beats the "
                        f"checkpoint's best {cfg.best_metric} {ckpt.get('best_fitness', float('nan')):.4f})")
    seed_everything(cfg.seed, cfg.deterministic)

    tasks = task_configs(cfg)  # one config per task (a single-task run: [cfg]), passed down from here
    train_loaders, val_loaders = build_loaders(tasks, cfg, info)
    if ckpt is None:
        refit_anchors(cfg, tasks, train_loaders, info)
    if info.is_main:
        save_config(cfg, run_dir / "config.json")
    start_mlflow(mlflow, cfg, run_dir, ckpt, info)  # before the model: under DDP wrapping it is a collective
    iters_per_epoch = steps_per_epoch([len(loader) for loader in train_loaders], cfg.task_sampling)
    t = build_training(cfg, tasks, info, iters_per_epoch)
    log_setup(cfg, tasks, info, t, run_dir, train_loaders, val_loaders)
    if ckpt is not None:
        restore_training(t, ckpt, resume_path)
        logger.info(f"resumed {resume_path} after epoch {t.epoch} (best {cfg.best_metric} {t.best_fitness:.4f})")
    metrics = MetricsCSV(run_dir / "metrics.csv")
    if ckpt is not None and info.is_main:
        metrics.keep_until(t.epoch)
    tb = TensorBoard(run_dir / "tensorboard", cfg.tensorboard and info.is_main,
                     purge_step=t.epoch * iters_per_epoch if ckpt else None)
    start = time.time() - (ckpt["elapsed_s"] if ckpt else 0.0)
    budget = TimeBudget(cfg.time_budget, ckpt["elapsed_s"] if ckpt else 0.0) if cfg.time_budget else None
    if budget:
        logger.info(f"time budget {cfg.time_budget:g} min: the number of epochs is planned after every epoch")
    best_evaluation = None  # (epoch, evaluation) of best.pt, when this process made it

    while t.epoch < cfg.epochs:
        epoch = t.epoch
        for loader in train_loaders:
            start_epoch(loader, epoch, cfg, info)
        if budget:
            budget.epoch_started()
        epoch_stats = train_one_epoch(t, train_loaders, cfg, epoch, tb)
        log_dropped_boxes(epoch + 1, epoch_stats["boxes_dropped_pct"])
        t.epoch = epoch + 1
        for module in [unwrap(t.model)] + ([t.ema.module] if t.ema else []):
            sync_buffers_from_main(module, info)  # BN statistics of the last batches differ between ranks
        if budget:
            budget.epoch_trained()
            fit_to_budget(cfg, budget, t.epoch, info)
        row = {"epoch": t.epoch, "time_s": round(time.time() - start, 1), **epoch_stats,
               **{k: float("nan") for k in score_names(t.task_names)}}
        scores, improved = None, False
        if t.epoch % cfg.val_interval == 0 or t.epoch == cfg.epochs:
            scores = evaluate_epoch(t, val_loaders, tasks, cfg, tb, step=t.epoch * iters_per_epoch)
            if budget:
                budget.evaluated()
            row.update(scores)
            improved = scores[cfg.best_metric] > t.best_fitness
            t.best_fitness = max(t.best_fitness, scores[cfg.best_metric])
            t.evals_without_improvement = 0 if improved else t.evals_without_improvement + 1
            if improved and t.evaluation is not None:
                best_evaluation = (t.epoch, t.evaluation)
        if info.is_main:
            metrics.append(row)  # before the checkpoints: see MetricsCSV.keep_until
            mlflow.log_metrics(row, step=t.epoch)
            state = {**checkpoint_state(t, cfg, elapsed_s=time.time() - start), **mlflow.checkpoint_fields()}
            if improved:
                save_checkpoint({**state, **scores}, run_dir / "best.pt")
                logger.info(f"new best {cfg.best_metric} {t.best_fitness:.4f} -> {run_dir / 'best.pt'}")
            save_checkpoint(state, run_dir / "last.pt")
            if on_epoch is not None:
                on_epoch(row)
        if cfg.patience and t.evals_without_improvement >= cfg.patience:
            logger.info(f"early stop: {cfg.best_metric} did not improve for {cfg.patience} evaluations")
            break

    if info.is_main and cfg.eval_artifacts and (best_evaluation or t.evaluation):
        # best.pt's evaluation: the numbers --task val prints for it (a resumed run whose best came before the
        # resume only has its last evaluation)
        epoch, evaluation = best_evaluation or (t.epoch, t.evaluation)
        logger.info(f"evaluation artifacts of epoch {epoch}{' (best.pt)' if best_evaluation else ''}")
        write_tasks_artifacts(run_dir, *evaluation, val_loaders, tasks, tb, step=t.epoch * iters_per_epoch)
    tb.close()
    if info.is_main:
        plot_results(metrics.read(), run_dir / "results.png")
        mlflow.finish(run_dir, folders=t.task_names)  # the plots, tables, config, log and best.pt; then FINISHED
    barrier(info)  # every process returns once rank 0's files are complete
    logger.info(f"done in {time.time() - start:.0f} s; best {cfg.best_metric} {t.best_fitness:.4f}; "
                f"results in {run_dir}")
    return t.best_fitness, run_dir


def start_mlflow(mlflow, cfg, run_dir, ckpt, info):
    """Start the MLflow run on rank 0 (a resumed run continues its own; the other processes log nothing). Its
    failure is handed to every process, which all raise it: none waits forever for rank 0 at the next collective."""
    if not cfg.mlflow_uri:
        return
    error = None
    if info.is_main:
        try:
            mlflow.start(cfg, run_dir, run_id=ckpt.get(RUN_ID_KEY) if ckpt else None)
        except (ValueError, ImportError) as e:
            error = e
    error = broadcast_object(error if info.is_main else None, info)
    if error is not None:
        raise error


def fit_to_budget(cfg, budget, done, info):
    """Set cfg.epochs to what fits in the time budget (rank 0's plan on every process); the lr schedule follows."""
    total, train_s, eval_s = budget.plan(done, cfg.val_interval)
    total = broadcast_object(total, info)
    if total != cfg.epochs:
        logger.info(f"time budget {cfg.time_budget:g} min: {train_s:.1f} s per epoch + {eval_s:.1f} s per evaluation, "
                    f"{budget.elapsed_s() / 60:.1f} min spent -> {total} epochs (planned {cfg.epochs})")
        cfg.epochs = total


def train_one_epoch(t, loaders, cfg, epoch, tb=None):
    """One epoch over the task loaders (one per task), each step training the tasks task_sampling draws for it
    (multitask.py). Returns the epoch's mean loss terms and assignment statistics, and the last lr."""
    model = t.model
    model.train()
    freeze_shared_layers(unwrap(model), epoch, cfg)
    schedule = task_schedule([len(loader) for loader in loaders], cfg.task_sampling, cfg.seed, epoch)
    iters, sums, counts, seen = len(schedule), {}, {}, 0
    boxes_in = boxes_kept = 0  # boxes before / after augmentation: the difference was dropped (crops, tiny, hidden)
    bar = progress(zip(schedule, task_batches(loaders, schedule, epoch)), show=t.dist.is_main, total=iters,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
    tick = time.perf_counter()
    for it, (tasks, batches) in enumerate(bar):
        step = epoch * iters + it  # iteration of the whole run: x-axis of the schedule, multiscale and TensorBoard
        images = [b[0].to(t.device, non_blocking=True) for b in batches]
        targets = [b[1].to(t.device) for b in batches]
        boxes_in += sum(b[3] for b in batches)
        boxes_kept += sum(len(b[1]) for b in batches)
        if cfg.multiscale:
            size = multiscale_size(cfg, step)
            images, targets = map(list, zip(*(resize_batch(x, y, size) for x, y in zip(images, targets))))
        update = (it + 1) % t.accumulate == 0 or it + 1 == iters  # the optimizer steps every `accumulate` batches
        group_size = accumulation_group_size(it, iters, t.accumulate)
        with no_sync_unless(model, update):  # DDP: average gradients over the processes only before an update
            with torch.autocast(t.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
                outputs = forward_tasks(model, images, tasks)
            loss, values, stats = tasks_loss(t, outputs, targets, tasks)
            values = {"loss": finite_or_raise(loss, t.dist, epoch, it), **values}
            # / group size: the summed gradients of the group's batches are those of their mean, as one large batch
            t.scaler.scale(loss / group_size).backward()
        if update:  # a step of one drawn task: its gradient serves that task alone, nothing to average
            optimizer_update(t, cfg.grad_clip, average_shared=len(tasks) > 1)
        lr = t.optimizer.param_groups[0]["lr"]  # the lr this batch used, before the scheduler moves it on
        t.scheduler.step()

        values.update(pos_per_gt=stats["pos_per_gt"], unmatched_pct=stats["unmatched_pct"])
        for k, v in values.items():
            sums.setdefault(k, 0.0), counts.setdefault(k, 0)  # every key from the first step: one column order
            if not math.isnan(v):  # NaN: nothing to average this step (a scale without positives)
                sums[k], counts[k] = sums[k] + v, counts[k] + 1
        seen += sum(len(x) for x in images) * t.dist.world_size
        speed = seen / (time.perf_counter() - tick)
        bar.set_postfix(loss=f"{values['loss']:.3f}", box=f"{values['box']:.3f}", obj=f"{values['obj']:.3f}",
                        cls=f"{values['cls']:.3f}", pos=f"{values['pos_per_gt']:.1f}", lr=f"{lr:.2e}",
                        img_s=f"{speed:.1f}")
        if tb is not None and step % cfg.log_interval == 0:
            tb.scalars({**{k: v for k, v in values.items()
                           if k.startswith(("loss", "box", "obj", "cls", "dfl")) and not math.isnan(v)},
                        "lr": lr, "img_per_s": speed}, step, "train/")
            tb.scalars(stats, step, "assign/")
    boxes_in, boxes_kept = sum_over_ranks([boxes_in, boxes_kept], t.dist)
    dropped_pct = 100.0 * (boxes_in - boxes_kept) / max(boxes_in, 1)
    return {**epoch_means(sums, counts, t.task_names), "lr": lr if iters else float("nan"),
            "boxes_dropped_pct": round(dropped_pct, 2)}


def accumulation_group_size(it, iters, accumulate):
    """How many batches the optimizer update that batch `it` belongs to sums over: `accumulate`, except for the
    last group of an epoch, which holds only the batches left (iters % accumulate of them, when not 0)."""
    last_group_start = (iters // accumulate) * accumulate
    return accumulate if it < last_group_start else iters - last_group_start



def finite_or_raise(loss, info, epoch, it):
    """The loss as a float; every process stops (together, else DDP waits forever) when one of them diverged."""
    value = loss.item()
    if not all_ranks_true(math.isfinite(value), info):
        raise FloatingPointError(f"loss is not finite (this process: {value}) at epoch {epoch + 1}, iteration {it}; "
                                 f"the last saved checkpoint is still good. Lower lr or check the data.")
    return value


def optimizer_update(t, grad_clip, average_shared=True):
    """average_shared: the update's steps trained every task, so each shared parameter gets the mean of the gradients
    of the tasks using it (average_shared_grads); before unscaling and clipping, which then see the averaged ones."""
    for p, num_tasks in t.shared_params if average_shared else ():
        if p.grad is not None:
            p.grad.div_(num_tasks)
    if grad_clip > 0:
        t.scaler.unscale_(t.optimizer)  # clip the true gradients, not the loss-scaled fp16 ones
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), grad_clip)
    t.scaler.step(t.optimizer)  # skipped when fp16 gradients overflowed (the scaler then lowers its scale)
    t.scaler.update()
    t.optimizer.zero_grad(set_to_none=True)
    if t.ema is not None:
        t.ema.update(unwrap(t.model))


def evaluate_epoch(t, loaders, task_cfgs, cfg, tb, step):
    """Evaluate the EMA (or the model) on every task; every process gets rank 0's scores: map50 and map (the mean
    over tasks with several tasks, which best.pt and early stopping rank by) and, per task, map50_<name> ..."""
    results, detections, scores, table = evaluate_tasks(t.eval_model(), loaders, task_cfgs, t.device)
    if results is not None:  # rank 0
        t.evaluation = (results, detections)
        for task_cfg, result in zip(task_cfgs, results):
            logger.info(f"epoch {t.epoch} evaluation of task {task_cfg.task_name}\n{result.table}")
        if len(results) > 1:
            logger.info(f"epoch {t.epoch} mAP per task\n{table}")
        tb.scalars(scores, step, "val/")
        if tb.writer is not None:
            for loader, task_cfg, dets in zip(loaders, task_cfgs, detections):
                grid = prediction_grid(loader.dataset.records, dets, task_cfg.class_names, cfg.predict_conf)
                tb.image(f"val/predictions_{task_cfg.task_name}" if len(loaders) > 1 else "val/predictions", grid, step)
    return broadcast_object(scores, t.dist)


# ------------------------------------------------------------------------------------------------- multiscale
def multiscale_size(cfg, step):
    """The input side for this batch: a multiple of 32 in multiscale_sizes, redrawn every multiscale_interval
    batches. It depends on (seed, step) alone, so all DDP processes agree and a resumed run repeats it."""
    low, high = cfg.multiscale_sizes
    return random.Random(cfg.seed * 1_000_003 + step // cfg.multiscale_interval).randrange(low, high + 1, 32)


def resize_batch(images, targets, size):
    """Resize square (B, 3, S, S) images to size x size and scale the targets' boxes (pixels) with them. Anchors
    stay in pixels: objects simply look larger or smaller, which is the point."""
    if size == images.shape[-1]:
        return images, targets
    scale = size / images.shape[-1]
    images = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    targets = targets.clone()
    targets[:, 2:6] *= scale
    return images, targets
