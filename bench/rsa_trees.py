"""Does the tree RSA recommends beat the trees it ranks low? Three built-in tasks, one single-task model per task,
`--task rsa`'s ranking, and multi-task trees trained across that ranking; rows in a CSV, a markdown table at the end.

    python bench/rsa_trees.py --stage singles [--max_minutes 120]   # one single-task model per task
    python bench/rsa_trees.py --stage rsa                            # similarities and ranking -> rsa.json
    python bench/rsa_trees.py --stage trees [--max_minutes 120]      # the chosen trees (rerun until done)
    python bench/rsa_trees.py --stage report                         # the table, the correlation, the targets
    python bench/rsa_trees.py                                        # every stage in order (hours of CPU)
    python bench/rsa_trees.py --smoke                                # tiny sizes: checks the plumbing in minutes

Tasks: "shapes" (circle, square, triangle; generator seed 0) and "shapes_b" (the same objects, generator seed 1) are
close; "symbols" (star, cross, ring; seed 2) is far. Each at 256 px, 1000 train and 200 val images, the model and
schedule of configs/multitask_shapes.py, `--epochs` 10 (any `--field value` overrides a config field).

    python bench/rsa_trees.py --data real [--stage ...]               # the same on photos: runs/rsa_trees_real

`--data real`: "cards_a" and "cards_b" (the playing-card photos of configs/cards.py, every box one class "card", split
into two halves by alternate file names, train and test alike: the same objects, other photos) are close; "raccoon"
(../shared/data/raccoon, its own split) is far. Each at 320 px for 40 epochs, no mosaics, the same model;
--cards_root and --raccoon_root say where the data is. The split lists are written under <out_dir>/splits.
Trees: RSA's pick (the least dissimilar within rsa_budget), all shared, split right after the backbone, and trees
evenly spaced over the dissimilarity order up to --num_trees (7); seed 0 for each, then seed 1 for the first three
(two when the pick is the split after the backbone).

A tree that splits at the input ([-2, groups] first: separate models) trains one model per group; a group of one task
is that task's single-task model (seed 0: the one of --stage singles). The ranking weighs each shared layer by its
compute (rsa_node_cost gflops, the default; `--rsa_node_cost equal`: every layer alike, the reference's sum); the
report scores every trained tree both ways. `--reuse OTHER/results.csv` takes the trees trained there (same tasks and
settings, another ranking) instead of training them again.

Every training appends its row to <out_dir>/results.csv as it finishes, so a rerun skips what is done (a training cut
off in the middle resumes from its last.pt). --max_minutes starts no new training after that many minutes.
"""
import argparse
import ast
import copy
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import emit, one_class_cards  # noqa: E402
from bench.multitask_compare import last_row, last_scores  # noqa: E402
from yolo.config import apply_overrides, load_config, task_configs  # noqa: E402
from yolo.config_checks import RSA_NODE_COSTS  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402
from yolo.research.rsa import rank_correlation as rsa_rank_correlation  # noqa: E402
from yolo.research.tree_search import ComputeModel, model_config, score_tree, separate_models  # noqa: E402
from yolo.tasks import rsa  # noqa: E402

SHAPES, SYMBOLS = ["circle", "square", "triangle"], ["star", "cross", "ring"]
TASKS = [dict(name="shapes", class_names=SHAPES, shapes_seed=0),     # close to shapes_b: the same objects
         dict(name="shapes_b", class_names=SHAPES, shapes_seed=1),
         dict(name="symbols", class_names=SYMBOLS, shapes_seed=2)]   # far: other objects
FULL = dict(img_size=256, shapes_num_train=1000, shapes_num_val=200, epochs=10, rsa_images=100)
SMOKE = dict(img_size=64, shapes_num_train=32, shapes_num_val=8, epochs=1, rsa_images=8)
REAL = dict(img_size=320, epochs=40, rsa_images=60, mosaic_prob=0.0, cache_images=True, num_workers=0)
TWO_SEEDS = ("pick", "all_shared", "split_backbone")  # the trees trained with a second seed


