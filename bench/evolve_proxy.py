"""Does evolution pay for itself? Proxy-vs-full rank correlation, a time-boxed search, its winner against the start.

The proxy part ranks ~10 configs by a cheap proxy's fitness and by the full run's; the search starts from the default
config with its class-loss gain at BaseConfig's 0.5; its winner is trained like the default run with three seeds.

    python bench/evolve_proxy.py proxy   [--configs 10]      # Spearman rank correlation: proxy vs full fitness
    python bench/evolve_proxy.py search  [--minutes 45]      # the search (proxy trials + confirmation)
    python bench/evolve_proxy.py target  [--seeds 0,1,2]     # start vs winner (vs the hand-made cls_weight 2)
    python bench/evolve_proxy.py raccoon [--minutes 45]      # the same search on raccoon, scored once on test
    python bench/evolve_proxy.py report                      # the tables of what is done so far
    python bench/evolve_proxy.py all --smoke                 # every part at toy size (a minute): checks the script

Every training writes one row to <out>/rows.csv as it finishes; a part run again skips the rows it has (a killed
run is trained again), the search resumes its evolve.csv. The start is configs/my_config.py at 256 px (the default run's
5 epochs, 2,000 images) with --cls_weight 0.5; a proxy is the same config with fewer epochs and a fixed subset of
the images (train_images, val_images: the same images whatever the seed). Fitness = 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95
of the last evaluation; the target is on mAP@0.5 (winner - start >= +0.05 on the mean and on every seed).
"""
import argparse
import csv
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402
from yolo.research.evolve import (append_csv_row, apply_genes, fitness, mutate, read_history,  # noqa: E402
                                  search_space, start_genes)
from yolo.research.rsa import rank_correlation  # noqa: E402

# at 256 px, the size the tables of docs/evolve.md were measured at (configs/my_config.py ships 320 px)
HANDMADE = ["--config", "configs/my_config.py", "--img_size", "256"]  # cls_weight 2: the hand-made change
DEFAULT = [*HANDMADE, "--cls_weight", "0.5"]                           # the start: BaseConfig's class-loss gain
RACCOON = ["--config", "configs/raccoon.py"]
RACCOON_SEARCH = ["--val_from_train", "0.2", "--time_budget", "None", "--epochs", "15"]  # tuned on a part of train
# the proxies measured (docs/evolve.md); the last, five epochs on a fixed half of the images, ranks like the full run
# and is the search's. Scored with plain NMS, as the full-run rows of the proxy part were
PROXIES = ["epochs=2,train_images=500,val_images=100", "epochs=5,train_images=400,val_images=100",
           "epochs=3,train_images=1000,val_images=200", "img_size=160,nms_merge=false",
           "epochs=5,train_images=1000,val_images=200,nms_merge=false"]
SMOKE = ["--shapes_num_train", "24", "--shapes_num_val", "8", "--img_size", "64", "--width", "0.25", "--batch_size",
         "8", "--epochs", "1", "--num_workers", "0"]


# ------------------------------------------------------------------------------------------------- configs
def proxy_overrides(spec):
    """'epochs=2,train_images=500' -> ['--epochs', '2', '--train_images', '500']; '' -> [] (the full run)."""
    pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
    return [x for key, value in pairs for x in (f"--{key.strip()}", value.strip())]


def make_config(args, base, extra=(), genes=None):
    """A config, not yet finalized: base (["--config", path, overrides...]), the smoke sizes under --smoke, the extra
    overrides, then the genes."""
    smoke = [*SMOKE, "--data_root", str(args.out / "smoke_data" / "shapes")] if args.smoke else []
    cfg = apply_overrides(load_config(ROOT / base[1]), [*base[2:], *smoke, *extra])
    return apply_genes(cfg, genes or {})


