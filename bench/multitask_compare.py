"""One multi-task model vs one single-task model per task, under the same budget, as a markdown table.

    python bench/multitask_compare.py [--config configs/multitask_shapes.py] [--out FILE] [--field value ...]

Trains, with the config's schedule and data: a single-task model on each task alone, then the multi-task model on
all tasks (each step one batch per task, so every model sees each of its datasets for the same number of epochs).
Reports for each the mAP per task at the last epoch, and for "all tasks" the params, GFLOPs and CPU inference time
of one image batch through every task: the single-task models one after the other vs one multi-task forward
(task=None, shared blocks run once). Runs go to <runs_dir>/compare_*.
"""
import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import emit  # noqa: E402
from yolo.config import apply_overrides, load_config, task_configs  # noqa: E402
from yolo.engine.logs import MetricsCSV  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.models.flops import count_params, model_info  # noqa: E402


def last_row(run_dir):
    """The last evaluated row of a run's metrics.csv."""
    return [r for r in MetricsCSV(Path(run_dir) / "metrics.csv").read() if r["map50"] == r["map50"]][-1]


def last_scores(run_dir, task_names):
    """(mAP@0.5, mAP@0.5:0.95) per task at the last evaluation of a run."""
    row = last_row(run_dir)
    if len(task_names) == 1:
        return [(row["map50"], row["map"])]
    return [(row[f"map50_{name}"], row[f"map_{name}"]) for name in task_names]


@torch.inference_mode()
def inference_ms(models_and_tasks, img_size, batch=8, repeats=7):
    """Median wall time (ms) of running every (model, task) on one batch of `batch` images."""
    images = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8)
    for model, task in models_and_tasks:
        model.eval()(images, task=task)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for model, task in models_and_tasks:
            model(images, task=task)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/multitask_shapes.py")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table to this file")
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides).finalize()
    tasks = task_configs(cfg)
    if len(tasks) < 2:
        sys.exit(f"error: {args.config} has {len(tasks)} task; the comparison needs a config with several `tasks`")

    singles = []
    for task in tasks:
        single = copy.copy(task)
        single.run_name = f"compare_single_{task.task_name}"
        single.finalize()
        _, run_dir = train(single)
        singles.append((single, run_dir))
    multi = copy.copy(cfg)
    multi.run_name = "compare_multitask"
    multi.finalize()
    _, multi_dir = train(multi)

    single_scores = [last_scores(run_dir, [task.task_name])[0] for _, run_dir in singles]
    multi_scores = last_scores(multi_dir, cfg.task_names)
    torch.manual_seed(0)
    single_models = [build_model(single) for single, _ in singles]
    multi_model = build_model(multi)
    size = (cfg.img_size, cfg.img_size)
    single_params = sum(count_params(m) for m in single_models)
    single_gflops = sum(model_info(m, size)["total"][1] for m in single_models)
    multi_gflops = model_info(multi_model, size)["total"][1]
    single_ms = inference_ms([(m, 0) for m in single_models], cfg.img_size)
    multi_ms = inference_ms([(multi_model, None)], cfg.img_size)

    names = list(cfg.task_names)
    lines = [f"{cfg.backbone} x{cfg.width}, {cfg.img_size} px, {cfg.epochs} epochs, branching {cfg.branching}, "
             f"task weights {cfg.task_weights}; CPU inference: one batch of 8 through every task, "
             f"{torch.get_num_threads()} threads, median of 7",
             "",
             "| model | " + " | ".join(f"{n} mAP@0.5 (0.5:0.95)" for n in names)
             + " | params all tasks (M) | GFLOPs all tasks | CPU ms all tasks | train time (s) |",
             "|---|" + "---:|" * (len(names) + 4)]
    single_train_s = " + ".join(f"{last_row(run_dir)['time_s']:.0f}" for _, run_dir in singles)
    cells = [f"{m50:.3f} ({m:.3f})" for m50, m in single_scores]
    lines.append(f"| {len(names)} single-task models | " + " | ".join(cells)
                 + f" | {single_params / 1e6:.2f} | {single_gflops:.2f} | {single_ms:.0f} | {single_train_s} |")
    cells = [f"{m50:.3f} ({m:.3f})" for m50, m in multi_scores]
    lines.append("| one multi-task model | " + " | ".join(cells)
                 + f" | {count_params(multi_model) / 1e6:.2f} | {multi_gflops:.2f} | {multi_ms:.0f}"
                 + f" | {last_row(multi_dir)['time_s']:.0f} |")
    text = "\n".join(lines)
    emit(text, args.out)


if __name__ == "__main__":
    main()
