"""Label-assignment ablation: train the default model once per strategy under the same budget, print a table.

    python bench/ablation_assign.py [--config configs/my_config.py] [--epochs 5] [--field value ...]

Each run is a normal training run (runs/ablation_<strategy>/). The table gives the best mAP@0.5 and the
mAP@0.5:0.95 of that evaluation, and the assignment statistics of the last epoch: positives per GT and the share
of GTs left without any positive (with assign_unmatched_to_best=True, the default, only a GT whose every anchor went
to another GT in a conflict stays without one).
"""
import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from yolo.assign import STRATEGIES  # noqa: E402
from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.engine.logs import MetricsCSV  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--epochs", type=int, default=5)
    args, overrides = parser.parse_known_args()
    rows = []
    for strategy in STRATEGIES:
        cfg = apply_overrides(load_config(args.config), overrides)
        cfg.label_assignment, cfg.epochs, cfg.run_name = strategy, args.epochs, f"ablation_{strategy}"
        cfg.val_interval = args.epochs  # one evaluation, at the end: the budget goes to training
        _, run_dir = train(cfg.finalize())
        metrics = MetricsCSV(run_dir / "metrics.csv").read()
        best = max((r for r in metrics if r["map50"] == r["map50"]), key=lambda r: r["map50"])
        rows.append((strategy, best["map50"], best["map"], metrics[-1]["pos_per_gt"], metrics[-1]["unmatched_pct"]))
    print(f"\n{args.epochs} epochs each, {' '.join(overrides) or 'default config'} ({args.config})\n")
    print("| label_assignment | mAP@0.5 | mAP@0.5:0.95 | positives per GT | GTs without positive (%) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for strategy, map50, map_, pos, unmatched in rows:
        print(f"| {strategy} | {map50:.3f} | {map_:.3f} | {pos:.1f} | {unmatched:.2f} |")


if __name__ == "__main__":
    main()
