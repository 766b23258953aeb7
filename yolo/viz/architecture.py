"""The detector drawn from a model object (notebooks 03 and 05): backbone -> YOLOv3 neck -> heads, with the real
wiring of the neck (yolo/models/neck.py's run_neck), every block's channels and grid, and the head outputs'
(B, A, H, W, 5 + C) layout. The numbers come from one forward pass with hooks, so the drawing follows --backbone,
--width, --img_size and, for a multi-task model, the copies of each neck block that `branching` makes.
"""
import numpy as np
import torch

from ..branching import NECK_BLOCK_NAMES

# where each neck block sits in the drawing: (column, row); rows top to bottom stride 32, 16, 8, with the up blocks
# between two rows, so the top-down path of the feature pyramid runs straight down column 1
ROW_Y = {32: 5.2, 16: 2.6, 8: 0.0}  # the rows of the three strides; the up blocks sit half-way
BLOCK_PLACES = {"top5": (1, 5.2), "out5": (2, 5.2), "up5": (1, 3.9), "top4": (1, 2.6), "out4": (2, 2.6),
                "up4": (1, 1.3), "top3": (1, 0.0), "out3": (2, 0.0)}
BLOCK_KINDS = {"top": "5 convs (1x1 / 3x3)", "out": "3x3 conv", "up": "1x1 conv, upsample x2"}
# the data flow of run_neck: (from, to); "C3".."C5" are the backbone outputs, "head32".. the heads of each stride row
WIRING = [("C5", "top5"), ("top5", "out5"), ("out5", "head32"), ("top5", "up5"), ("up5", "top4"), ("C4", "top4"),
          ("top4", "out4"), ("out4", "head16"), ("top4", "up4"), ("up4", "top3"), ("C3", "top3"), ("top3", "out3"),
          ("out3", "head8")]
COLUMN_X = (0.0, 3.0, 5.6, 8.2, 10.9)
BOX_W, BOX_H = 2.2, 0.78


