"""Is an evolved config really better, or did its trial draw a lucky trajectory? Retrain generation 1 and the best
generation of a finished search with other seeds and compare their fitness, as a markdown table.

    python bench/evolve_recheck.py runs/<run_name>_evolve [--seeds 1,2] [--out FILE]

Each retraining is the trial's own config (trials/gen<k>/config.json: same data, epochs, genes) with another
`seed`, so the weights start elsewhere and the batches come in another order. Runs go to <search>/recheck/.
"""
import argparse
import csv
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit  # noqa: E402
from yolo.config import config_from_dict  # noqa: E402
from yolo.engine.trainer import train  # noqa: E402
from yolo.research.evolve import fitness  # noqa: E402


def retrain(search, generation, seed):
    """Fitness of generation `generation`'s trial config trained again with `seed`."""
    cfg = json.loads((search / "trials" / f"gen{generation}" / "config.json").read_text())
    cfg = config_from_dict({**cfg, "seed": seed, "runs_dir": str(search / "recheck"),
                            "run_name": f"gen{generation}_seed{seed}"})
    rows = []
    train(cfg, on_epoch=lambda row: rows.append(row) if row["map50"] == row["map50"] else None)
    row = rows[-1]
    names = cfg.task_names
    return fitness({"map50": row["map50"], "map": row["map"]} if len(names) == 1 else
                   {f"{k}_{t}": row[f"{k}_{t}"] for t in names for k in ("map50", "map")})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search", type=Path, help="a search folder, runs/<run_name>_evolve")
    parser.add_argument("--seeds", default="1,2", help="comma-separated seeds to retrain with")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    with (args.search / "evolve.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["fitness"]))
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = ["| generation | search fitness | " + " | ".join(f"seed {s}" for s in seeds) + " | mean of the seeds |",
             "| --- | --- | " + " | ".join("---" for _ in seeds) + " | --- |"]
    for row in (rows[0], best):
        scores = [retrain(args.search, int(row["generation"]), s) for s in seeds]
        lines.append(f"| {row['generation']} | {float(row['fitness']):.4f} | "
                     + " | ".join(f"{x:.4f}" for x in scores) + f" | {statistics.mean(scores):.4f} |")
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
