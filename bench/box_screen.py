"""Screen recipe options one at a time (tighter boxes, the class-loss gain): short runs, two seeds, scored on a
held-out part of train.

    python bench/box_screen.py --config configs/cards.py --minutes 5            # every variant, seeds 0 and 1
    python bench/box_screen.py --config configs/cards.py --variants baseline,box_bins_8 --seeds 0,1,2
    python bench/box_screen.py --config configs/cards.py --report               # the table of the rows so far
    python bench/box_screen.py --config configs/cards.py --one_class --minutes 5  # every box one class "card"

Every run is the config with `--val_from_train 0.2` (a seeded fifth of the train photos is the val split: the test
split is never looked at) and a time budget of --minutes, plus one variant's overrides (VARIANTS); its score is the
evaluation of its last epoch. The "nms_merge" variant trains nothing: it scores the baseline's last.pt of the same
random seed with merge-NMS. The held-out images are drawn with the run's random seed, so each variant is compared
with the baseline run of its own random seed (one difference per run pair), and a variant is a gain only if every
difference exceeds the spread of the baseline's scores.

--one_class (configs/cards.py's layout: train/ and test/ folders of VOC XML) screens on the same photos with every
box named "card": with six look-alike classes a 5-minute run has not yet learned to tell them apart (mAP@0.5 about
0.3), so its score says little about how tightly boxes sit; one class learns in minutes, and mAP@0.5:0.95 then
measures placement. The copy of the XML files goes to <out>/one_class_data (the photos are linked).

Rows go to runs/box_screen/<config name>/rows.csv as each run finishes, with the setting they were made with
(--minutes and the extra overrides); a rerun with that setting skips the rows it has (a run killed half-way is
trained again), and the table shows only the rows of the setting asked for. Run nothing else CPU-heavy beside it:
the time budget turns load into epochs.
"""
import argparse
import csv
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

from bench.common import emit, one_class_cards  # noqa: E402
from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402

# name -> config overrides; one change each against the config as shipped
VARIANTS = {
    "baseline": [],
    "box_scale_2_1_1": ["--box_scale_weights", "(2.0, 1.0, 1.0)"],   # the box term of stride 8 (small objects) x2
    "box_size_1": ["--box_size_gain", "1.0"],                         # YOLOv3's 2 - w h weighting of the box term
    "obj_iou_0.5": ["--obj_iou_ratio", "0.5"],                        # objectness target 0.5 + 0.5 IoU
    "augment_off_3": ["--augment_off_epochs", "3"],                   # the last 3 epochs on plain letterboxes
    "box_bins_8": ["--box_bins", "8"],                                # box numbers as distributions, DFL
    "reach_2": ["--decode_reach", "2.0"],                             # far neighbours off the sigmoid's flat ends
    "ema": ["--ema", "true", "--ema_tau", "100"],                     # EMA weights, warmed up over 100 updates
    "img_320_width_0.35": ["--img_size", "320", "--width", "0.35"],   # smaller images, wider model, same minutes
    "cls_weight_2": ["--cls_weight", "2.0"],                          # half of configs/own_data.py's class-loss gain
    "nms_merge": None,                                                # evaluation only: the baseline with merge-NMS
}
FIELDS = ["variant", "seed", "setting", "map50", "map", "epochs", "time_s", "run"]


def read_rows(path):
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path, row):
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def setting(args):
    """What every row of one screen shares: the minutes, one class or not, and the extra overrides."""
    return " ".join([f"{args.minutes:g} min", *(["one class"] if args.one_class else []), *args.extra])


def rows_of(args):
    return [r for r in read_rows(args.out / "rows.csv") if r["setting"] == setting(args)]


def screen_config(args, overrides):
    cfg = apply_overrides(load_config(ROOT / args.config), ["--val_from_train", "0.2", "--time_budget",
                                                            str(args.minutes), *args.data, *args.extra, *overrides])
    cfg.tensorboard, cfg.eval_artifacts, cfg.resume = False, False, False
    return cfg


def train_variant(args, name, seed):
    """Train one variant with one seed; returns its row."""
    run_dir = args.out / "runs" / f"{name}_seed{seed}"
    if run_dir.exists():  # killed before its row was written
        shutil.rmtree(run_dir)
    cfg = screen_config(args, VARIANTS[name])
    cfg.seed, cfg.runs_dir, cfg.run_name = seed, str(run_dir.parent), run_dir.name
    evaluated = []
    tick = time.time()
    train(cfg.finalize(), on_epoch=lambda row: evaluated.append(row) if row["map50"] == row["map50"] else None)
    last = evaluated[-1]
    return dict(variant=name, seed=seed, setting=setting(args), map50=f"{last['map50']:.4f}", map=f"{last['map']:.4f}",
                epochs=last["epoch"], time_s=round(time.time() - tick), run=str(run_dir))