# ------------------------------------------------------------------------------------------------- rows.csv
def read_rows(out):
    path = out / "rows.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def find_row(out, part, name, seed, proxy):
    return next((r for r in read_rows(out) if (r["part"], r["name"], r["seed"], r["proxy"]) ==
                 (part, name, str(seed), proxy)), None)


def train_row(args, part, name, seed, proxy, cfg):
    """Train cfg with `seed` (unless rows.csv has this row) and append its row; returns the row."""
    done = find_row(args.out, part, name, seed, proxy)
    if done:
        return done
    run_dir = args.out / "runs" / part / f"{name}_{proxy or 'full'}_seed{seed}".replace("=", "").replace(",", "_")
    if run_dir.exists():  # a run of this bench killed before its row: trained again
        shutil.rmtree(run_dir)
    cfg.seed, cfg.runs_dir, cfg.run_name = seed, str(run_dir.parent), run_dir.name
    cfg.task, cfg.resume, cfg.tensorboard, cfg.eval_artifacts = "train", False, False, False
    if cfg.time_budget is None:
        cfg.val_interval = cfg.epochs  # one evaluation, at the end: what is compared
    cfg.finalize()
    evaluated = []
    tick = time.time()
    train(cfg, on_epoch=lambda row: evaluated.append(row) if row["map50"] == row["map50"] else None)
    last = evaluated[-1]
    row = {"part": part, "name": name, "seed": seed, "proxy": proxy,
           "fitness": repr(fitness({"map50": last["map50"], "map": last["map"]})), "map50": repr(last["map50"]),
           "map": repr(last["map"]), "time_s": round(time.time() - tick, 1), "run": str(run_dir)}
    append_csv_row(args.out / "rows.csv", row)
    print(f"{part} {name} seed {seed} {proxy or 'full'}: fitness {float(row['fitness']):.4f}, mAP@0.5 "
          f"{last['map50']:.3f} in {row['time_s']} s", flush=True)
    return row


# ------------------------------------------------------------------------------------------------- proxy part
def proxy_configs(args, cfg):
    """[(name, genes)]: the start, the hand-made cls_weight 2, then seeded 3-step mutations of the start (as a
    search would visit, a little wider); kept in <out>/proxy_configs.json so a rerun trains the same ones."""
    path = args.out / "proxy_configs.json"
    if path.exists():
        return [tuple(c) for c in json.loads(path.read_text())]
    space = search_space(cfg, None)
    start = start_genes(cfg, space)
    configs = [("start", start), ("cls_weight_2", {**start, "cls_weight": 2.0})]
    rng = np.random.default_rng([args.seed, 2024])
    while len(configs) < args.configs:
        child = start
        for _ in range(3):
            child = mutate(child, space, rng)
        configs.append((f"mutant{len(configs) - 1}", child))
    configs = configs[:args.configs]
    path.write_text(json.dumps(configs, indent=1))
    return configs


def part_proxy(args):
    plain_nms = ["--nms_merge", "false"]  # the proxy table (docs/evolve.md) is scored with plain NMS, full runs too
    for name, genes in proxy_configs(args, make_config(args, DEFAULT)):
        for proxy in ["", *args.proxies]:
            cfg = make_config(args, DEFAULT, [*plain_nms, *proxy_overrides(proxy)], genes)
            train_row(args, "proxy", name, args.seed, proxy, cfg)


def spearman(x, y):
    """Spearman's rank correlation (yolo.research.rsa: ties get their mean rank); nan with fewer than 3 pairs."""
    return rank_correlation(x, y) if len(x) > 2 else math.nan


