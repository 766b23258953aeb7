"""Representation similarity figures: one tasks x tasks heatmap per layer, and similarity against depth."""
import numpy as np


def draw_similarity_heatmaps(similarities, task_names):
    """similarities: {layer name: (T, T) array} in depth order (yolo/research/rsa.py). One heatmap per layer, one figure."""
    import matplotlib.pyplot as plt

    layers = list(similarities)
    num = len(task_names)
    fig, axes = plt.subplots(1, len(layers), figsize=(1.35 * len(layers) + 1.2, 2.0 + 0.25 * num), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        s = np.asarray(similarities[layer])
        image = ax.imshow(s, vmin=0, vmax=1, cmap="viridis")
        for a in range(num):
            for b in range(num):
                ax.text(b, a, f"{s[a, b]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if s[a, b] > 0.6 else "white")
        ax.set_title(layer, fontsize=9)
        ax.set_xticks(range(num), task_names if num <= 4 else range(num), fontsize=7, rotation=90)
        ax.set_yticks(range(num), task_names if num <= 4 else range(num), fontsize=7)
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    fig.colorbar(image, ax=list(axes[0]), fraction=0.02, pad=0.01, label="CKA of the RDMs")
    fig.suptitle("similarity of the single-task models' representations, per layer (1 = the same)", fontsize=10)
    fig.subplots_adjust(bottom=0.3, top=0.8, left=0.06, right=0.9)
    return fig


def plot_similarity_depth(similarities, task_names):
    """Similarity of every pair of tasks against the layer (backbone, then the neck blocks in order)."""
    import matplotlib.pyplot as plt

    layers = list(similarities)
    num = len(task_names)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for a in range(num):
        for b in range(a + 1, num):
            ax.plot(range(len(layers)), [similarities[layer][a][b] for layer in layers], marker="o",
                    label=f"{task_names[a]} vs {task_names[b]}")
    ax.set_xticks(range(len(layers)), layers, rotation=30, fontsize=8)
    ax.set(xlabel="layer (a split after it shares everything up to it)", ylabel="similarity (CKA of RDMs)",
           ylim=(min(0, *[np.min(s) for s in similarities.values()]), 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
