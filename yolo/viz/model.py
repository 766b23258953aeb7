"""The model's structure as figures: the multi-task branching tree (which tasks share each neck block)."""
import numpy as np

from .detections import class_colour


def draw_branching(groups, task_names, block_names, backbone_groups=None):
    """The branching tree as a figure: columns backbone, neck blocks 0..7 (one box per copy, placed at the rows of
    the tasks it serves), one head per task; a line joins a copy to the copies of the next block it feeds.
    groups: neck_groups(branching, num_tasks); backbone_groups: the tasks of each backbone copy (None: one backbone
    for every task; several: separate models, tree_search.tree_groups). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    num_tasks = len(task_names)
    everyone = list(range(num_tasks))
    columns = ([("backbone", backbone_groups or [everyone])]
               + [(f"{j} {name}", g) for j, (name, g) in enumerate(zip(block_names, groups))]
               + [("head", [[t] for t in everyone])])
    fig, ax = plt.subplots(figsize=(1.25 * len(columns), 0.8 * num_tasks + 1.4))
    # task 0 on top; the tasks of one backbone (separate models) on adjacent rows, so that its box sits on them only
    order = [t for group in backbone_groups or [everyone] for t in group]
    row = {t: num_tasks - 1 - k for k, t in enumerate(order)}
    previous = None
    for x, (title, column_groups) in enumerate(columns):
        centres = [(x, float(np.mean([row[t] for t in group]))) for group in column_groups]
        if previous is not None:
            for (px, py), parent in zip(*previous):
                for (cx, cy), group in zip(centres, column_groups):
                    if set(group) <= set(parent):
                        ax.plot([px, cx], [py, cy], color="0.6", zorder=1)
        for (cx, cy), group in zip(centres, column_groups):
            shared = len(group) > 1
            colour = "0.85" if len(group) == num_tasks and num_tasks > 1 else (
                "#f6d7a7" if shared else tuple(c / 255 for c in class_colour(group[0], num_tasks)))
            ax.text(cx, cy, "\n".join(task_names[t] for t in group), ha="center", va="center", fontsize=8, zorder=2,
                    bbox=dict(boxstyle="round", facecolor=colour, edgecolor="0.3"))
        ax.text(x, num_tasks - 0.35, title, ha="center", va="bottom", fontsize=9, weight="bold")
        previous = (centres, column_groups)
    ax.set(xlim=(-0.6, len(columns) - 0.4), ylim=(-0.7, num_tasks + 0.1))
    ax.axis("off")
    ax.set_title("which tasks share each part (grey: all tasks, orange: some, coloured: one)", fontsize=10)
    fig.tight_layout()
    return fig