def bench_config(args, overrides):
    """The multi-task config of the three tasks, sized by FULL, SMOKE or REAL, then the command line's overrides."""
    cfg = load_config("configs/multitask_shapes.py")
    for key, value in (SMOKE if args.smoke else REAL if args.data == "real" else FULL).items():
        setattr(cfg, key, value)
    cfg.tasks = real_tasks(args) if args.data == "real" else [dict(spec, data_root=str(args.data_dir / spec["name"]))
                                                              for spec in TASKS]
    cfg.branching, cfg.task_weights, cfg.tensorboard = None, None, False
    cfg.nms_merge = False  # every row scored alike: the rows of docs/rsa_trees_bench.csv were scored with plain NMS
    cfg = apply_overrides(cfg, overrides)
    cfg.val_interval = cfg.epochs  # scores of the last epoch only: evaluations in between would cost time
    return cfg.finalize()


def real_tasks(args):
    """cards_a, cards_b (alternate photos of each split folder of --cards_root, one class "card") and raccoon."""
    splits = args.out_dir / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    cards = []
    for folder in ("train", "test"):
        if not any((args.cards_root / folder).glob("*.xml")):
            sys.exit(f"error: no .xml annotations in {args.cards_root / folder} (configs/cards.py says where the "
                     f"card photos come from; --cards_root)")
    one_class = one_class_cards(args.cards_root, args.out_dir / "cards_one_class")
    for half, first in (("a", 0), ("b", 1)):
        files = {}
        for split, folder in (("train", "train"), ("val", "test")):
            xmls = sorted(p.stem for p in (args.cards_root / folder).glob("*.xml"))
            files[split] = splits / f"cards_{half}_{split}.txt"
            files[split].write_text("\n".join(xmls[first::2]) + "\n")
        cards.append(dict(name=f"cards_{half}", dataset="voc", data_root=str(one_class.resolve()), ann_dir="",
                          img_dir="", train_dirs=["train"], val_dirs=["test"],
                          train_split_file=str(files["train"].resolve()), val_split_file=str(files["val"].resolve()),
                          class_names=["card"]))
    if not (args.raccoon_root / "annotations").is_dir():
        sys.exit(f"error: no raccoon data in {args.raccoon_root} (--raccoon_root)")
    raccoon = dict(name="raccoon", dataset="voc", data_root=str(args.raccoon_root), ann_dir="annotations",
                   img_dir="images", train_split_file="data/train_labels.csv", val_split_file="data/test_labels.csv",
                   class_names=["raccoon"])
    return [*cards, raccoon]


# ------------------------------------------------------------------------------------------------- results.csv
def score_fields(names):
    return [f"{m}_{n}" for n in names for m in ("map50", "map")]


def read_rows(path):
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append_row(path, row, names):
    fields = ["kind", "label", "branching", "seed", "rsa_rank", "dissimilarity", "compute", "map50_mean", "map_mean",
              *score_fields(names), "train_s", "run_dir"]
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in fields})


def done(rows, kind, label, seed):
    return any(r["kind"] == kind and r["label"] == label and r["seed"] == str(seed) for r in rows)


def trained(cfg):
    """Train cfg into runs_dir/run_name; a run of that name cut off before (its last.pt exists) is resumed."""
    last = Path(cfg.runs_dir) / cfg.run_name / "last.pt"
    cfg.resume, cfg.resume_path = last.is_file(), str(last) if last.is_file() else None
    _, run_dir = train(cfg)
    return Path(run_dir)


class Clock:
    """--max_minutes: whether a new training may start."""

    def __init__(self, minutes):
        self.start, self.minutes = time.time(), minutes

    def out_of_time(self, left):
        if self.minutes is None or time.time() - self.start < 60 * self.minutes:
            return False
        print(f"stopped after {self.minutes:g} minutes with {left} training(s) left: run the same command again")
        return True


