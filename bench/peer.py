"""Ours against a peer: Ultralytics YOLOv8n and the configured model, same data, image size, threads and time budget.

    python bench/peer.py --config configs/raccoon.py --minutes 15 --threads 2 [--img_size 416] [--field value ...]

One after the other, each side trains from scratch for `--minutes` of wall clock (training plus its own
evaluations): ours with `time_budget` (yolo/engine/budget.py), the peer -- YOLOv8n built from `yolov8n.yaml`, no
pretrained weights, its default recipe -- with its `time=` argument (hours). Both read the config's dataset: the
peer a YOLO-txt copy under runs/peer/<name>/data/ (images linked, labels written from our records; the user's
data folder is never written). Both are then scored by the same code, yolo/metrics.py `evaluate_detections`, on
the same records, the config's val split, from their last checkpoints (no epoch is picked on the scored split),
with every detection above conf 0.001. Printed, and written to runs/peer/<name>/peer.json: mAP@0.5, mAP@0.5:0.95,
params, GFLOPs (counted the same way for both, yolo/models/flops.py) and ms per image (forward of one image,
after warm-up, the two models timed in alternating rounds), with the ratios ours / peer.

Ultralytics is an optional dependency of this bench only (`pip install ultralytics`); without it the bench says so
and exits 0. Offline: YOLO_OFFLINE=1, its settings kept in the run folder with sync and every logging integration
off, the Arial fonts its dataset check wants supplied from matplotlib's DejaVu Sans, no plots, amp off (its AMP
check downloads weights on a GPU), pretrained=False.
`--fast` is a smoke run of seconds (tests): a budget of 0.1 min per side and 64 px images unless given.
"""
import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from loguru import logger  # noqa: E402
from PIL import Image  # noqa: E402

from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.data.dataset import build_loader, read_records  # noqa: E402
from yolo.engine.checkpoint import load_model  # noqa: E402
from yolo.engine.evaluator import evaluate  # noqa: E402
from yolo.metrics import evaluate_detections  # noqa: E402
from yolo.models.flops import count_params, gflops, ms_per_image  # noqa: E402

INSTALL = "pip install ultralytics   (bench-only; check that `pip show torch` keeps its version, else --no-deps)"
SCORE_CONF = 0.001        # both sides: every detection above this is scored (what both projects' validations use)
PEER_NMS_IOU = 0.7        # the peer's own validation NMS threshold; ours keeps the config's nms_iou
UNTRAINED_MAP = 0.01      # below this mAP@0.5 a model has hardly begun to learn: its ratio says little
EXIF_ORIENTATION = 0x0112


# ------------------------------------------------------------------------------------------ YOLO-txt copy


def yolo_lines(rec):
    """`class cx cy w h` lines (normalised by the image size) of a record's boxes; difficult / crowd boxes are left
    out, as our training leaves them out of the targets."""
    lines = []
    for (x1, y1, x2, y2), label, hard in zip(rec.boxes, rec.labels, rec.difficult):
        if hard:
            continue
        cx, cy = (x1 + x2) / 2 / rec.width, (y1 + y2) / 2 / rec.height
        w, h = (x2 - x1) / rec.width, (y2 - y1) / rec.height
        lines.append(f"{int(label)} {cx:.7f} {cy:.7f} {w:.7f} {h:.7f}")
    return lines


def exif_rotated(path):
    """True when the file carries an EXIF orientation other than 'as stored': OpenCV (the peer) would rotate it,
    our readers and annotations use the stored pixel grid."""
    try:
        with Image.open(path) as image:
            return image.getexif().get(EXIF_ORIENTATION, 1) != 1
    except OSError:
        return False


def place_image(src, dst):
    """dst as a link to src; a PNG copy without EXIF when src would be rotated on reading. Returns dst's path."""
    if exif_rotated(src):
        dst = dst.with_suffix(".png")
        with Image.open(src) as image:
            image.convert("RGB").save(dst)  # pixels as stored, no orientation tag
        return dst
    os.symlink(os.path.abspath(src), dst)
    return dst


