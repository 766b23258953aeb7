"""The ONNX files exported from a checkpoint: where `--task export` writes them, which one backend onnxruntime runs
for a .pt, and the fingerprint that ties an export to the checkpoint content it was made from.

    <run>/best.onnx                                for <run>/best.pt inside runs_dir
    runs_dir/export/<stem>-<hash>/<stem>.onnx      for a checkpoint elsewhere; <hash>: 8 hex digits of the SHA-256
                                                   of its resolved path, so two files named best.pt in different
                                                   folders never share an export (nothing is written beside the
                                                   user's file)

That name holds the first export. An export never replaces the file of another checkpoint, of this path before it
was re-trained, or of other options: it takes the next free name, best2.onnx, best3.onnx ... (as runs do: exp,
exp2); the same checkpoint content with the same options replaces its own file. Every file records its source in
its metadata, {"checkpoint": resolved path, "sha256": the first 16 hex digits of the file's SHA-256, "bytes": size},
and backend onnxruntime runs the newest export whose sha256 is the checkpoint's now, or refuses.
"""
import hashlib
from pathlib import Path

from loguru import logger

from ..models.onnx_model import read_metadata
from .folders import next_free_path, numbered_paths

FINGERPRINT_HEX = 16  # 64 bits of SHA-256: two different checkpoints do not share it by chance


def exported_path(ckpt_path, runs_dir):
    """The first name an export of the checkpoint takes (the module docstring)."""
    ckpt_path, runs_dir = Path(ckpt_path).resolve(), Path(runs_dir).resolve()
    if runs_dir in ckpt_path.parents:
        return ckpt_path.with_suffix(".onnx")
    folder = f"{ckpt_path.stem}-{hashlib.sha256(str(ckpt_path).encode()).hexdigest()[:8]}"
    return runs_dir / "export" / folder / f"{ckpt_path.stem}.onnx"


def export_files(ckpt_path, runs_dir):
    """The existing files of the export names of a checkpoint: <stem>.onnx, <stem>2.onnx, ... in numeric order."""
    return numbered_paths(exported_path(ckpt_path, runs_dir))


def fingerprint(ckpt_path):
    """The source an export records: the checkpoint's resolved path, the first FINGERPRINT_HEX hex digits of the
    SHA-256 of its content (a re-trained file at the same path has another), and its size."""
    path = Path(ckpt_path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"checkpoint": str(path), "sha256": digest.hexdigest()[:FINGERPRINT_HEX], "bytes": path.stat().st_size}


def recorded(path):
    """(source, export options) that an .onnx file records, or (None, None) for a file that is not a readable export
    of the current format (a foreign model at an export's name is never taken for one)."""
    try:
        meta = read_metadata(path)
    except ValueError:
        return None, None
    source = meta["source"]
    return (source if isinstance(source, dict) else None), meta["export"]


def export_destination(ckpt_path, runs_dir, source, options):
    """(path, whether it replaces an earlier export) for an export of `source` (fingerprint) made with `options`:
    the file of the same checkpoint content and options when there is one (the same export again), else the first
    free name, created empty at once so that an export running beside this one cannot take it too."""
    for path in export_files(ckpt_path, runs_dir):
        recorded_source, recorded_options = recorded(path)
        if recorded_source and recorded_source.get("sha256") == source["sha256"] and recorded_options == options:
            return path, True
    return next_free_path(exported_path(ckpt_path, runs_dir)), False


def export_of(ckpt_path, runs_dir):
    """The .onnx backend onnxruntime runs for the checkpoint ckpt_path: of its export_files, the newest that records
    the checkpoint's content as it is now. The export of another checkpoint at that name (a file of the same name
    elsewhere, or this file before it was re-trained) never runs in its place: FileNotFoundError or ValueError with
    the export command instead."""
    command = f"python main.py --task export --ckpt_path {ckpt_path}"
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist (backend onnxruntime runs an export of a "
                                f"checkpoint; to run an .onnx file, give it as --ckpt_path)")
    files = export_files(ckpt_path, runs_dir)
    if not files:
        raise FileNotFoundError(f"backend onnxruntime needs an exported model: {exported_path(ckpt_path, runs_dir)} "
                                f"does not exist; export it first: {command}")
    wanted = fingerprint(ckpt_path)["sha256"]
    matching = [path for path in files if (recorded(path)[0] or {}).get("sha256") == wanted]
    if not matching:
        raise ValueError(f"backend onnxruntime: {', '.join(p.name for p in files)} in {files[0].parent} "
                         f"{'was' if len(files) == 1 else 'were'} not exported from {ckpt_path} as it is now "
                         f"(another checkpoint, or this one before it changed); export it: {command}")
    newest = max(matching, key=lambda path: path.stat().st_mtime)
    if len(matching) > 1:
        logger.info(f"{len(matching)} exports of {ckpt_path} ({', '.join(p.name for p in matching)}): running the "
                    f"newest, {newest.name}")
    return newest