# ------------------------------------------------------------------------------------------------- stages
def stage_singles(cfg, args, clock):
    """One single-task model per task (seed 0): the baseline and RSA's input."""
    results = args.out_dir / "results.csv"
    jobs = [task for task in task_configs(cfg) if not done(read_rows(results), "single", task.task_name, 0)]
    print(f"single-task models: {len(cfg.task_names) - len(jobs)} done, {len(jobs)} to train")
    for k, task in enumerate(jobs):
        if clock.out_of_time(len(jobs) - k):
            return False
        single = copy.copy(task)
        single.runs_dir, single.run_name, single.seed = str(args.out_dir / "singles"), f"{task.task_name}_seed0", 0
        run_dir = trained(single.finalize())
        (m50, m), = last_scores(run_dir, [task.task_name])
        append_row(results, dict(kind="single", label=task.task_name, seed=0, compute=1.0, map50_mean=m50,
                                 map_mean=m, **{f"map50_{task.task_name}": m50, f"map_{task.task_name}": m},
                                 train_s=last_row(run_dir)["time_s"], run_dir=run_dir), cfg.task_names)
    return True


def stage_rsa(cfg, args):
    """--task rsa on the single-task models' best.pt; the ranking and the trees to train -> rsa.json."""
    out = args.out_dir / "rsa.json"
    if out.is_file():
        print(f"{out} exists: the ranking is kept (delete it to rank again)")
        return True
    singles = {r["label"]: r["run_dir"] for r in read_rows(args.out_dir / "results.csv") if r["kind"] == "single"}
    missing = [n for n in cfg.task_names if n not in singles]
    if missing:
        sys.exit(f"error: no single-task model of {missing} in {args.out_dir / 'results.csv'}: run --stage singles")
    rsa_cfg = copy.copy(cfg)
    rsa_cfg.rsa_ckpts = [str(Path(singles[n]) / "best.pt") for n in cfg.task_names]
    rsa_cfg.runs_dir = str(args.out_dir)
    result = rsa.run(rsa_cfg.finalize())
    keep = ("branching", "dissimilarity", "compute", "rank", "fits")
    ranked = [{k: r[k] for k in keep} for r in result["trees"]]
    out.write_text(json.dumps({"measure": cfg.rsa_measure, "node_cost": cfg.rsa_node_cost, "budget": cfg.rsa_budget,
                               "rsa_dir": str(result["out_dir"]),
                               "similarities": result["similarities"], "trees": ranked,
                               "chosen": chosen_trees(ranked, result["recommended"], len(cfg.task_names),
                                                      args.num_trees)}, indent=1))
    print(f"ranking and the {args.num_trees} trees to train -> {out}")
    return True


def chosen_trees(ranked, pick, num_tasks, count):
    """[(label, branching)]: RSA's pick, all shared, split right after the backbone, then trees evenly spaced over the
    order of dissimilarity (least to most) until `count` trees, each tree once."""
    chosen = [("pick", pick), ("all_shared", None), ("split_backbone", [[-1, [[t] for t in range(num_tasks)]]])]
    chosen = [c for k, c in enumerate(chosen) if c[1] not in [b for _, b in chosen[:k]]]
    order = [r["branching"] for r in sorted(ranked, key=lambda r: (r["dissimilarity"], r["compute"]))]
    for q in np.linspace(0, 1, max(count - len(chosen), 0)):
        free = [k for k, b in enumerate(order) if b not in [c for _, c in chosen]]
        if not free:
            break
        target = q * (len(order) - 1)
        chosen.append((f"spread_{len(chosen)}", order[min(free, key=lambda k: abs(k - target))]))
    return chosen


