"""Figures saved next to the run: training curves, the lr schedule, a grid of predictions."""
import matplotlib.pyplot as plt
import numpy as np

from ..data.formats import load_image_rgb
from ..viz import draw_detections


def plot_results(rows, path):
    """results.png: loss terms per epoch and mAP per evaluation, from the metrics.csv rows."""
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in rows]
    for key in ("loss", "box", "obj", "cls"):
        axes[0].plot(epochs, [r[key] for r in rows], label=key, marker=".")
    axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss", yscale="log")
    axes[0].legend()
    evals = [r for r in rows if r.get("map50") is not None and r.get("map50") == r.get("map50")]
    axes[1].plot([r["epoch"] for r in evals], [r["map50"] for r in evals], label="mAP@0.5", marker="o")
    axes[1].plot([r["epoch"] for r in evals], [r["map"] for r in evals], label="mAP@0.5:0.95", marker="o")
    axes[1].set(xlabel="epoch", ylabel="mAP", title="validation", ylim=(0, 1))
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_lr_schedule(lrs, iters_per_epoch, path, title=""):
    """The lr of every iteration against the epoch (fractional), as --task schedule saves it."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(np.arange(len(lrs)) / iters_per_epoch, lrs)
    ax.set(xlabel="epoch", ylabel="learning rate", title=title, xlim=(0, len(lrs) / iters_per_epoch), ylim=(0, None))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prediction_grid(records, detections, class_names, conf=0.3, num_images=8, columns=4, side=256):
    """The first `num_images` records with their detections (score >= conf) drawn, tiled: (H, W, 3) uint8."""
    if not records:
        return None
    tiles = []
    for index, rec in enumerate(records[:num_images]):
        boxes, scores, labels = detections[index]
        keep = scores >= conf
        image = draw_detections(load_image_rgb(rec.image_path), boxes[keep], labels[keep], class_names, scores[keep])
        image.thumbnail((side, side))  # in place, keeps the aspect ratio
        tile = np.zeros((side, side, 3), np.uint8)
        tile[:image.height, :image.width] = np.asarray(image)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros((side, side, 3), np.uint8))
    rows = [np.concatenate(tiles[i:i + columns], 1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, 0)