# ------------------------------------------------------------------------------------------------- search parts
def part_search(args, base=DEFAULT, name="search", search_extra=()):
    """A search of at most args.minutes (trials and their confirmation), one generation per call of the command so
    the clock is checked between trials; then the confirmation. Returns the winner's genes."""
    from yolo.tasks.evolve import run as evolve

    folder = args.out / f"{name}_evolve"
    if folder.exists() and not (folder / "evolve.csv").exists():  # killed during generation 1
        shutil.rmtree(folder)
    extra = [*search_extra, *proxy_overrides(args.proxy if base is DEFAULT else "")]
    cfg = make_config(args, base, extra)
    space = search_space(cfg, args.genes or None)

    def call(generations, confirm_seeds):
        c = make_config(args, base, extra)
        c.task, c.runs_dir, c.run_name, c.seed = "evolve", str(args.out), name, args.seed
        c.evolve_params, c.evolve_generations, c.evolve_confirm_seeds = args.genes or None, generations, confirm_seeds
        c.evolve_confirm_top, c.resume = args.confirm_top, (folder / "evolve.csv").exists()
        return evolve(c.finalize())

    while True:
        history = read_history(folder / "evolve.csv", space) if (folder / "evolve.csv").exists() else []
        spent = sum(float(r.extra.get("time_s", 0)) for r in history)
        per_trial = spent / len(history) if history else 0.0
        confirm_s = per_trial * args.confirm_seeds * (args.confirm_top + 1)
        if history and (len(history) >= args.max_generations or spent + per_trial + confirm_s > args.minutes * 60):
            break
        call(len(history) + 1, 0)
    best = call(len(history), args.confirm_seeds)
    confirm_rows = list(csv.DictReader((folder / "confirm.csv").open(newline=""))) if args.confirm_seeds else []
    total = spent + sum(float(r.get("time_s") or 0) for r in confirm_rows)
    print(f"{name}: {len(history)} generations, {total / 60:.1f} min with the confirmation; winner generation "
          f"{best.generation}; {folder / 'confirm.md'}", flush=True)
    return {g: best.genes[g] for g in space}


def winner_name(args):
    """The rows of a search's winner: "winner" for the default search, winner_<name> for another (--search_name)."""
    return "winner" if args.search_name == "search" else f"winner_{args.search_name}"


def part_target(args):
    genes = part_search(args, name=args.search_name)
    for seed in args.seeds:
        train_row(args, "target", "start", seed, "", make_config(args, DEFAULT))
        train_row(args, "target", winner_name(args), seed, "", make_config(args, DEFAULT, genes=genes))
        train_row(args, "target", "handmade", seed, "", make_config(args, HANDMADE))


def part_raccoon(args):
    if args.smoke:
        print("raccoon: left out of --smoke (it needs ../shared/data/raccoon and minutes per training)")
        return
    cfg = make_config(args, RACCOON)
    if not Path(cfg.data_root).is_dir():
        raise SystemExit(f"error: raccoon data not found at {cfg.data_root}")
    genes = part_search(args, RACCOON, "raccoon", RACCOON_SEARCH)
    train_row(args, "raccoon", "shipped", args.seed, "", make_config(args, RACCOON))  # its 15 min, test split
    train_row(args, "raccoon", "winner", args.seed, "", make_config(args, RACCOON, genes=genes))


