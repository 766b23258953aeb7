"""Pictures of a head search: the architecture weights over the search, and the cells a genotype keeps."""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

from ..models.search_cell import EDGES, NUM_NODES, TOWERS
from ..models.search_ops import OPS
from .figures import save_figure


def op_colours():
    """none grey; std blues, sep oranges, darker = deeper, the _dil candidates dashed (see op_style)."""
    blues, oranges = plt.get_cmap("Blues"), plt.get_cmap("Oranges")
    colours = {"none": "0.5"}
    for name in OPS[1:]:
        family, rest = name.split("_", 1)
        shade = {"x1": 0.45, "x2": 0.7, "x3": 0.95, "x1_dil": 0.45, "x2_dil": 0.7}[rest]
        colours[name] = (blues if family == "std" else oranges)(shade)
    return colours


def op_style(name):
    return "--" if name.endswith("dil") else ":" if name == "none" else "-"


def plot_alphas(steps, history, path):
    """alphas.png: softmax(alpha) of every op on every edge against the search step.
    steps: (T,); history: {tower: (T, 9, len(OPS)) softmax weights}."""
    colours = op_colours()
    fig, axes = plt.subplots(len(TOWERS), len(EDGES), figsize=(2.1 * len(EDGES), 2.3 * len(TOWERS) + 0.8),
                             sharex=True, sharey="row", squeeze=False)
    for row, tower in enumerate(TOWERS):
        weights = np.asarray(history[tower])
        for k, (node, src) in enumerate(EDGES):
            ax = axes[row, k]
            for o, name in enumerate(OPS):
                ax.plot(steps, weights[:, k, o], color=colours[name], ls=op_style(name), lw=1.2, label=name)
            ax.set_title(f"{tower}: {src} -> {node}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[row, 0].set_ylabel("softmax(alpha)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(OPS), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.9, bottom=0.2, wspace=0.12, hspace=0.35)  # tight_layout: slow
    save_figure(fig, path)


def draw_cells(genotype, path, title="", palette=False):
    """The cells of a genotype side by side: inputs, nodes, kept edges labelled with their op, the concat."""
    colours = op_colours()
    fig, axes = plt.subplots(1, len(TOWERS), figsize=(6.5 * len(TOWERS), 4.2), squeeze=False)
    input_names = {"box": ("p", "p"), "cls": ("box", "p")}  # the class tower reads [box feature, p]
    for ax, tower in zip(axes[0], TOWERS):
        draw_cell(ax, genotype[tower], input_names[tower], colours)
        ax.set_title(f"{tower} tower", fontsize=11)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, palette=palette)


def draw_cell(ax, nodes, input_names, colours):
    # states 0, 1 on the left, nodes 2..4 on a diagonal, the concat on the right
    position = {0: (0.0, 2.0), 1: (0.0, 0.0), 2: (1.6, 2.4), 3: (3.0, 1.2), 4: (4.4, 2.4), "out": (5.8, 1.2)}
    labels = {0: f"in 0 ({input_names[0]})", 1: f"in 1 ({input_names[1]})", 2: "node 2", 3: "node 3",
              4: "node 4", "out": "concat\n+ 1x1"}
    for node, edges in enumerate(nodes, start=2):
        for bend, (op, src) in zip((0.25, -0.25), edges):
            start, end = position[src], position[node]
            ax.annotate("", xy=end, xytext=start, arrowprops=dict(
                arrowstyle="-|>", color=colours[op], lw=2, ls=op_style(op), shrinkA=22, shrinkB=22,
                connectionstyle=f"arc3,rad={bend}"))
            mid = np.add(start, end) / 2 + bend * np.array([end[1] - start[1], start[0] - end[0]]) / 2  # arc3 apex
            ax.text(*mid, op, fontsize=8, ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=colours[op], lw=0.8))
        ax.annotate("", xy=position["out"], xytext=position[node], arrowprops=dict(
            arrowstyle="-|>", color="0.75", lw=1, shrinkA=22, shrinkB=26))
    for state, (x, y) in position.items():
        is_input = state in (0, 1)
        ax.add_patch(FancyBboxPatch((x - 0.45, y - 0.22), 0.9, 0.44, boxstyle="round,pad=0.05",
                                    fc="#dfe8f5" if is_input else "#f3f3f3" if state == "out" else "#fde7cf",
                                    ec="0.3", lw=1))
        ax.text(x, y, labels[state], ha="center", va="center", fontsize=8)
    ax.set_xlim(-0.7, 6.5)
    ax.set_ylim(-0.6, 3.0)
    ax.set_aspect("equal")
    ax.axis("off")
    assert len(nodes) == NUM_NODES - 2
