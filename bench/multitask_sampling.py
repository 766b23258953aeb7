"""Multi-task sampling and class-balanced drawing, measured: two markdown tables, every row written as it finishes.

    python bench/multitask_sampling.py [--out runs/bench_multitask_sampling] [--config configs/my_config.py]
                                       [--seeds 0 1] [--sampling_seeds 0] [--smoke] [--field value ...]

Part 1, task_sampling: two built-in tasks of unequal size -- shapes (circle / square / triangle, 1000 train images)
and symbols (star / cross / ring, 250) -- trained as one model (neck split after layer 2) with task_sampling all,
proportional and balanced, the config's epochs and schedule each: mAP@0.5 (0.5:0.95) per task at the end, steps per
epoch, batches trained and train time.
Part 2, class_balanced: one skewed built-in task (shapes_class_weights [1, 1, 0.1]: triangles 10 x rarer than circles
and squares, train and val alike), trained with class_balanced off and on, for each of --seeds: AP@0.5 of the rare
class (per_class.csv of the final evaluation) and the mAP@0.5.

Everything goes under --out (a new folder, or one this script made): the data in data/ (generated once), the runs
in runs/, one JSON line per finished run in rows.jsonl and the tables in table.md, rewritten after every row. A
rerun skips the rows already in rows.jsonl and resumes a run stopped midway from its last.pt, so the bench can be
stopped and started again. Every field can be overridden (--device cuda, --epochs 7 ...); the evaluation is the
last epoch's (val_interval = epochs). --smoke: 64 px, a few images, 1 epoch: checks the plumbing, measures nothing.
"""
import argparse
import copy
import csv
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.engine.folders import numbered_dirs  # noqa: E402
from yolo.engine.logs import MetricsCSV  # noqa: E402
from yolo.engine.multitask import steps_per_epoch  # noqa: E402
from yolo.engine.schedules import iterations_per_epoch  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402

SAMPLINGS = ("all", "proportional", "balanced")
SKEW = [1.0, 1.0, 0.1]           # the third class (triangle) 10 x rarer
SIZES = dict(shapes=1000, symbols=250, skewed=1000, val=200, skewed_val=400)
SMOKE = ["--img_size", "64", "--width", "0.25", "--batch_size", "4", "--epochs", "1", "--num_workers", "0",
         "--cache_images", "false"]
SMOKE_SIZES = dict(shapes=8, symbols=4, skewed=8, val=4, skewed_val=4)


def two_task_config(base, data, sizes, sampling, seed):
    cfg = copy.copy(base)
    cfg.tasks = [dict(name="shapes", data_root=str(data / "shapes"), shapes_num_train=sizes["shapes"]),
                 dict(name="symbols", data_root=str(data / "symbols"), class_names=["star", "cross", "ring"],
                      shapes_seed=1, shapes_num_train=sizes["symbols"])]
    cfg.branching, cfg.task_weights, cfg.task_sampling = [[2, [[0], [1]]]], [1.0, 1.0], sampling
    cfg.shapes_num_val, cfg.seed = sizes["val"], seed
    return cfg


def skewed_config(base, data, sizes, balanced, seed):
    cfg = copy.copy(base)
    cfg.data_root, cfg.class_names = str(data / "skewed"), ["circle", "square", "triangle"]
    cfg.shapes_class_weights = SKEW
    cfg.shapes_num_train, cfg.shapes_num_val = sizes["skewed"], sizes["skewed_val"]
    cfg.class_balanced, cfg.seed = balanced, seed
    return cfg


def run(cfg, runs, key):
    """Train cfg as run `key`, resuming its newest folder's last.pt when a previous attempt stopped midway."""
    cfg = copy.copy(cfg)
    cfg.runs_dir, cfg.run_name, cfg.val_interval, cfg.tensorboard = str(runs), key, cfg.epochs, False
    stopped = [d / "last.pt" for d in numbered_dirs(runs / key) if (d / "last.pt").is_file()]
    if stopped:
        cfg.resume, cfg.resume_path = True, str(stopped[-1])
    _, run_dir = train(cfg.finalize())
    return run_dir, MetricsCSV(run_dir / "metrics.csv").read()[-1]