def merge_nms_row(args, seed, baseline):
    """The baseline's last.pt of `seed` scored on the same held-out images with merge-NMS."""
    from yolo.tasks import val

    cfg = screen_config(args, ["--nms_merge", "true", "--ckpt_path", str(Path(baseline["run"]) / "last.pt")])
    cfg.seed, cfg.runs_dir, cfg.run_name, cfg.task = seed, str(args.out / "runs"), f"nms_merge_seed{seed}", "val"
    tick = time.time()
    result, = val.run(cfg.finalize())
    return dict(variant="nms_merge", seed=seed, setting=setting(args), map50=f"{result.map50:.4f}",
                map=f"{result.map:.4f}", epochs=baseline["epochs"], time_s=round(time.time() - tick),
                run=baseline["run"])


def one_class_data(args):
    """Overrides that point the config at a one-class copy of its VOC folders (written once under args.out)."""
    cfg = load_config(ROOT / args.config)
    root = (ROOT / cfg.data_root).resolve()
    if cfg.dataset != "voc" or not all(any((root / d).glob("*.xml")) for d in ("train", "test")):
        sys.exit(f"error: --one_class needs a VOC config with train/ and test/ folders like configs/cards.py; "
                 f"{args.config} reads {cfg.dataset} data from {root}")
    copy = one_class_cards(root, args.out / "one_class_data")
    return ["--data_root", str(copy), "--class_names", "['card']"]


def report(args):
    rows = rows_of(args)
    base = {r["seed"]: r for r in rows if r["variant"] == "baseline"}
    if not base:
        return emit(f"no baseline rows in {args.out / 'rows.csv'} yet")
    spread = (max(float(r["map"]) for r in base.values()) - min(float(r["map"]) for r in base.values())
              if len(base) > 1 else float("nan"))
    lines = [f"{args.config}, --val_from_train 0.2, {setting(args)} per run; mAP@0.5:0.95 of the last epoch; "
             f"baseline seed spread {spread:.3f}", "",
             "| variant | seeds | mAP@0.5 mean | mAP@0.5:0.95 mean | per seed | difference per seed | epochs | verdict |",
             "|---|---:|---:|---:|---|---|---:|---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = sorted((r for r in rows if r["variant"] == name), key=lambda r: int(r["seed"]))
        diffs = [float(r["map"]) - float(base[r["seed"]]["map"]) for r in mine if r["seed"] in base]
        verdict = ("" if name == "baseline" else "one seed" if len(diffs) < 2 else
                   "gain" if min(diffs) > spread else "loss" if max(diffs) < -spread else "within the spread")
        mean50 = statistics.fmean(float(r["map50"]) for r in mine)
        lines.append(f"| {name} | {len(mine)} | {mean50:.3f} | "
                     f"{statistics.fmean(float(r['map']) for r in mine):.3f} | "
                     + ", ".join(f"{float(r['map']):.3f}" for r in mine) + " | "
                     + ("" if name == "baseline" else ", ".join(f"{d:+.3f}" for d in diffs)) + " | "
                     + ", ".join(str(r["epochs"]) for r in mine) + f" | {verdict} |")
    emit("\n".join(lines), args.out / "report.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="e.g. configs/cards.py, configs/raccoon.py")
    parser.add_argument("--minutes", type=float, default=5.0, help="time budget of each training")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument("--one_class", action="store_true", help="every box one class 'card' (configs/cards.py)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default runs/box_screen/<config name> (--one_class: <config name>_one_class)")
    args, args.extra = parser.parse_known_args()  # anything else: config overrides of every run (e.g. --data_root)
    name = Path(args.config).stem + ("_one_class" if args.one_class else "")
    args.out = (args.out or ROOT / "runs" / "box_screen" / name).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    os.chdir(ROOT)  # the configs' data paths are relative to the repository
    if not args.report:
        args.data = one_class_data(args) if args.one_class else []  # the trainings' data overrides
        seeds = [int(s) for s in args.seeds.split(",")]
        for seed in seeds:  # every variant of seed 0 before seed 1: a stopped screen already compares them all
            for name in ["baseline"] + [v for v in variants if v != "baseline"]:
                if any(r["variant"] == name and r["seed"] == str(seed) for r in rows_of(args)):
                    continue
                if name == "nms_merge":  # scores the baseline's checkpoint, trained first in this loop
                    row = merge_nms_row(args, seed, next(r for r in rows_of(args)
                                                         if r["variant"] == "baseline" and r["seed"] == str(seed)))
                else:
                    row = train_variant(args, name, seed)
                append_row(args.out / "rows.csv", row)
                print(f"{name} seed {seed}: mAP@0.5 {row['map50']}, mAP@0.5:0.95 {row['map']}", flush=True)
    report(args)


if __name__ == "__main__":
    main()
