"""What `--task predict` reads and the names it writes: config predict_source as a list of image files, a video
file or a webcam index; the names and ids of images in its outputs; YOLO-format label lines.

    None                 a few validation images of every task (predict_max_images)
    0, 1 ...             a webcam (an int; `--predict_source 0` on the command line is one), unless a file or
                         folder of that name exists
    clip.mp4             a video file (VIDEO_EXTENSIONS): every predict_vid_stride-th frame
    photo.jpg            one image
    photos/              every image below the folder, searched recursively
    "photos/**/*.jpg"    a glob (** spans folders)
    list.txt             a text file of image paths, one a line; relative paths are relative to the file's folder
"""
import glob
import os
from pathlib import Path

import numpy as np
import torch

from ..boxes import box_convert
from ..data.records import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")


def webcam_index(source):
    """The webcam index that predict_source names (an int, or a string of digits, that is no existing path: the
    command line reads `--predict_source 2024` as an int, and a folder ./2024 wins), or None when it names files."""
    if os.path.exists(str(source)):
        return None
    if isinstance(source, int) and not isinstance(source, bool):
        return source
    if isinstance(source, str) and source.isascii() and source.isdigit():
        return int(source)
    return None


def is_video(source):
    """Whether predict_source is a video file (by its extension, VIDEO_EXTENSIONS)."""
    path = Path(str(source)) if source is not None else None  # an int names a file when it is no webcam
    return path is not None and path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file()


def image_files(source):
    """The image files predict_source names (module docstring), sorted; a listed path that does not exist is kept
    (the caller skips it by name, with a count). Nothing to read is a FileNotFoundError naming the source."""
    text, path = str(source), Path(str(source))  # an int (`--predict_source 2024`) that names a path
    if path.is_file() and path.suffix.lower() == ".txt":
        files = listed_files(path)
        if not files:
            raise FileNotFoundError(f"predict_source {path} lists no image (one path a line)")
        return files
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise FileNotFoundError(f"predict_source {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}), "
                                    f"not in its subfolders either")
        return files
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True)
                       if Path(p).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(p))
        if not files:
            raise FileNotFoundError(f"predict_source {text} matches no image file ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    raise FileNotFoundError(f"predict_source {text} does not exist (an image, a folder, a glob, a .txt list of "
                            f"images, a video ({', '.join(VIDEO_EXTENSIONS)}) or a webcam index)")


def listed_files(listing):
    """The paths a .txt file lists, one a line (blank lines and lines starting with # left out); a relative path
    is relative to the file's folder, as in an Ultralytics data.yaml's image lists."""
    files = []
    for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(os.path.expanduser(line))
            files.append(path if path.is_absolute() else listing.parent / path)
    return files


def relative_names(paths):
    """Each path relative to the deepest folder that holds them all ("b.png", "sub/c.jpg"): the file names of
    predictions.json and images.json, unique where the paths are."""
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return [Path(os.path.relpath(p, root)).as_posix() for p in absolute]


def image_ids(paths):
    """The COCO image id of each image: its file name's stem when every stem is a distinct number (COCO's
    000000000139.jpg -> 139), else every image its index in `paths` (sorted, so the same files get the same ids)."""
    stems = [Path(p).stem for p in paths]
    if all(s.isascii() and s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(len(paths)))


def picture_names(paths):
    """A file-name stem per image for the pictures and label files: its own, or stem_<index> when an earlier image
    has the same stem (a folder searched recursively, or two tasks' datasets, may hold two 1.jpg)."""
    names, seen = [], set()
    for index, path in enumerate(paths):
        name = Path(path).stem
        name = f"{name}_{index}" if name in seen else name
        seen.add(name)
        names.append(name)
    return names


def yolo_label_lines(boxes, scores, labels, width, height, with_conf=False):
    """Detections as YOLO label lines `class cx cy w h [score]`: box centre and size normalised by the image's
    width and height, 6 decimals; boxes xyxy in the image's pixels."""
    boxes = torch.as_tensor(np.asarray(boxes, np.float64)).reshape(-1, 4)
    cxcywh = box_convert(boxes, "xyxy", "cxcywh") / torch.tensor([width, height, width, height], dtype=torch.float64)
    lines = []
    for row, score, label in zip(cxcywh.tolist(), np.asarray(scores).tolist(), np.asarray(labels).tolist()):
        line = f"{int(label)} " + " ".join(f"{v:.6f}" for v in row)
        lines.append(f"{line} {score:.6f}" if with_conf else line)
    return lines
