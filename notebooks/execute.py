"""Execute the notebooks in full mode and save them with their outputs, as they are committed.

    python notebooks/execute.py [notebooks/04_training_and_results.ipynb ...]   # default: every notebook

Run it from anywhere; the kernels start in the repository root, as CI's fast-mode test does. Each notebook is run
top to bottom in a fresh kernel (a failing cell stops the script and leaves the committed file as it was), its
figures are stored as 256-colour PNGs (a notebook stays well under 2 MB), and the cell marked with metadata
`"readme_figure": "<name>"` also becomes imgs/<name>.png (at most 300 KB) for the README's learning-path table.
Train the default run first (`python main.py --task train`) so that notebook 04 shows a well-trained model.

The kernels run with TQDM_DISABLE=1, so a saved cell shows its results and log lines, not hundreds of progress-bar
frames (yolo/ makes its bars with yolo.engine.logs.progress, which leaves the switch to tqdm). Each saved notebook
records what it was executed with in its metadata (RECORD_KEY): the commit, and the values of the config fields its
outputs depend on (RECORDED_FIELDS). tests/test_notebooks.py fails when one of them is no longer today's default.
"""
import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 1800
README_FIGURE_MAX_BYTES = 300 * 1024
# the kernels inherit this environment: tqdm reads TQDM_DISABLE as the default of every bar's `disable`
KERNEL_ENV = {"TQDM_DISABLE": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
RECORD_KEY = "yolo_executed_with"
# notebook -> (the config file it loads, the fields its outputs show or depend on and that it does not set itself)
RECORDED_FIELDS = {
    "01_data_and_augmentations.ipynb": ("configs/my_config.py", (
        "dataset", "backbone", "width", "img_size", "hflip_prob", "affine_scale", "affine_translate", "color_jitter")),
    "02_anchors_and_label_assignment.ipynb": ("configs/my_config.py", (
        "dataset", "backbone", "width", "img_size", "anchors", "match_iou_thres")),
    "03_model_and_loss.ipynb": ("configs/my_config.py", (
        "dataset", "backbone", "width", "img_size", "label_assignment", "match_iou_thres", "box_weight", "obj_weight",
        "cls_weight")),
    "04_training_and_results.ipynb": ("configs/my_config.py", (  # the default run it shows, and the evaluation
        "run_name", "backbone", "width", "img_size", "epochs", "cls_weight", "predict_conf", "pre_nms_topk",
        "nms_merge")),
    "05_multitask.ipynb": ("configs/multitask_shapes.py", (
        "backbone", "width", "branching", "box_weight", "obj_weight", "cls_weight")),
    "06_which_layers_to_share.ipynb": ("configs/multitask_shapes.py", (
        "backbone", "width", "box_weight", "obj_weight", "cls_weight")),
    "07_head_search.ipynb": ("configs/my_config.py", ("backbone", "width", "head_channels", "cell_channels")),
}


def palette_png(image, max_bytes=None):
    """PNG bytes of a 256-colour copy of `image`, shrunk by 10 % steps until it fits max_bytes (if given)."""
    scale = 1.0
    while True:
        buffer = io.BytesIO()
        size = (round(image.width * scale), round(image.height * scale))
        image.resize(size, Image.LANCZOS).quantize(colors=256).save(buffer, format="PNG", optimize=True)
        if max_bytes is None or buffer.tell() <= max_bytes:
            return buffer.getvalue()
        scale *= 0.9


def compress_figures(nb):
    """Re-encode every PNG output in place; write the readme_figure cells' last figure to imgs/."""
    for cell in nb.cells:
        pngs = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        for output in pngs:
            image = Image.open(io.BytesIO(base64.b64decode(output["data"]["image/png"]))).convert("RGB")
            output["data"]["image/png"] = base64.b64encode(palette_png(image)).decode("ascii")
        name = cell.metadata.get("readme_figure")
        if name and pngs:
            image = Image.open(io.BytesIO(base64.b64decode(pngs[-1]["data"]["image/png"]))).convert("RGB")
            (ROOT / "imgs" / f"{name}.png").write_bytes(palette_png(image, README_FIGURE_MAX_BYTES))


def head_commit():
    """The commit checked out in ROOT, or "unknown" outside a git clone."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def config_values(config_file, fields):
    """Today's values of `fields` in the config file (a path relative to ROOT), as JSON would store them (tuples
    become lists), so that a recorded value and today's compare equal when they are the same."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the yolo package and configs/ (a config file may import another)
    from yolo.config import load_config

    config = load_config(ROOT / config_file).to_dict()
    return json.loads(json.dumps({field: config.get(field, "<no such field today>") for field in fields}))


def record_execution(nb, name, shown=None, commit=None):
    """Write into nb's metadata the commit and the values of the config fields notebook `name` depends on
    (RECORDED_FIELDS): today's values, except those in `shown` ({field: value}), for a notebook whose outputs show
    other values than today's config (it was executed with those). Cells are not touched."""
    config_file, fields = RECORDED_FIELDS[name]
    unknown = set(shown or {}) - set(fields)
    assert not unknown, f"{name}: {sorted(unknown)} are not among its RECORDED_FIELDS"
    values = {**config_values(config_file, fields), **json.loads(json.dumps(shown or {}))}
    nb.metadata[RECORD_KEY] = {"commit": commit or head_commit(), "config_file": config_file, "config": values}
    return nb


def stale_fields(path):
    """One line for each recorded config value of the notebook at `path` that differs from today's default, naming
    the notebook, the field, both values and the command that re-executes it; [] when none (or nothing recorded)."""
    path = Path(path)
    record = nbformat.read(path, as_version=4).metadata.get(RECORD_KEY)
    if record is None:
        return []
    recorded = record["config"]
    today = config_values(record["config_file"], list(recorded))
    return [f"{path.name}: {field} was {recorded[field]!r} when it was executed, today's default is "
            f"{today[field]!r} ({record['config_file']}): python notebooks/execute.py notebooks/{path.name}"
            for field in recorded if recorded[field] != today[field]]


def execute(path):
    if path.name not in RECORDED_FIELDS:  # checked before the run: a notebook executed for nothing is no use
        sys.exit(f"error: {path.name} has no entry in RECORDED_FIELDS (notebooks/execute.py): add the config file "
                 f"and the fields its outputs show")
    nb = nbformat.read(path, as_version=4)
    os.environ.pop("YOLO_NB_FAST", None)  # full mode
    os.environ.update(KERNEL_ENV)
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    compress_figures(nb)
    record_execution(nb, path.name)
    nbformat.write(nb, path)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for notebook in paths:
        execute(notebook)
