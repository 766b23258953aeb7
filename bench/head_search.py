"""The 1x1 head vs a hand-made 3x3 tower vs a searched head, trained alike on the built-in data, as a markdown table.

    python bench/head_search.py [--config configs/my_config.py] [--out FILE] [--fast] [--field value ...]

Runs, with the config's model and schedule (plus BENCH_FIELDS, then the command-line fields): training with
head conv1x1, training with head tower3x3, --task search_head, then training with head searched on the genotype it
wrote. Reports per head mAP@0.5 and @0.5:0.95 at the last epoch, params and GFLOPs of the whole model (and of
the head), CPU inference ms per image (batch 8, median of 7, this process's threads), and the wall time of the
training (and of the search). The target: searched >= conv1x1 + 0.02 mAP@0.5 at <= 1.3x its GFLOPs, the search
plus its training within 15 minutes of a 2-core CPU. Runs go to <runs_dir>/hs_*; data to data/shapes_hs_<n>.
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
from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.engine.logs import MetricsCSV  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.models.flops import model_info  # noqa: E402
from yolo.tasks import search_head  # noqa: E402

# a budget a learner's 2-core CPU affords: the search and the searched head's training together in about 15 minutes
BENCH_FIELDS = {"img_size": 160, "shapes_num_train": 800, "shapes_num_val": 200, "epochs": 8, "val_interval": 8,
                "search_epochs": 2, "tensorboard": False, "batch_size": 16}
FAST_FIELDS = {"img_size": 64, "width": 0.125, "shapes_num_train": 12, "shapes_num_val": 4, "epochs": 1,
               "val_interval": 1, "search_epochs": 1, "batch_size": 6, "head_channels": 8, "cell_channels": 4}


def last_row(run_dir):
    return [r for r in MetricsCSV(Path(run_dir) / "metrics.csv").read() if r["map50"] == r["map50"]][-1]


@torch.inference_mode()
def cpu_ms_per_image(models, img_size, batch=8, rounds=7):
    """Median ms per image of each model, timed in interleaved rounds (model 1, 2, 3, 1, 2, 3 ...) so a change in
    the machine's load hits all of them alike."""
    images = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8)
    models = [m.cpu().eval() for m in models]
    times = [[] for _ in models]
    for m in models:
        m(images)  # warm-up
    for _ in range(rounds):
        for m, t in zip(models, times):
            start = time.perf_counter()
            m(images)
            t.append(1000 * (time.perf_counter() - start) / batch)
    return [statistics.median(t) for t in times]


def train_head(cfg, head, genotype_file=None):
    """Train with one head; returns its table row values."""
    run_cfg = copy.copy(cfg)
    run_cfg.head, run_cfg.genotype_file, run_cfg.genotype = head, genotype_file, None
    run_cfg.run_name = f"hs_{head}"
    run_cfg.finalize()
    start = time.time()
    _, run_dir = train(run_cfg)
    seconds = time.time() - start
    row = last_row(run_dir)
    model = build_model(run_cfg)
    info = model_info(model, (cfg.img_size, cfg.img_size))
    return {"head": head, "map50": row["map50"], "map": row["map"], "params": info["total"][0],
            "head_params": info["heads"][0], "gflops": info["total"][1], "head_gflops": info["heads"][1],
            "model": model, "train_s": seconds, "run": run_dir}


def existing_row(cfg, head):
    """The row of an earlier run <runs_dir>/hs_<head> (its scores and wall time as that run logged them)."""
    run_dir = Path(cfg.runs_dir) / f"hs_{head}"
    row = last_row(run_dir)
    run_cfg = copy.copy(cfg)
    run_cfg.head = head
    model = build_model(run_cfg.finalize())
    info = model_info(model, (cfg.img_size, cfg.img_size))
    return {"head": f"{head} (earlier run)", "map50": row["map50"], "map": row["map"], "params": info["total"][0],
            "head_params": info["heads"][0], "gflops": info["total"][1], "head_gflops": info["heads"][1],
            "model": model, "train_s": row["time_s"], "run": run_dir}


def table(rows, search_s, cfg):
    base = rows[0]
    lines = [f"{cfg.backbone} x{cfg.width}, {cfg.img_size} px, {cfg.shapes_num_train} train / {cfg.shapes_num_val} val "
             f"images, {cfg.epochs} epochs; search {cfg.search_epochs} epochs ({cfg.search_alpha_split} alphas); "
             f"{torch.get_num_threads()} threads",
             "| head | mAP@0.5 | mAP@0.5:0.95 | params (M) | head params (k) | GFLOPs | x 1x1 GFLOPs | CPU ms/img | "
             "train s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['head']} | {r['map50']:.3f} | {r['map']:.3f} | {r['params'] / 1e6:.2f} | "
                     f"{r['head_params'] / 1e3:.1f} | {r['gflops']:.3f} | {r['gflops'] / base['gflops']:.2f} | "
                     f"{r['ms']:.1f} | {r['train_s']:.0f} |")
    searched = rows[-1]
    gain = searched["map50"] - base["map50"]
    ok = gain >= 0.02 and searched["gflops"] <= 1.3 * base["gflops"]
    lines.append(f"\nsearch {search_s:.0f} s + searched training {searched['train_s']:.0f} s = "
                 f"{search_s + searched['train_s']:.0f} s; searched - 1x1 mAP@0.5 = {gain:+.3f} at "
                 f"{searched['gflops'] / base['gflops']:.2f}x GFLOPs: target (>= +0.02 at <= 1.3x) "
                 f"{'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--fast", action="store_true", help="a tiny run that only checks the script works")
    parser.add_argument("--searched_only", action="store_true",
                        help="only search + train the searched head (e.g. another search_alpha_lr); the 1x1 row "
                             "then comes from <runs_dir>/hs_conv1x1 of an earlier run")
    args, overrides = parser.parse_known_args()
    cfg = load_config(args.config)
    for key, value in {**BENCH_FIELDS, **(FAST_FIELDS if args.fast else {})}.items():
        setattr(cfg, key, value)
    cfg.data_root, cfg.cache_images, cfg.num_workers = None, True, 0
    cfg = apply_overrides(cfg, overrides)
    if cfg.data_root is None:  # a dataset of its own size (the generator never reuses a folder of another size)
        cfg.data_root = f"data/shapes_hs_{cfg.shapes_num_train}_{cfg.shapes_num_val}"
    cfg.finalize()

    rows = [existing_row(cfg, "conv1x1")] if args.searched_only else [train_head(cfg, "conv1x1"),
                                                                       train_head(cfg, "tower3x3")]
    start = time.time()
    search_cfg = copy.copy(cfg)
    search_cfg.run_name = f"hs_lr{cfg.search_alpha_lr:g}" if args.searched_only else "hs"
    _, search_dir = search_head.run(search_cfg)
    search_s = time.time() - start
    rows.append(train_head(cfg, "searched", str(search_dir / "genotype.txt")))
    for row, ms in zip(rows, cpu_ms_per_image([r["model"] for r in rows], cfg.img_size)):
        row["ms"] = ms
    text = table(rows, search_s, cfg)
    text += "\ngenotype:\n" + "\n".join(line for line in (search_dir / "genotype.txt").read_text().splitlines()
                                        if not line.startswith("#"))
    emit(text, args.out)


if __name__ == "__main__":
    main()
