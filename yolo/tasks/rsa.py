"""`python main.py --config <multi-task config> --task rsa --rsa_ckpts a.pt,b.pt [--rsa_images 100]`: which neck
layers the tasks should share.

Every task's single-task model runs over rsa_images val images of every task (letterboxed as in evaluation); the
similarity of two tasks at a layer is the Spearman correlation (or CKA: rsa_measure) of their models' RDMs
(yolo/research/rsa.py), averaged over the image sets. Every branching tree the grammar allows, and every split at the
input into separate models, is then ranked (yolo/research/tree_search.py; rsa_node_cost weighs the shared layers); the
recommendation is the least dissimilar tree within rsa_budget x the compute of the single-task models.
Writes to <runs_dir>/rsa/ (rsa2/, rsa3/ ... when it exists):
similarity.png (a heatmap per layer), similarity_depth.png, similarity.json, trees.csv (every candidate, ranked),
recommended.txt (the `self.branching = ...` line, or one per model when the tree is separate models, and the best tree
per compute budget) and tree.png.
"""
import csv
import json
from pathlib import Path

from loguru import logger

from ..branching import NECK_BLOCK_NAMES
from ..research.tree_search import best_within, rank_trees, separate_models, time_trees, tree_groups
from ..config import task_configs
from ..data.dataset import build_loader, read_records
from ..engine.folders import next_free_dir
from ..engine.logs import setup_logging
from ..research.merge import single_task_models
from ..research.rsa import similarity_matrices
from ..viz.figures import save_figure
from ..viz.model import draw_branching
from ..viz.rsa import draw_similarity_heatmaps, plot_similarity_depth

BUDGETS = (0.6, 0.8, 1.0)  # compute budgets (fractions of one single-task model per task) reported beside rsa_budget


def run(cfg, measure_ms=True):
    """Returns {"out_dir", "similarities" ({layer: T x T list}), "trees" (ranked rows), "recommended" (branching),
    "budgets" ({budget: row or None}: rsa_budget and BUDGETS)}. measure_ms: time the trees recommended.txt names."""
    setup_logging()
    models, model_cfg = single_task_models(cfg, "rsa_ckpts")
    image_sets = [val_images(task, cfg.rsa_images) for task in task_configs(model_cfg)]
    similarities = similarity_matrices(models, image_sets, measure=cfg.rsa_measure)
    rows = rank_trees(model_cfg, similarities, cfg.rsa_budget, cfg.rsa_node_cost)
    best = recommended_tree(rows, cfg.rsa_budget)
    budgets = {b: best_within(rows, b) for b in sorted({cfg.rsa_budget, *BUDGETS})}
    if measure_ms:  # only the trees the report names: building and timing every tree takes hours for 5 tasks
        named = [best] + [r for r in budgets.values() if r is not None]
        time_trees(model_cfg, list({id(r): r for r in named}.values()))
    out_dir = next_free_dir(Path(cfg.runs_dir) / "rsa")  # rsa, then rsa2 ...: an earlier analysis is kept
    names = list(model_cfg.task_names)
    save_figure(draw_similarity_heatmaps(similarities, names), out_dir / "similarity.png")
    save_figure(plot_similarity_depth(similarities, names), out_dir / "similarity_depth.png")
    (out_dir / "similarity.json").write_text(json.dumps(
        {"tasks": names, "images_per_task": [sum(len(b) for b in s) for s in image_sets],
         "layers": {k: v.tolist() for k, v in similarities.items()}}, indent=1))
    write_trees_csv(rows, out_dir / "trees.csv")
    text = recommendation(best, budgets, rows, cfg)
    (out_dir / "recommended.txt").write_text(text + "\n")
    backbone, groups = tree_groups(best["branching"], len(names))
    save_figure(draw_branching(groups, names, NECK_BLOCK_NAMES, backbone), out_dir / "tree.png")
    logger.info(f"similarity per layer (pairs of tasks): {similarity_table(similarities, names)}")
    logger.info(f"{len(rows)} candidate trees -> {out_dir / 'trees.csv'}; paste into the config:\n{text}")
    return {"out_dir": out_dir, "similarities": {k: v.tolist() for k, v in similarities.items()}, "trees": rows,
            "recommended": best["branching"], "budgets": budgets}


