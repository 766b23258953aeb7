"""Execute the notebooks in full mode and save them with their outputs, as they are committed.

    python notebooks/execute.py [notebooks/04_training_and_results.ipynb ...]   # default: every notebook

Run it from anywhere; the kernels start in the repository root, as CI's fast-mode test does. Each notebook is run
top to bottom in a fresh kernel (a failing cell stops the script and leaves the committed file as it was), its
figures are stored as 256-colour PNGs (a notebook stays well under 2 MB), and the cell marked with metadata
`"readme_figure": "<name>"` also becomes imgs/<name>.png (at most 300 KB) for the README's learning-path table.
Train the default run first (`python main.py --task train`) so that notebook 04 shows a well-trained model.
"""
import base64
import io
import os
import sys
from pathlib import Path

import nbclient
import nbformat
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 1800
README_FIGURE_MAX_BYTES = 300 * 1024


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


def execute(path):
    nb = nbformat.read(path, as_version=4)
    os.environ.pop("YOLO_NB_FAST", None)  # full mode
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    compress_figures(nb)
    nbformat.write(nb, path)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for notebook in paths:
        execute(notebook)
