"""Checkpoints: plain dicts of tensors and Python primitives, so `torch.load(..., weights_only=True)` reads them.

Writes are atomic: the file is written beside its destination and renamed over it, so a crash mid-write
leaves the previous checkpoint intact (a rename within one folder is atomic on POSIX and Windows).
"""
import os
from pathlib import Path

import torch


def save_checkpoint(state, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a checkpoint, unsafe pickle ...
        raise ValueError(f"cannot load checkpoint {path}: {e}") from e


def newest_checkpoint(runs_dir, name="best.pt"):
    """The `name` file of the most recently modified run under runs_dir, or None."""
    found = sorted(Path(runs_dir).glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None