def val_images(task_cfg, count):
    """The first `count` val images of a task, letterboxed as evaluation does: a list of uint8 batches."""
    records = read_records(task_cfg, "val", generate=False)[:count]
    if len(records) < 4:
        raise ValueError(f"task {task_cfg.task_name}: {len(records)} val images; RSA needs at least 4")
    if len(records) < count:
        logger.warning(f"task {task_cfg.task_name}: only {len(records)} val images (rsa_images = {count})")
    task_cfg.cache_images = False
    return [images for images, *_ in build_loader(task_cfg, records, train=False)]


def recommended_tree(rows, budget):
    """The least dissimilar tree within `budget` (rank 1 of rank_trees); when none fits, the cheapest tree, logged."""
    if rows[0]["fits"]:
        return rows[0]
    cheapest = min(rows, key=lambda r: (r["compute"], r["dissimilarity"]))
    logger.warning(f"no tree fits within rsa_budget = {budget} x the compute of the single-task models; recommending "
                   f"the cheapest, {cheapest['branching']!r} ({cheapest['compute']:.2f} x)")
    return cheapest


def write_trees_csv(rows, path):
    """Every tree in rank order; ms is empty for the trees that were not timed."""
    fields = ["rank", "branching", "models", "fits", "dissimilarity", "compute", "gflops", "ms"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "branching": repr(r["branching"]), "fits": int(r["fits"]),
                             **{k: f"{r[k]:.4f}" if r[k] == r[k] else "" for k in fields[4:]}})


def recommendation(best, budgets, rows, cfg):
    """The line to paste, and the best tree within each compute budget."""
    timed = f", {best['ms']:.1f} ms on this CPU" if best["ms"] == best["ms"] else ""
    names = cfg.task_names
    models = separate_models(best["branching"], len(names))
    if len(models) == 1:
        lines = [f"self.branching = {best['branching']!r}"]
    else:  # a split at the input: one config per model, none of them holds every task
        lines = [f"# separate models ({best['branching']!r}), one config each:"]
        lines += [f"#   tasks {[names[t] for t in tasks]}: " + ("its single-task model" if len(tasks) == 1 else
                  f"self.tasks = those tasks, self.branching = {branching!r}") for tasks, branching in models]
    lines += [f"# rank {best['rank']} of {len(rows)} ({cfg.rsa_measure} RSA, {cfg.rsa_node_cost} node cost, least "
              f"dissimilar within rsa_budget = {cfg.rsa_budget:g} x the compute of the single-task models): "
              f"dissimilarity {best['dissimilarity']:.3f}, compute {best['compute']:.2f} x ({best['gflops']:.2f} "
              f"GFLOPs{timed})",
              "# least dissimilar tree within a compute budget (x the single-task models):"]
    for budget, row in budgets.items():
        lines.append(f"#   <= {budget:g}: " + ("none fits" if row is None else
                     f"{row['branching']!r} (dissimilarity {row['dissimilarity']:.3f}, compute {row['compute']:.2f})"))
    return "\n".join(lines)


def similarity_table(similarities, names):
    pairs = [(a, b) for a in range(len(names)) for b in range(a + 1, len(names))]
    lines = ["| layer | " + " | ".join(f"{names[a]}-{names[b]}" for a, b in pairs) + " |",
             "|---|" + "---:|" * len(pairs)]
    lines += [f"| {layer} | " + " | ".join(f"{s[a][b]:.3f}" for a, b in pairs) + " |"
              for layer, s in similarities.items()]
    return "\n" + "\n".join(lines)
