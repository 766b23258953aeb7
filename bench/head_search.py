"""The 1x1 head vs the hand-made 3x3 tower vs a searched head, each trained from scratch with two seeds, on the
default config and on raccoon at 416 px, as a markdown table; run it in parts, it continues where it stopped.

    python bench/head_search.py [--configs default,raccoon] [--heads conv1x1,tower3x3,searched] [--seeds 0,1]
                                [--dir runs/head_search_bench] [--max_units N] [--table] [--fast] [--field value ...]

Per config (default: configs/my_config.py at 256 px; raccoon: configs/raccoon.py, its 416 px and 15-minute time
budget), in this order, each a unit whose row is appended to <dir>/rows.jsonl as soon as it finishes:
    train conv1x1, first seed     the config's default run: the detector the search starts from (not counted in
                                  the search's time)
    search                        --task search_head on that run's last.pt (cached features; the config's search
                                  fields): wall time, alpha steps/s, how far softmax(alpha) moved, the genotype
    train conv1x1 / tower3x3 / searched, every seed (from scratch, the config's schedule)
    time                          CPU ms per image of the three heads' first-seed models, timed interleaved
A second call skips the units rows.jsonl holds (a unit killed half-way starts again, in a new run folder), so
`--max_units 1` repeated, or --configs / --heads / --seeds, run the bench in parts. --table only prints the table
of the rows so far. Rows: mAP@0.5 and @0.5:0.95 of the last evaluation (raccoon has no third split: its val split
is its test split, judged by the last epoch), params and GFLOPs of the whole model and of the head, train seconds.

The target: on at least one config the searched head >= the 1x1 head + 0.02 mAP@0.5:0.95 with both seeds and >=
the tower3x3 (means), at <= the tower3x3's CPU ms per image, the search within 15 minutes; on the other, no worse
than the 1x1 head (means). --fast: a tiny smoke run of every unit (one seed, the default config shrunk, in a new
folder under runs/).
"""
import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit  # noqa: E402
from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.engine.checkpoint import load_checkpoint  # noqa: E402
from yolo.engine.folders import next_free_dir  # noqa: E402
from yolo.engine.logs import MetricsCSV  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.models.flops import model_info, ms_per_image  # noqa: E402
from yolo.tasks import search_head  # noqa: E402

CONFIGS = {"default": "configs/my_config.py", "raccoon": "configs/raccoon.py"}
# the sizes the documented rows were measured at, said here so that a rerun continues them: the default config at
# 256 px (it ships 320), raccoon at its shipped 416 px
CONFIG_FIELDS = {"default": {"img_size": 256}, "raccoon": {"img_size": 416}}
HEADS = ("conv1x1", "tower3x3", "searched")
# --fast: every unit on a tiny model and dataset, only to check the script runs
FAST_FIELDS = {"img_size": 64, "width": 0.125, "shapes_num_train": 12, "shapes_num_val": 4, "epochs": 1,
               "val_interval": 1, "batch_size": 6, "head_channels": 8, "cell_channels": 4, "search_steps": 3,
               "search_batch_size": 2, "search_genotype_interval": 1, "tensorboard": False, "time_budget": None}
SEARCH_BUDGET_S = 15 * 60
SEARCH_FIELDS = ("search_batch_size", "search_alpha_lr", "search_alpha_weight_decay", "search_order",
                 "search_latency_weight")
TIMING_BATCH, TIMING_ROUNDS = 8, 9


def last_row(run_dir):
    return [r for r in MetricsCSV(Path(run_dir) / "metrics.csv").read() if r["map50"] == r["map50"]][-1]


def cpu_ms_per_image(models, img_size, batch=TIMING_BATCH, rounds=TIMING_ROUNDS):
    """Median ms per image of each model, timed in interleaved rounds (yolo/models/flops.py: ms_per_image)."""
    images = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8)
    return ms_per_image([m.cpu() for m in models], images, rounds)


# ------------------------------------------------------------------------------------------------- units
def plan(heads, seeds):
    """The units of one config, in order: (kind, head, seed). The search and its first-seed 1x1 run come first
    whenever the searched head is asked for."""
    first = seeds[0]
    units = [("train", "conv1x1", first)] if {"conv1x1", "searched"} & set(heads) else []
    units += [("search", "searched", first)] if "searched" in heads else []
    units += [("train", head, seed) for seed in seeds for head in HEADS
              if head in heads and (head, seed) != ("conv1x1", first)]
    return units + [("time", ",".join(h for h in HEADS if h in heads), first)]


def unit_key(config, kind, head, seed):
    return f"{config}|{kind}|{head}|{seed}"


def run_unit(cfg, config, kind, head, seed, rows):
    """Run one unit; returns its row (plain values only)."""
    if kind == "train":
        genotype_file = rows[unit_key(config, "search", "searched", seed_of_search(rows, config))]["genotype_file"] \
            if head == "searched" else None
        return train_head(cfg, config, head, seed, genotype_file)
    if kind == "search":
        return search(cfg, config, seed, rows[unit_key(config, "train", "conv1x1", seed)])
    return timing(cfg, config, head.split(","), seed, rows)


