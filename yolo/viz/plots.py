"""Figures saved next to a run: training curves, the lr schedule, and the statistics of a dataset split."""
import matplotlib.pyplot as plt
import numpy as np

from ..data.transforms import letterboxed_box_sizes


def plot_results(rows, path):
    """results.png: loss terms per epoch and mAP per evaluation, from the metrics.csv rows."""
    if not rows:
        return
    scales = [k for k in rows[-1] if k.startswith("box_s")]  # box_s8, box_s16, box_s32: the box term per stride
    fig, axes = plt.subplots(1, 3 if scales else 2, figsize=(16.5 if scales else 11, 4))
    epochs = [r["epoch"] for r in rows]
    for key in ("loss", "box", "obj", "cls", "dfl"):  # dfl: with box_bins only
        if key in rows[-1]:
            axes[0].plot(epochs, [r.get(key, float("nan")) for r in rows], label=key, marker=".")
    axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss", yscale="log")
    axes[0].legend()
    for key in scales:
        axes[2].plot(epochs, [r.get(key, float("nan")) for r in rows], label=f"stride {key[5:]}", marker=".")
    if scales:
        axes[2].set(xlabel="epoch", ylabel="mean box term of the positives (1 - box_loss IoU)", title="box term per scale")
        axes[2].legend()
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


def plot_split(records, cfg, split, path):
    """Class counts, boxes per image, and the box-size histogram with the anchors of each scale marked."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    names = list(cfg.class_names)
    labels = np.concatenate([r.labels[~r.difficult] for r in records])
    counts = np.bincount(labels, minlength=len(names))
    axes[0].bar(range(len(names)), counts, color="tab:blue")
    axes[0].set(title=f"{split}: boxes per class", ylabel="boxes")
    axes[0].set_xticks(range(len(names)), names, rotation=90, fontsize=max(4, 9 - len(names) // 12))
    per_image = [int((~r.difficult).sum()) for r in records]
    axes[1].hist(per_image, bins=np.arange(max(per_image) + 2) - 0.5, color="tab:green")
    axes[1].set(title="boxes per image", xlabel="boxes", ylabel="images")
    sides = np.sqrt(np.prod(letterboxed_box_sizes(records, cfg.img_size), axis=1))
    if len(sides):
        low = max(sides.min(), 1.0)
        bins = np.geomspace(low, max(sides.max(), 2 * low), 40)
        axes[2].hist(sides, bins=bins, color="grey")
    for scale, (colour, anchors) in enumerate(zip(("tab:red", "tab:orange", "tab:purple"), cfg.anchors)):
        for k, (w, h) in enumerate(anchors):
            axes[2].axvline(np.sqrt(w * h), color=colour, ls="--", lw=1,
                            label=f"anchors stride {cfg.strides[scale]}" if k == 0 else None)
    axes[2].set(xscale="log", title=f"box size after letterbox to {cfg.img_size}", xlabel="sqrt(w*h) px",
                ylabel="boxes")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