def write_yolo_split(records, root, split):
    """root/images/<split>/<i>_<name> (links) and root/labels/<split>/<stem>.txt for every record. Returns the
    image paths in record order (the names are numbered: two folders may hold the same file name)."""
    image_dir, label_dir = Path(root, "images", split), Path(root, "labels", split)
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    paths = []
    for i, rec in enumerate(records):
        dst = place_image(rec.image_path, image_dir / f"{i:06d}_{os.path.basename(rec.image_path)}")
        (label_dir / f"{dst.stem}.txt").write_text("".join(line + "\n" for line in yolo_lines(rec)))
        paths.append(str(dst))
    return paths


def write_yolo_dataset(train_records, val_records, class_names, root):
    """A YOLO-txt copy of both splits plus data.yaml in `root` (made afresh: it belongs to this bench).
    Returns (data.yaml path, val image paths in val record order)."""
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    write_yolo_split(train_records, root, "train")
    val_paths = write_yolo_split(val_records, root, "val")
    names = ", ".join(json.dumps(n) for n in class_names)
    (root / "data.yaml").write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\n"
                                    f"nc: {len(class_names)}\nnames: [{names}]\n")
    return root / "data.yaml", val_paths


# ------------------------------------------------------------------------------------------ the two sides


def train_ours(cfg, minutes, out_dir):
    """Train the configured model for `minutes`; returns (model from its last.pt in eval mode, run folder)."""
    from yolo.engine.trainer import train
    cfg = apply_overrides(cfg, ["--time_budget", str(minutes), "--runs_dir", str(out_dir), "--run_name", "ours"])
    _, run_dir = train(cfg.finalize())
    cfg.ckpt_path = str(Path(run_dir) / "last.pt")
    model, _, _ = load_model(cfg)
    return model.cpu(), cfg, run_dir


def score_ours(model, cfg):
    """EvalResult of our model by the project's evaluator on the val split, every detection above SCORE_CONF."""
    cfg = apply_overrides(cfg, ["--conf_thres", str(SCORE_CONF)]).finalize()
    loader = build_loader(cfg, read_records(cfg, "val"), train=False)
    result, _ = evaluate(model, loader, cfg, torch.device("cpu"), show_progress=False)
    return result