def seed_of_search(rows, config):
    return next(row["seed"] for row in rows.values() if row["config"] == config and row["kind"] == "search")


def train_head(cfg, config, head, seed, genotype_file=None):
    """Train with one head from scratch; its row."""
    run_cfg = copy.copy(cfg)
    run_cfg.head, run_cfg.genotype_file, run_cfg.genotype, run_cfg.seed = head, genotype_file, None, seed
    run_cfg.run_name = f"hs_{config}_{head}_s{seed}"
    run_cfg.finalize()
    start = time.time()
    _, run_dir = train(run_cfg)
    seconds = time.time() - start
    scores = last_row(run_dir)
    info = model_info(build_model(run_cfg), (run_cfg.img_size, run_cfg.img_size))
    return {"map50": scores["map50"], "map": scores["map"], "epochs": int(scores["epoch"]),
            "params": info["total"][0], "head_params": info["heads"][0], "gflops": info["total"][1],
            "head_gflops": info["heads"][1], "train_s": seconds, "run": str(run_dir),
            "config_file": str(Path(run_dir) / "config.json")}


def search(cfg, config, seed, default_run):
    """--task search_head on the config's default run (its last.pt); its row."""
    search_cfg = copy.copy(cfg)
    search_cfg.init_ckpt, search_cfg.seed = str(Path(default_run["run"]) / "last.pt"), seed
    search_cfg.run_name = f"hs_{config}"
    search_cfg.finalize()
    start = time.time()
    _, search_dir = search_head.run(search_cfg)
    seconds = time.time() - start
    history = load_checkpoint(search_dir / "alphas.pt")
    steps = int(history["steps"][-1])
    moved = max(float((history[t][-1] - history[t][0]).abs().max()) for t in ("box", "cls"))
    text = (search_dir / "genotype.txt").read_text()
    return {"search_s": seconds, "alpha_steps": steps, "alpha_steps_per_s": steps / float(history["search_s"]),
            "moved": moved, "genotype_file": str(search_dir / "genotype.txt"),
            "genotype": [line for line in text.splitlines() if not line.startswith("#")], "run": str(search_dir),
            # what the search ran with, as its defaults change: rows of other settings stay told apart
            **{field: getattr(search_cfg, field) for field in SEARCH_FIELDS}}


def timing(cfg, config, heads, seed, rows):
    """CPU ms per image of each head's first-seed model, interleaved; its row."""
    models = []
    for head in heads:
        run_cfg = copy.copy(cfg)
        saved = json.loads(Path(rows[unit_key(config, "train", head, seed)]["config_file"]).read_text())
        run_cfg.head, run_cfg.genotype, run_cfg.genotype_file = head, saved.get("genotype"), None
        models.append(build_model(run_cfg.finalize()))  # the weights do not change the time
    ms = cpu_ms_per_image(models, cfg.img_size)
    return {"ms": dict(zip(heads, ms)), "threads": torch.get_num_threads(), "batch": TIMING_BATCH,
            "rounds": TIMING_ROUNDS}


# ------------------------------------------------------------------------------------------------- rows and table
def read_rows(path):
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[unit_key(row["config"], row["kind"], row["head"], row["seed"])] = row
    return rows


