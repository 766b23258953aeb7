"""Saving figures: one function for every PNG the project draws."""
import io

import matplotlib.pyplot as plt
from PIL import Image


def save_figure(fig, path, dpi=100, palette=False, close=True):
    """Write a matplotlib figure as PNG. palette=True stores 256 colours: the pictures of the docs, about 3x smaller
    files (the noisy backgrounds of the built-in images do not need more)."""
    if palette:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        buffer.seek(0)
        Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    else:
        fig.savefig(path, dpi=dpi)
    if close:
        plt.close(fig)