def rare_class_ap50(run_dir, rare):
    with open(Path(run_dir) / "per_class.csv") as f:
        return next(float(r["ap50"]) for r in csv.DictReader(f) if r["class"] == rare)


def measure(job, base, out, sizes):
    """One finished row for job = (part, setting, seed)."""
    part, setting, seed = job
    key = f"{part}_{str(setting).lower()}_seed{seed}"
    if part == "sampling":
        run_dir, last = run(two_task_config(base, out / "data", sizes, setting, seed), out / "runs", key)
        scores = {k: last[k] for k in last if k.startswith(("map50_", "map_"))}
        return dict(part=part, sampling=setting, seed=seed, **scores, time_s=last["time_s"], run=str(run_dir),
                    steps_per_epoch=steps_of(sizes, setting, base.batch_size))
    run_dir, last = run(skewed_config(base, out / "data", sizes, setting, seed), out / "runs", key)
    return dict(part=part, class_balanced=setting, seed=seed, rare_ap50=rare_class_ap50(run_dir, "triangle"),
                map50=last["map50"], map=last["map"], time_s=last["time_s"], run=str(run_dir))


def steps_of(sizes, sampling, batch_size):
    """Steps per epoch of the two-task run (one process)."""
    passes = [iterations_per_epoch(sizes[name], batch_size) for name in ("shapes", "symbols")]
    return steps_per_epoch(passes, sampling)


def tables(rows, base):
    sampling = [r for r in rows if r["part"] == "sampling"]
    skewed = [r for r in rows if r["part"] == "class_balanced"]
    lines = [f"{base.backbone} x{base.width}, {base.img_size} px, {base.epochs} epochs, batch {base.batch_size}, "
             f"device {base.device}", "", "| task_sampling | seed | shapes mAP@0.5 (0.5:0.95) | symbols mAP@0.5 "
             "(0.5:0.95) | mean mAP@0.5 | steps per epoch | train time (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sampling:
        mean = (r["map50_shapes"] + r["map50_symbols"]) / 2
        lines.append(f"| {r['sampling']} | {r['seed']} | {r['map50_shapes']:.3f} ({r['map_shapes']:.3f}) | "
                     f"{r['map50_symbols']:.3f} ({r['map_symbols']:.3f}) | {mean:.3f} | {r['steps_per_epoch']} | "
                     f"{r['time_s']:.0f} |")
    lines += ["", "| class_balanced | seed | rare class (triangle) AP@0.5 | mAP@0.5 | mAP@0.5:0.95 | train time (s) |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in skewed:
        lines.append(f"| {r['class_balanced']} | {r['seed']} | {r['rare_ap50']:.3f} | {r['map50']:.3f} | "
                     f"{r['map']:.3f} | {r['time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_multitask_sampling"))
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="class_balanced runs: one per seed")
    parser.add_argument("--sampling_seeds", type=int, nargs="+", default=[0], help="task_sampling runs: one per seed")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a test of the script, not a measurement")
    args, overrides = parser.parse_known_args()
    base = apply_overrides(load_config(args.config), (SMOKE if args.smoke else []) + overrides).finalize()
    sizes = SMOKE_SIZES if args.smoke else SIZES
    rows_path = args.out / "rows.jsonl"
    ours = ("data", "runs", "rows.jsonl", "table.md")
    if args.out.exists() and any(p.name not in ours for p in args.out.iterdir()):
        sys.exit(f"error: {args.out} holds files this bench did not write; give a new --out folder")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    jobs = ([("sampling", s, seed) for seed in args.sampling_seeds for s in SAMPLINGS]
            + [("class_balanced", b, seed) for seed in args.seeds for b in (False, True)])
    done = {(r["part"], r.get("sampling", r.get("class_balanced")), r["seed"]) for r in rows}
    for job in jobs:
        if job in done:
            print(f"{job}: already measured in {rows_path}")
            continue
        row = measure(job, base, args.out, sizes)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
        (args.out / "table.md").write_text(tables(rows, base))
    (args.out / "table.md").write_text(tables(rows, base))
    print(tables(rows, base))


if __name__ == "__main__":
    main()