def append_row(path, row):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def table(rows):
    """The markdown table of every config's rows so far, and the target per config."""
    sections = []
    for config in dict.fromkeys(row["config"] for row in rows.values()):
        mine = [row for row in rows.values() if row["config"] == config]
        trained = {head: sorted((r for r in mine if r["kind"] == "train" and r["head"] == head),
                                key=lambda r: r["seed"]) for head in HEADS}
        ms = next((r["ms"] for r in mine if r["kind"] == "time"), {})
        found = next((r for r in mine if r["kind"] == "search"), None)
        header = ("| head | seeds | mAP@0.5 mean (each) | mAP@0.5:0.95 mean (each) | params (M) | head params (k) | "
                  "GFLOPs | CPU ms/img | train s | search s |")
        lines = [f"### {config}", "", header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for head, runs in trained.items():
            if runs:
                lines.append(table_row(head, runs, ms.get(head), found if head == "searched" else None))
        timed = next((r for r in mine if r["kind"] == "time"), None)
        if timed:
            lines.append(f"\nCPU ms/img: batch {timed['batch']}, threads {timed['threads']}, the median of "
                         f"{timed['rounds']} rounds timed interleaved")
        if found:
            lines.append(f"\nsearch: {found['alpha_steps']} alpha steps, {found['alpha_steps_per_s']:.2f} alpha "
                         f"steps/s, {found['search_s']:.0f} s in all; the largest change of a softmax(alpha) "
                         f"weight: {found['moved']:.4f}; genotype:\n```\n" + "\n".join(found["genotype"]) + "\n```")
        lines.append(verdict(trained, ms, found))
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def table_row(head, runs, ms, found):
    def scores(key):
        values = [r[key] for r in runs]
        return f"{np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"
    r = runs[0]
    return (f"| {head} | {', '.join(str(x['seed']) for x in runs)} | {scores('map50')} | {scores('map')} | "
            f"{r['params'] / 1e6:.2f} | {r['head_params'] / 1e3:.1f} | {r['gflops']:.3f} | "
            f"{'' if ms is None else f'{ms:.1f}'} | {np.mean([x['train_s'] for x in runs]):.0f} | "
            f"{'' if found is None else round(found['search_s'])} |")


def verdict(trained, ms, found):
    """The bench's target on this config, or what is missing to judge it."""
    base, tower, searched = (trained[h] for h in HEADS)
    seeds = [r["seed"] for r in searched]
    if not (base and tower and searched and ms and found) or [r["seed"] for r in base] != seeds:
        return "\ntarget: not judged yet (every head with the same seeds, the timing and the search are needed)"
    gains = [s["map"] - b["map"] for s, b in zip(searched, base)]
    mean = {h: np.mean([r["map"] for r in trained[h]]) for h in HEADS}
    strong = (min(gains) >= 0.02 and mean["searched"] >= mean["tower3x3"] and ms["searched"] <= ms["tower3x3"]
              and found["search_s"] <= SEARCH_BUDGET_S)
    return (f"\ntarget: searched - 1x1 mAP@0.5:0.95 per seed {', '.join(f'{g:+.3f}' for g in gains)} (>= +0.02 "
            f"each), mean vs tower3x3 {mean['searched'] - mean['tower3x3']:+.3f} (>= 0), CPU ms "
            f"{ms['searched']:.1f} vs tower3x3 {ms['tower3x3']:.1f} (<=), search {found['search_s']:.0f} s (<= "
            f"{SEARCH_BUDGET_S}): {'met' if strong else 'NOT met'}; no worse than the 1x1 head (means): "
            f"{'yes' if mean['searched'] >= mean['conv1x1'] else 'no'}")


# ------------------------------------------------------------------------------------------------- main
def config_of(name, args, overrides, folder):
    cfg = load_config(CONFIGS[name])
    for key, value in {**CONFIG_FIELDS.get(name, {}), **(FAST_FIELDS if args.fast else {})}.items():
        setattr(cfg, key, value)
    if args.fast:  # everything in the bench's own folder
        cfg.data_root, cfg.runs_dir, cfg.cache_images, cfg.num_workers = str(folder / "data"), str(folder / "runs"), \
            True, 0
    cfg = apply_overrides(cfg, overrides)
    if cfg.dataset != "shapes" and not Path(cfg.data_root).is_dir():
        raise FileNotFoundError(f"{CONFIGS[name]}: data_root {cfg.data_root} does not exist; leave the config out "
                                f"(--configs default) or give --data_root")
    return cfg.finalize()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="default,raccoon", help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--dir", default=None, help="rows.jsonl and table.md (default runs/head_search_bench; "
                                                     "--fast: a new runs/head_search_bench_fast folder)")
    parser.add_argument("--max_units", type=int, default=None, help="stop after this many units (run in parts)")
    parser.add_argument("--table", action="store_true", help="only print the table of the rows so far")
    parser.add_argument("--fast", action="store_true", help="a tiny run of every unit, to check the script works")
    args, overrides = parser.parse_known_args()
    heads = args.heads.split(",")
    configs = ["default"] if args.fast and args.configs == "default,raccoon" else args.configs.split(",")
    seeds = [0] if args.fast and args.seeds == "0,1" else [int(s) for s in args.seeds.split(",")]
    unknown = [c for c in configs if c not in CONFIGS] + [h for h in heads if h not in HEADS]
    if unknown:
        parser.error(f"unknown config or head {unknown[0]!r}")
    folder = Path(args.dir) if args.dir else next_free_dir("runs/head_search_bench_fast") if args.fast \
        else Path("runs/head_search_bench")
    rows_path = folder / "rows.jsonl"
    rows = read_rows(rows_path)
    done_now = 0
    for config in [] if args.table else configs:
        cfg = None
        for kind, head, seed in plan(heads, seeds):
            key = unit_key(config, kind, head, seed)
            if key in rows:
                continue
            if args.max_units is not None and done_now >= args.max_units:
                break
            cfg = cfg or config_of(config, args, overrides, folder)
            print(f"== {key}", flush=True)
            row = {"config": config, "kind": kind, "head": head, "seed": seed,
                   **run_unit(copy.copy(cfg), config, kind, head, seed, rows)}
            append_row(rows_path, row)
            rows[key] = row
            done_now += 1
    text = table(rows)
    emit(text + f"\n\nrows: {rows_path}", folder / "table.md")


if __name__ == "__main__":
    main()
