"""What several bench scripts share."""
from pathlib import Path


def emit(text, out=None):
    """Print a result table, and also write it to `out` (a path, or None) with its folders."""
    print(text)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