def stage_trees(cfg, args, clock):
    """Train the trees of rsa.json: seed 0 each, then seed 1 for TWO_SEEDS."""
    plan = json.loads((args.out_dir / "rsa.json").read_text()) if (args.out_dir / "rsa.json").is_file() else None
    if plan is None:
        sys.exit(f"error: no {args.out_dir / 'rsa.json'}: run --stage rsa first")
    results = args.out_dir / "results.csv"
    by_branching = {repr(r["branching"]): r for r in plan["trees"]}
    if args.reuse:
        reuse_trees(args.reuse, results, plan, by_branching, cfg.task_names)
    # every tree's first seed before any second seed: a bench stopped half-way has the whole ranking already
    jobs = [(label, b, 0) for label, b in plan["chosen"]]
    jobs += [(label, b, 1) for label, b in plan["chosen"] if label in TWO_SEEDS]
    todo = [j for j in jobs if not done(read_rows(results), "tree", j[0], j[2])]
    print(f"trees: {len(jobs) - len(todo)} trainings done, {len(todo)} to train")
    jobs = todo
    for k, (label, branching, seed) in enumerate(jobs):
        if clock.out_of_time(len(jobs) - k):
            return False
        scores, seconds, run_dirs = train_tree(cfg, args, label, branching, seed)
        ranked = by_branching[repr(branching)]
        append_row(results, tree_row(label, branching, seed, ranked, scores, seconds, ";".join(run_dirs)),
                   cfg.task_names)
    return True


def train_tree(cfg, args, label, branching, seed):
    """({task: (mAP@0.5, mAP@0.5:0.95)}, training seconds, run dirs) of one tree: one model, or one per group of a
    split at the input (a group of one task at seed 0 is the single-task model already trained)."""
    singles = {r["label"]: r for r in read_rows(args.out_dir / "results.csv") if r["kind"] == "single"}
    models = separate_models(branching, len(cfg.task_names))
    scores, seconds, run_dirs = {}, 0.0, []
    for tasks, model_branching in models:
        names = [cfg.task_names[t] for t in tasks]
        if len(tasks) == 1 and len(models) > 1 and seed == 0:
            row = singles[names[0]]
            scores[names[0]] = (float(row[f"map50_{names[0]}"]), float(row[f"map_{names[0]}"]))
            seconds, run_dirs = seconds + float(row["train_s"]), run_dirs + [row["run_dir"]]
            continue
        model = copy.copy(model_config(cfg, tasks, model_branching))
        model.seed, model.runs_dir = seed, str(args.out_dir / "trees")
        model.run_name = f"{label}_seed{seed}" + ("" if len(models) == 1 else "_" + "-".join(names))
        run_dir = trained(model.finalize())
        scores.update(zip(names, last_scores(run_dir, names)))
        seconds, run_dirs = seconds + last_row(run_dir)["time_s"], run_dirs + [str(run_dir)]
    return scores, seconds, run_dirs


def tree_row(label, branching, seed, ranked, scores, seconds, run_dir):
    """A results.csv row of a trained tree; scores: {task: (mAP@0.5, mAP@0.5:0.95)}."""
    return dict(kind="tree", label=label, branching=repr(branching), seed=seed, rsa_rank=ranked["rank"],
                dissimilarity=ranked["dissimilarity"], compute=ranked["compute"],
                map50_mean=float(np.mean([s[0] for s in scores.values()])),
                map_mean=float(np.mean([s[1] for s in scores.values()])),
                **{f"{m}_{n}": s[i] for n, s in scores.items() for i, m in enumerate(("map50", "map"))},
                train_s=seconds, run_dir=run_dir)


def reuse_trees(path, results, plan, by_branching, names):
    """Copy the tree rows of another bench's results.csv (same tasks and settings) into this one, re-ranked by this
    rsa.json; a tree this plan chooses takes its label, any other keeps its own (prefixed "other_" where that label
    names another tree here). Rows already here are left alone."""
    chosen = {repr(b): label for label, b in plan["chosen"]}
    here = {(r["branching"], r["seed"]) for r in read_rows(results) if r["kind"] == "tree"}
    copied = 0
    for row in read_rows(Path(path)):
        if row["kind"] != "tree" or (row["branching"], row["seed"]) in here or row["branching"] not in by_branching:
            continue
        label = chosen.get(row["branching"], row["label"])
        if row["branching"] not in chosen and label in chosen.values():
            label = f"other_{label}"
        ranked = by_branching[row["branching"]]
        append_row(results, {**row, "label": label, "rsa_rank": ranked["rank"],
                             "dissimilarity": ranked["dissimilarity"], "compute": ranked["compute"]}, names)
        copied += 1
    print(f"reused {copied} tree training(s) of {path}")


