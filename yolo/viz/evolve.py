"""evolve.png: every evolved gene against the fitness of the trials that used it, the best trial marked."""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .figures import save_figure


def plot_evolution(history, genes, path, palette=False):
    """One panel per gene: value (x) against fitness (y) of every trial, coloured by generation (dark = early);
    generation 1 (the config as it was) is ringed in black, the best trial is a red star, its value in the title."""
    columns = min(5, len(genes))
    rows = int(np.ceil(len(genes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.9 * columns, 2.5 * rows), squeeze=False)
    fitness = np.array([r.fitness for r in history])
    order = np.array([r.generation for r in history])
    best = int(np.argmax(fitness))
    for ax, gene in zip(axes.flat, genes):
        values = np.array([r.genes[gene] for r in history])
        ax.scatter(values, fitness, c=order, cmap="viridis", s=14, alpha=0.8)
        ax.scatter(values[0], fitness[0], s=70, facecolor="none", edgecolor="black", zorder=3)
        ax.scatter(values[best], fitness[best], marker="*", s=160, color="tab:red", edgecolor="black", zorder=4)
        ax.set_title(f"{gene} = {values[best]:.4g} (start {values[0]:.4g})", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(genes):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("fitness", fontsize=8)
    fig.suptitle(f"{len(history)} trials: best fitness {fitness[best]:.4f} (generation {history[best].generation}), "
                 f"generation 1 {fitness[0]:.4f}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90, palette=palette)