def ultralytics_offline(settings_dir):
    """Import ultralytics with nothing to download: offline flag, settings in our run folder, no sync or loggers."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(settings_dir)
    from ultralytics import YOLO, settings
    from ultralytics.utils import USER_CONFIG_DIR
    # its dataset check and plots look for Arial fonts and download them when missing: matplotlib's DejaVu Sans
    # under those names instead (any TrueType font does; it only draws labels)
    import matplotlib
    dejavu = Path(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (USER_CONFIG_DIR / name).exists():
            shutil.copyfile(dejavu, USER_CONFIG_DIR / name)
    settings.update({key: False for key in ("sync", "hub", "clearml", "comet", "dvc", "mlflow", "neptune",
                                            "raytune", "tensorboard", "wandb", "vscode_msg", "openvino_msg")
                     if key in settings})
    return YOLO


def train_peer(YOLO, data_yaml, cfg, img_size, minutes, threads, out_dir):
    """YOLOv8n from its yaml (random init), trained for `minutes`. Returns (its last checkpoint's path, epochs
    trained, the torch threads seen at the end of every epoch)."""
    model = YOLO("yolov8n.yaml")
    threads_seen = []

    def keep_threads(trainer):
        # its device selection sets torch threads to min(8, cores - 1) (1 on a 2-core machine): ours get `threads`
        torch.set_num_threads(threads)

    model.add_callback("on_train_start", keep_threads)
    model.add_callback("on_train_epoch_end", lambda trainer: threads_seen.append(torch.get_num_threads()))
    model.train(data=str(data_yaml), imgsz=img_size, epochs=max(cfg.epochs, 1), time=minutes / 60.0,
                batch=cfg.batch_size, workers=cfg.num_workers, cache="ram" if cfg.cache_images else False,
                device="cpu", amp=False, plots=False, pretrained=False, seed=cfg.seed,
                project=str(Path(out_dir).resolve()), name="ultralytics", exist_ok=True, verbose=False)
    return Path(model.trainer.last), model.trainer.epoch + 1, sorted(set(threads_seen))


def peer_detections(peer, val_paths, class_names, img_size):
    """Per image (xyxy boxes in original pixels, scores, our class indices) of the peer, in val_paths order."""
    ours_of = {name: i for i, name in enumerate(class_names)}
    detections = []
    for result in peer.predict(val_paths, imgsz=img_size, conf=SCORE_CONF, iou=PEER_NMS_IOU, max_det=300,
                               device="cpu", stream=True, verbose=False):
        boxes = result.boxes
        labels = np.array([ours_of[result.names[int(c)]] for c in boxes.cls.tolist()], np.int64)
        detections.append((boxes.xyxy.numpy().astype(np.float32), boxes.conf.numpy().astype(np.float32), labels))
    return detections


def peer_own_scores(peer, data_yaml, cfg, img_size, out_dir):
    """mAP@0.5 and mAP@0.5:0.95 of the same weights by the peer's own validator (its metric, its preprocessing):
    a cross-check of the conversion that agrees closely for trained models (ties in the scores of barely trained
    ones make every evaluator's number arbitrary)."""
    val = peer.val(data=str(data_yaml), imgsz=img_size, conf=SCORE_CONF, iou=PEER_NMS_IOU, batch=cfg.batch_size,
                   device="cpu", plots=False, verbose=False, project=str(Path(out_dir).resolve()),
                   name="ultralytics_val", exist_ok=True)
    return {"map50": float(val.box.map50), "map": float(val.box.map)}


def score_detections(records, detections, class_names, backend):
    return evaluate_detections(
        [r.boxes for r in records], [r.labels for r in records], [r.difficult for r in records],
        [(r.width, r.height) for r in records],
        [d[0] for d in detections], [d[1] for d in detections], [d[2] for d in detections], class_names, backend)


# ------------------------------------------------------------------------------------------ report


def ratio(a, b):
    return a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def table(rows):
    keys = [("map50", "mAP@0.5", ".4f"), ("map", "mAP@0.5:0.95", ".4f"), ("params_m", "params (M)", ".3f"),
            ("gflops", "GFLOPs", ".2f"), ("ms_per_image", "CPU ms / image", ".1f"), ("epochs", "epochs", "d")]
    lines = ["| | " + " | ".join(title for _, title, _ in keys) + " |", "|---" + "|---:" * len(keys) + "|"]
    for name in ("ours", "peer"):
        lines.append(f"| {name} | " + " | ".join(format(rows[name][k], f) for k, _, f in keys) + " |")
    lines.append("| ours / peer | " + " | ".join(f"{ratio(rows['ours'][k], rows['peer'][k]):.3f}"
                                               for k, _, _ in keys) + " |")
    untrained = [name for name in ("ours", "peer") if rows[name]["map50"] < UNTRAINED_MAP]
    if untrained:
        lines.append(f"(note: {' and '.join(untrained)} below mAP@0.5 {UNTRAINED_MAP}: hardly trained yet, so the mAP "
                     "ratios say little; give both sides more minutes)")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/raccoon.py")
    parser.add_argument("--minutes", type=float, default=None, help="time budget of each side (default 15; --fast 0.1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both sides")
    parser.add_argument("--img_size", type=int, default=None, help="both sides (default: the config's; --fast 64)")
    parser.add_argument("--out", default="runs/peer", help="parent folder of runs/peer/<name>")
    parser.add_argument("--name", default=None, help="folder name in --out (default: the config's run_name)")
    parser.add_argument("--rounds", type=int, default=7, help="timing: 10 x rounds forwards of one image per model")
    parser.add_argument("--fast", action="store_true", help="a smoke run of seconds per side (tests)")
    args, overrides = parser.parse_known_args(argv)
    args.minutes = args.minutes if args.minutes is not None else (0.1 if args.fast else 15.0)
    return args, overrides


def main(argv=None):
    args, overrides = parse_args(argv)
    if importlib.util.find_spec("ultralytics") is None:
        print(f"skipped: bench/peer.py needs Ultralytics, an optional dependency of this bench only.\n  {INSTALL}")
        return None
    torch.set_num_threads(args.threads)
    cfg = apply_overrides(load_config(args.config), overrides)
    img_size = args.img_size or (64 if args.fast else cfg.img_size)
    cfg = apply_overrides(cfg, ["--img_size", str(img_size), "--device", "cpu"]).finalize()
    out_dir = Path(args.out) / (args.name or cfg.run_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_records, val_records = read_records(cfg, "train"), read_records(cfg, "val")
    names = list(cfg.class_names)
    data_yaml, val_paths = write_yolo_dataset(train_records, val_records, names, out_dir / "data")

    logger.info(f"ours: {args.minutes:g} min, {args.threads} threads, {img_size} px")
    t0 = time.time()
    ours, cfg, ours_dir = train_ours(cfg, args.minutes, out_dir)
    ours_wall = time.time() - t0
    ours_result = score_ours(ours, cfg)

    logger.info(f"peer: YOLOv8n, {args.minutes:g} min, {args.threads} threads, {img_size} px")
    YOLO = ultralytics_offline(out_dir / "ultralytics_settings")
    t0 = time.time()
    last, peer_epochs, peer_threads = train_peer(YOLO, data_yaml, cfg, img_size, args.minutes, args.threads,
                                                 out_dir)
    peer_wall = time.time() - t0
    peer = YOLO(str(last))
    peer_result = score_detections(val_records, peer_detections(peer, val_paths, names, img_size), names,
                                   cfg.eval_backend)
    peer_own = peer_own_scores(peer, data_yaml, cfg, img_size, out_dir)
    peer_net = peer.model.float().eval()

    torch.set_num_threads(args.threads)  # its predictor set its own thread count
    # one (1, 3, S, S) image per forward, the two models in turns (yolo/models/flops.py)
    ms = ms_per_image([ours, peer_net], torch.rand(1, 3, img_size, img_size), 4 if args.fast else 10 * args.rounds)
    ours_epochs = int(torch.load(Path(ours_dir) / "last.pt", map_location="cpu", weights_only=True)["epoch"])
    rows = {
        "ours": {"map50": ours_result.map50, "map": ours_result.map, "params_m": count_params(ours) / 1e6,
                 "gflops": gflops(ours, (img_size, img_size)), "ms_per_image": ms[0], "epochs": ours_epochs,
                 "wall_s": ours_wall, "checkpoint": str(Path(ours_dir) / "last.pt"), "nms_iou": cfg.nms_iou},
        "peer": {"map50": peer_result.map50, "map": peer_result.map, "params_m": count_params(peer_net) / 1e6,
                 "gflops": gflops(peer_net, (img_size, img_size)), "ms_per_image": ms[1], "epochs": peer_epochs,
                 "wall_s": peer_wall, "threads_seen": peer_threads, "checkpoint": str(last), "nms_iou": PEER_NMS_IOU,
                 "model": "yolov8n.yaml", "own_validator": peer_own},
    }
    rows["ratio"] = {k: ratio(rows["ours"][k], rows["peer"][k]) for k in ("map50", "map", "params_m", "gflops",
                                                                          "ms_per_image", "epochs")}
    report = {"config": args.config, "overrides": overrides, "minutes": args.minutes, "threads": args.threads,
              "img_size": img_size, "score_conf": SCORE_CONF, "train_images": len(train_records),
              "val_images": len(val_records), "torch": torch.__version__,
              "ultralytics": importlib.import_module("ultralytics").__version__, **rows}
    (out_dir / "peer.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{len(val_records)} val images, {img_size} px, {args.minutes:g} min and {args.threads} threads per side; "
          f"both scored by yolo/metrics.py at conf {SCORE_CONF}, last checkpoints\n{table(rows)}\n"
          f"(the peer's own validator on the same weights: mAP@0.5 {peer_own['map50']:.4f}, "
          f"mAP@0.5:0.95 {peer_own['map']:.4f})\n-> {out_dir / 'peer.json'}")
    return report


if __name__ == "__main__":
    main()
