"""RSA on trained models: similarity per layer of two models of one task (other initialisation) against a model of
another task, as a markdown table, and the similarity-against-depth figure of the three pairs.

    python bench/rsa_same_vs_other.py --config configs/multitask_shapes.py \
        --ckpts runs/a_seed0/best.pt,runs/a_seed1/best.pt,runs/b/best.pt [--images 100] [--figure imgs/x.png] [--field value ...]

The first two checkpoints are of task 0 of the config, the third of task 1; every model runs over rsa_images val
images of both tasks (as --task rsa does).
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit  # noqa: E402
from yolo.config import apply_overrides, config_from_dict, load_config, task_configs  # noqa: E402
from yolo.engine.checkpoint import load_checkpoint, load_weights  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.research.rsa import LAYER_NAMES, similarity_matrices  # noqa: E402
from yolo.tasks.rsa import val_images  # noqa: E402
from yolo.viz.figures import save_figure  # noqa: E402
from yolo.viz.rsa import plot_similarity_depth  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/multitask_shapes.py")
    parser.add_argument("--ckpts", required=True, help="task 0 model, task 0 model (other seed), task 1 model")
    parser.add_argument("--images", type=int, default=100, help="val images per task")
    parser.add_argument("--figure", type=Path, default=None, help="write the depth plot here (8-bit palette PNG)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table to this file")
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides).finalize()
    paths = args.ckpts.split(",")
    models = []
    for path in paths:
        ckpt = load_checkpoint(path)
        model = build_model(config_from_dict(ckpt["config"]))
        load_weights(model, ckpt["model"], path)
        models.append(model.eval())
    saved = config_from_dict(load_checkpoint(paths[0])["config"])
    cfg.img_size = saved.img_size
    image_sets = [val_images(task, args.images) for task in task_configs(cfg.finalize())[:2]]
    sims = similarity_matrices(models, image_sets, measure=cfg.rsa_measure)  # --rsa_measure cka: CKA
    names = [f"{cfg.task_names[0]} seed A", f"{cfg.task_names[0]} seed B", cfg.task_names[1]]
    counts = [sum(len(batch) for batch in images) for images in image_sets]
    lines = [f"{counts[0]} + {counts[1]} val images; {cfg.rsa_measure} of RDMs, mean over the two image sets", "",
             f"| layer | {names[0]} vs {names[1]} | {names[0]} vs {names[2]} | {names[1]} vs {names[2]} |",
             "|---|---:|---:|---:|"]
    lines += [f"| {name} | {sims[name][0, 1]:.3f} | {sims[name][0, 2]:.3f} | {sims[name][1, 2]:.3f} |"
              for name in LAYER_NAMES]
    emit("\n".join(lines), args.out)
    if args.figure:
        save_figure(plot_similarity_depth(sims, names), args.figure, palette=True)


if __name__ == "__main__":
    main()