# ------------------------------------------------------------------------------------------------- report
def rank_correlation(x, y):
    """Spearman correlation of two sequences (yolo.research.rsa); nan with fewer than 3 pairs."""
    return rsa_rank_correlation(x, y) if len(x) >= 3 else float("nan")


def stage_report(cfg, args):
    rows = read_rows(args.out_dir / "results.csv")
    names = list(cfg.task_names)
    singles = {r["label"]: r for r in rows if r["kind"] == "single"}
    trees = {}
    for r in (r for r in rows if r["kind"] == "tree"):
        trees.setdefault(r["label"], []).append(r)
    if len(singles) < len(names) or not trees:
        sys.exit(f"error: {args.out_dir / 'results.csv'} has {len(singles)} single model(s) and {len(trees)} "
                 f"tree(s): run --stage singles, rsa and trees first")
    if not (args.out_dir / "rsa.json").is_file():
        sys.exit(f"error: no {args.out_dir / 'rsa.json'}: run --stage rsa first")
    plan = json.loads((args.out_dir / "rsa.json").read_text())
    base = {n: float(singles[n][f"map_{n}"]) for n in names}
    base_mean = float(np.mean(list(base.values())))
    # every trained tree scored with both node costs from the same similarities (the ranking used one of them)
    costs = ComputeModel(cfg)
    scored = {label: {cost: score_tree(costs, plan["similarities"], ast.literal_eval(runs[0]["branching"]), cost)[0]
                      for cost in RSA_NODE_COSTS} for label, runs in trees.items()}

    def mean_of(runs, field):
        return float(np.mean([float(r[field]) for r in runs]))

    spreads = {label: abs(float(runs[0]["map_mean"]) - float(runs[1]["map_mean"]))
               for label, runs in trees.items() if len(runs) > 1}
    spread = max(spreads.values()) if spreads else float("nan")
    sizes = ("photos" if args.data == "real" else
             f"{cfg.shapes_num_train} train / {cfg.shapes_num_val} val images per task")
    ranked_by = plan.get("node_cost", "equal")
    lines = [f"{len(names)} tasks {names}, {cfg.img_size} px, {sizes}, {cfg.epochs} epoch(s); mAP at the last "
             f"epoch, the mean over the seeds trained; RSA rank by the {ranked_by} node cost; "
             f"loss = the single models' mean mAP@0.5:0.95 ({base_mean:.3f}) minus the tree's", "",
             "| tree | branching | RSA rank | dissimilarity (equal) | dissimilarity (gflops) | compute x singles | "
             "seeds | mAP@0.5 | mAP@0.5:0.95 | " + " | ".join(f"{n} @0.5:0.95" for n in names) + " | loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(names) + 1)]
    lines.append(f"| single models | | | | | 1.00 | 1 | {mean_of(singles.values(), 'map50_mean'):.3f} | "
                 f"{base_mean:.3f} | " + " | ".join(f"{base[n]:.3f}" for n in names) + " | |")
    loss = {}
    for label, runs in sorted(trees.items(), key=lambda item: int(item[1][0]["rsa_rank"])):
        loss[label] = base_mean - mean_of(runs, "map_mean")
        lines.append(f"| {label} | `{runs[0]['branching']}` | {runs[0]['rsa_rank']} | {scored[label]['equal']:.3f} | "
                     f"{scored[label]['gflops']:.3f} | {float(runs[0]['compute']):.2f} | {len(runs)} | "
                     f"{mean_of(runs, 'map50_mean'):.3f} | {mean_of(runs, 'map_mean'):.3f} | "
                     + " | ".join(f"{mean_of(runs, f'map_{n}'):.3f}" for n in names) + f" | {loss[label]:+.3f} |")
    labels = list(loss)
    lines.append("")
    for cost in RSA_NODE_COSTS:
        rho = rank_correlation([scored[k][cost] for k in labels], [loss[k] for k in labels])
        lines.append(f"Spearman correlation of dissimilarity ({cost} node cost) and loss over {len(labels)} trees: "
                     f"{rho:.2f} (target >= 0.7: {'met' if rho >= 0.7 else 'not met'})")
    lines.append(f"seed spread (largest |seed 0 - seed 1| of mean mAP@0.5:0.95 over {sorted(spreads)}): {spread:.3f}")
    if "pick" in trees:
        pick, fits = loss["pick"], float(trees["pick"][0]["compute"]) <= 0.7 + 1e-9
        met = pick <= min(spread, 0.02) and fits
        lines.append(f"RSA's pick ({ranked_by} node cost): loss {pick:+.3f} at "
                     f"{float(trees['pick'][0]['compute']):.2f} x compute (target: within the seed spread and 0.02, "
                     f"at <= 0.7 x: {'met' if met else 'not met'})")
    if "all_shared" in trees:
        far = names[-1]
        far_loss = base[far] - mean_of(trees["all_shared"], f"map_{far}")
        lines.append(f"all shared: {far} (the far task) loses {far_loss:+.3f} mAP@0.5:0.95 (target: more than the "
                     f"seed spread: {'met' if far_loss > spread else 'not met'})")
    emit("\n".join(lines), args.out_dir / "report.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("all", "singles", "rsa", "trees", "report"), default="all")
    parser.add_argument("--out_dir", type=Path, default=None,
                        help="default runs/rsa_trees (--smoke: runs/rsa_trees_smoke)")
    parser.add_argument("--data_dir", type=Path, default=None, help="the tasks' data; default data/rsa_trees "
                                                                    "(--smoke: <out_dir>/data)")
    parser.add_argument("--num_trees", type=int, default=7, help="trees to train (at least 3: the pick, all shared, the split "
                                                                "after the backbone; 6 or more to rank them)")
    parser.add_argument("--max_minutes", type=float, default=None, help="start no training after this many minutes")
    parser.add_argument("--smoke", action="store_true", help="32 images per task, 64 px, 1 epoch: checks the plumbing")
    parser.add_argument("--data", choices=("shapes", "real"), default="shapes", help="built-in tasks or photos")
    parser.add_argument("--cards_root", type=Path, default=Path("data/cards"), help="--data real: train/ and test/")
    parser.add_argument("--raccoon_root", type=Path, default=Path("../shared/data/raccoon"), help="--data real")
    parser.add_argument("--reuse", type=Path, default=None, help="results.csv of a bench of the same tasks: its "
                                                                "trained trees are taken, not trained again")
    args, overrides = parser.parse_known_args()
    if args.num_trees < 3:
        sys.exit("error: --num_trees must be at least 3 (the pick, all shared, split at the backbone)")
    args.out_dir = args.out_dir or Path("runs/rsa_trees_smoke" if args.smoke else
                                        "runs/rsa_trees_real" if args.data == "real" else "runs/rsa_trees")
    args.data_dir = args.data_dir or (args.out_dir / "data" if args.smoke else Path("data/rsa_trees"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cfg = bench_config(args, overrides)
    clock = Clock(args.max_minutes)
    if args.stage in ("all", "singles") and not stage_singles(cfg, args, clock):
        return
    if args.stage in ("all", "rsa"):
        stage_rsa(cfg, args)
    if args.stage in ("all", "trees") and not stage_trees(cfg, args, clock):
        return
    if args.stage in ("all", "report"):
        stage_report(cfg, args)


if __name__ == "__main__":
    main()