# ------------------------------------------------------------------------------------------------- report
def report(args):
    rows = read_rows(args.out)
    lines = []
    proxy = [r for r in rows if r["part"] == "proxy"]
    full = {r["name"]: float(r["fitness"]) for r in proxy if not r["proxy"]}
    if full:
        lines += ["## proxy vs full run (fitness; Spearman over the configs both have)", "",
                  "| proxy | configs | Spearman rho | mean time (s) |", "| --- | --- | --- | --- |"]
        full_time = statistics.fmean(float(r["time_s"]) for r in proxy if not r["proxy"])
        lines.append(f"| full run | {len(full)} | 1 | {full_time:.0f} |")
        for spec in sorted({r["proxy"] for r in proxy if r["proxy"]}):
            got = {r["name"]: r for r in proxy if r["proxy"] == spec and r["name"] in full}
            rho = spearman([float(got[n]["fitness"]) for n in got], [full[n] for n in got])
            mean_time = statistics.fmean(float(r["time_s"]) for r in got.values())
            lines.append(f"| {spec} | {len(got)} | {rho:.3f} | {mean_time:.0f} |")
    for part, title in (("target", "start vs winner, full schedule"), ("raccoon", "raccoon, test split")):
        chosen = [r for r in rows if r["part"] == part]
        if not chosen:
            continue
        seeds = sorted({int(r["seed"]) for r in chosen})
        lines += ["", f"## {title} (mAP@0.5 of the last evaluation)", "",
                  "| config | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
                  "| --- | " + " | ".join("---" for _ in seeds) + " | --- |"]
        for name in dict.fromkeys(r["name"] for r in chosen):
            by_seed = {int(r["seed"]): float(r["map50"]) for r in chosen if r["name"] == name}
            cells = [f"{by_seed[s]:.3f}" if s in by_seed else "" for s in seeds]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(by_seed.values()):.3f} |")
        start = {int(r["seed"]): float(r["map50"]) for r in chosen if r["name"] in ("start", "shipped")}
        for winner in dict.fromkeys(r["name"] for r in chosen if r["name"].startswith("winner")):
            win = {int(r["seed"]): float(r["map50"]) for r in chosen if r["name"] == winner}
            both = sorted(set(start) & set(win))
            if not both:
                continue
            gains = [win[s] - start[s] for s in both]
            target = f"; target +0.05 on the mean and every seed: {'met' if min(gains) >= 0.05 else 'not met'}"
            lines.append(f"\n{winner} - start: {', '.join(f'{g:+.3f}' for g in gains)} (mean "
                         f"{statistics.fmean(gains):+.3f})" + (target if part == "target" else ""))
    print("\n".join(lines) if lines else f"no rows in {args.out / 'rows.csv'} yet")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["proxy", "search", "target", "raccoon", "report", "all"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_evolve_proxy", help="rows.csv and runs")
    parser.add_argument("--configs", type=int, default=10, help="proxy: configs compared")
    parser.add_argument("--proxies", default=";".join(PROXIES), help="proxy: ';'-separated proxy specs")
    parser.add_argument("--proxy", default=PROXIES[-1], help="search: the proxy its trials train with")
    parser.add_argument("--minutes", type=float, default=45, help="search: wall minutes, confirmation included")
    parser.add_argument("--max_generations", type=int, default=1000, help="search: at most this many generations")
    parser.add_argument("--genes", default="", help="search: evolve_params (default: every gene)")
    parser.add_argument("--search_name", default="search", help="search, target: the search's folder "
                        "(<out>/<name>_evolve) and its winner's rows (winner_<name>); another name, another search")
    parser.add_argument("--confirm_seeds", type=int, default=2, help="search: evolve_confirm_seeds")
    parser.add_argument("--confirm_top", type=int, default=3, help="search: evolve_confirm_top")
    parser.add_argument("--seeds", default="0,1,2", help="target: seeds of the full runs")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the proxy part and of the search")
    parser.add_argument("--smoke", action="store_true", help="toy sizes under <out>/smoke: checks the script")
    args = parser.parse_args()
    args.proxies = [p for p in args.proxies.split(";") if p.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.smoke:
        args.out = args.out / "smoke"
        args.configs, args.proxies, args.proxy = 3, ["train_images=12,val_images=4"], "train_images=12,val_images=4"
        args.max_generations, args.confirm_seeds, args.confirm_top, args.seeds = 2, 1, 1, args.seeds[:2]
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # the configs' data paths are relative to the repository
    parts = ["proxy", "target", "raccoon"] if args.part == "all" else [args.part]
    for part in parts:
        {"proxy": part_proxy, "search": lambda a: part_search(a, name=a.search_name), "target": part_target,
         "raccoon": part_raccoon, "report": lambda a: None}[part](args)
    report(args)


if __name__ == "__main__":
    main()