@torch.no_grad()
def trace_architecture(model, img_size):
    """Run one (1, 3, img_size, img_size) image through every task of `model` with forward hooks. Returns
    {'input': shape, 'features': [(channels, h, w, stride) of C3, C4, C5], 'blocks': per neck block a list of
    {'tasks', 'in', 'out'} per copy, 'heads': per task a list of output shapes (1, A, H, W, 5 + C) per scale,
    'head_labels': per task what its head computes (the towers, if any, and the prediction conv's channels)}."""
    seen, handles = {}, []

    def remember(key):
        def hook(module, inputs, output):
            seen[key] = (inputs, output)
        return hook

    handles.append(model.backbone.register_forward_hook(remember("backbone")))
    for j, copies in enumerate(model.neck.blocks):
        for c, module in enumerate(copies):
            handles.append(module.register_forward_hook(remember((j, c))))
    was_training = model.training
    image = torch.zeros(1, 3, img_size, img_size, dtype=torch.uint8, device=model.anchors.device)
    try:
        outputs = model.eval()(image, task=None)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    features = [(f.shape[1], f.shape[2], f.shape[3], img_size // f.shape[2]) for f in seen["backbone"][1]]
    blocks = [[{"tasks": group, "in": tuple(seen[(j, c)][0][0].shape), "out": tuple(seen[(j, c)][1].shape)}
               for c, group in enumerate(groups)] for j, groups in enumerate(model.neck.groups)]
    heads = [[tuple(o.shape) for o in task_outputs] for task_outputs in outputs]
    labels = [head_label(head) for head in model.heads]
    return {"input": tuple(image.shape), "features": features, "blocks": blocks, "heads": heads,
            "head_labels": labels}


def head_label(head):
    """'1x1 conv -> 3 x (5 + 4) ch' for a plain head; towers in front for a tower head; with box bins R the conv
    has 4 R box channels per anchor instead of 4 (their expectations leave the head as the 4 box numbers)."""
    predict = getattr(head, "predict", head)  # a TowerHead's prediction convs sit in its YOLOHead
    a, c, bins = predict.num_anchors, predict.num_classes, predict.box_bins
    per_anchor = f"4x{bins} + 1 + {c}" if bins else f"5 + {c}"
    towers = "towers + " if predict is not head else ""
    return f"{towers}1x1 conv -> {a} x ({per_anchor}) ch"


def draw_architecture(trace, task_names=("task 0",), backbone_name="backbone", title=None):
    """The trace of trace_architecture as a diagram: backbone outputs C3..C5 on the left, the neck's 8 blocks in
    their real wiring, one head per task and scale, and each head's output tensor. A block with several copies
    (multi-task branching) is split into one row per copy, labelled with the tasks it serves: grey = all tasks,
    orange = some, a task's colour = that task alone. Returns the figure."""
    import matplotlib.pyplot as plt

    num_tasks = len(trace["heads"])
    task_names = list(task_names) if len(task_names) == num_tasks else [f"task {t}" for t in range(num_tasks)]
    fig, ax = plt.subplots(figsize=(14.5, 7.6 + 0.35 * max(num_tasks - 1, 0)))
    ports = {}  # name -> (x_left, x_right, y) for the arrows
    for (channels, h, w, stride), name, y in zip(trace["features"], ("C3", "C4", "C5"), (ROW_Y[8], ROW_Y[16], ROW_Y[32])):
        ax.text(COLUMN_X[0] + 0.55, y, f"{name}\n{channels} ch, {h}x{w}\nstride {stride}", ha="left", va="center",
                fontsize=9)
        ports[name] = (COLUMN_X[0], COLUMN_X[0] + 1.6, y)
    _box(ax, COLUMN_X[0], ROW_Y[16], 1.0, ROW_Y[32] + BOX_H, "0.85", f"{backbone_name}\n\ninput\n{_shape(trace['input'])}", rotation=90)
    for j, (name, copies) in enumerate(zip(NECK_BLOCK_NAMES, trace["blocks"])):
        column, y = BLOCK_PLACES[name]
        x = COLUMN_X[column]
        c_in, c_out, h, w = copies[0]["in"][1], copies[0]["out"][1], copies[0]["out"][2], copies[0]["out"][3]
        sizes = f"{c_in} -> {c_out} ch, {h}x{w}"
        # one copy: the sizes go inside the box; several: the box holds one row per copy, the sizes go on top
        heading = f"{j} {name}: " + (BLOCK_KINDS[name[:-1]] if len(copies) == 1 else sizes)
        ax.text(x, y + BOX_H / 2 + 0.06, heading, ha="center", va="bottom", fontsize=8.5, weight="bold")
        height = BOX_H / len(copies)
        for c, copy in enumerate(copies):
            names = ", ".join(task_names[t] for t in copy["tasks"])
            text = names if len(copies) > 1 else sizes + (f"\n{names}" if num_tasks > 1 else "")
            _box(ax, x, y + BOX_H / 2 - height * (c + 0.5), BOX_W, height, _share_colour(copy["tasks"], num_tasks),
                 text)
        ports[name] = (x - BOX_W / 2, x + BOX_W / 2, y)
    for scale, stride in enumerate((8, 16, 32)):
        y = ROW_Y[stride]
        x = COLUMN_X[3]
        height = BOX_H / num_tasks
        for t, shapes in enumerate(trace["heads"]):
            b, a, h, w, d = shapes[scale]
            cy = y + BOX_H / 2 - height * (t + 0.5)
            _box(ax, x, cy, BOX_W, height, _share_colour([t], num_tasks),
                 f"{'' if num_tasks == 1 else task_names[t] + ': '}{trace['head_labels'][t]}")
            ax.text(COLUMN_X[4] - 1.0, cy, f"({b}, {a}, {h}, {w}, 5 + {d - 5})", ha="left", va="center", fontsize=9,
                    family="monospace")
        real_stride = trace["input"][2] // trace["heads"][0][scale][2]
        ax.text(x, y + BOX_H / 2 + 0.06, f"head, stride {real_stride}", ha="center", va="bottom", fontsize=8.5,
                weight="bold")
        ports[f"head{stride}"] = (x - BOX_W / 2, x + BOX_W / 2, y)
    for source, target in WIRING:
        _arrow(ax, ports[source], ports[target])
    for name in ("top4", "top3"):  # the two joins of the top-down path
        x_left, _, y = ports[name]
        ax.text(x_left - 0.12, y + 0.1, "concat", ha="right", va="bottom", fontsize=7.5, style="italic")
    ax.text(COLUMN_X[4] - 1.0, ROW_Y[32] + 0.75, "output (B, A, H, W, 5 + C)\nper anchor: tx, ty, tw, th, obj, C classes",
            ha="left", va="bottom", fontsize=8.5)
    ax.set(xlim=(-0.7, COLUMN_X[4] + 1.5), ylim=(-0.6, ROW_Y[32] + 1.2))
    ax.axis("off")
    ax.set_title(title or "backbone -> FPN neck (top-down) -> heads, traced from the model", fontsize=11)
    fig.tight_layout()
    return fig


def _shape(shape):
    return "(" + ", ".join(str(v) for v in shape) + ")"


def _share_colour(tasks, num_tasks):
    """Grey when all tasks use it, orange when several do, the task's colour (yolo.viz.detections) when one does."""
    from .detections import class_colour

    if len(tasks) == num_tasks:
        return "0.88"
    if len(tasks) > 1:
        return "#f6d7a7"
    return tuple(0.55 + 0.45 * c / 255 for c in class_colour(tasks[0], num_tasks))


def _box(ax, x, y, width, height, colour, text, rotation=0):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor="0.3", linewidth=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=8, rotation=rotation)


def _arrow(ax, source, target):
    """From the right side of source to the left side of target; straight down when they share a column."""
    (s_left, s_right, s_y), (t_left, t_right, t_y) = source, target
    if np.isclose(s_left, t_left) and s_y != t_y:  # same column: the top-down path
        start, end = ((s_left + s_right) / 2, s_y - BOX_H / 2), ((t_left + t_right) / 2, t_y + BOX_H / 2 + 0.25)
    else:
        start, end = (s_right, s_y), (t_left, t_y)
    ax.annotate("", end, start, arrowprops=dict(arrowstyle="->", color="0.25", linewidth=1.2,
                                                connectionstyle="arc3,rad=0"))
