"""Does post-processing keep up? images/s of forward + decode + NMS vs bare forward, measured in one run.

    python bench/predict.py [--config configs/my_config.py] [--ckpt runs/shapes/best.pt] [--rounds 9] [--field value ...]

Each round times every mode next to its own bare pass on the same validation batches (bare then mode, or mode then
bare on odd rounds), and the ratio is taken per pair, so a machine that speeds up or slows down (shared or
throttled CPUs) moves both sides of a ratio alike. (Timing bare, mode A, mode B in a row and dividing both by the
one bare pass measured B 5-8 % worse than A on this VM whichever mode B was.) Printed: the median ratio over the
rounds with its spread (min..max), the same ratio from CPU process time per image (less sensitive to other
processes, more to our own idle threads), and post-processing
alone on the stored outputs of the batches (ms per batch) with the ratio that it and the bare forward imply (the
steadiest of the three on a noisy machine).

Post-processing costs what the candidates cost: with random weights almost no box passes conf_thres, so the bench
looks for a trained checkpoint (--ckpt, else the newest runs/*/best.pt that fits the configured model) and prints
how many candidates per image pass the threshold before NMS. Both modes are measured: multi_label False (one class
per box, for drawing) and True (every class above the threshold, what evaluation uses). Target: ratio >= 0.9.

Export rows: the forward of the model with every BatchNorm folded into its conv (yolo/models/fuse.py) and of the
exported .onnx file run by ONNX Runtime (all graph optimisations, as many intra-op threads as torch), as images/s
and as ratios to the unfused PyTorch forward, at batch 1 (16 calls of one image) and batch 16 (one call) on the
same 16 validation images; also ONNX Runtime with only its basic graph optimisations, to show what the default
(all) is worth. The four run in turn within each round (the order rotates), the ratios are taken per
round. Target: the faster of the two >= 1.5 x the unfused forward at both batch sizes.
"""
import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.data.dataset import build_loader, read_records  # noqa: E402
from yolo.engine.checkpoint import MODEL_FIELDS, load_checkpoint  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.models.fuse import fuse_batchnorm  # noqa: E402
from yolo.models.onnx_model import OnnxModel, export_onnx  # noqa: E402
from yolo.postprocess import postprocess  # noqa: E402

TARGET = 0.9
EXPORT_TARGET = 1.5


def fitting_checkpoint(model, path):
    """Load `path` (or, when None, the newest runs/*/best.pt whose weights fit the model). Returns the path or None."""
    paths = [path] if path else sorted(glob.glob("runs/*/best.pt"), key=os.path.getmtime, reverse=True)
    for p in paths:
        try:
            model.load_state_dict(load_checkpoint(p)["model"])
            return p
        except (RuntimeError, KeyError, ValueError, FileNotFoundError) as e:
            if path:  # asked for explicitly: say why it does not fit
                sys.exit(f"error: {e}")
    return None


def timed(fn, batches):
    """(wall seconds, CPU seconds of this process) to run fn on every batch once, after one untimed batch (the first
    call after a switch between the things compared is slower; a stream of predictions never switches)."""
    fn(batches[0])
    wall, cpu = time.perf_counter(), time.process_time()
    for images in batches:
        fn(images)
    return time.perf_counter() - wall, time.process_time() - cpu


def spread(values):
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--ckpt", default=None, help="trained weights (default: newest fitting runs/*/best.pt)")
    parser.add_argument("--batches", type=int, default=4, help="validation batches timed per round and side")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--export_rounds", type=int, default=5, help="rounds of the fused / ONNX Runtime rows "
                        "(0 = skip them)")
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides).finalize()
    model = build_model(cfg).eval()
    ckpt = fitting_checkpoint(model, args.ckpt)
    loader = build_loader(cfg, read_records(cfg, "val"), train=False)
    batches = [batch[0] for batch, _ in zip(loader, range(args.batches))]
    num_images = sum(len(b) for b in batches)

    def post(outputs, multi_label):
        return postprocess(outputs, model.decoding, cfg.conf_thres, cfg.nms_iou,
                           cfg.max_det, multi_label, cfg.pre_nms_topk, merge=cfg.nms_merge)

    modes = {"+ post (multi_label False)": lambda images: post(model(images), False),
             "+ post (multi_label True) ": lambda images: post(model(images), True)}
    for fn in [model, *modes.values()]:  # warm-up: oneDNN picks its kernels on the first call
        fn(batches[0])
    pairs = {name: [] for name in modes}  # per round: ((bare wall, bare CPU), (mode wall, mode CPU))
    for round_index in range(args.rounds):
        for name, fn in modes.items():
            if round_index % 2:
                mode_time, bare_time = timed(fn, batches), timed(model, batches)
            else:
                bare_time, mode_time = timed(model, batches), timed(fn, batches)
            pairs[name].append((bare_time, mode_time))

    outputs = [model(images) for images in batches]
    post_ms = {}
    for multi_label in (False, True):
        times = [timed(lambda out, m=multi_label: post(out, m), outputs)[0] for _ in range(args.rounds)]
        post_ms[multi_label] = 1000 * statistics.median(times) / len(outputs)
    candidates = sum(count_candidates(out, cfg.conf_thres) for out in outputs) / num_images
    detections = sum(len(d[0]) for out in outputs for d in post(out, True)) / num_images

    print(f"{cfg.backbone} x{cfg.width} | batch {cfg.batch_size} | img {cfg.img_size} | conf_thres {cfg.conf_thres} | "
          f"torch threads {torch.get_num_threads()} | {args.rounds} rounds of {num_images} images | ckpt {ckpt}")
    if ckpt is None:
        print("WARNING: random weights (no fitting runs/*/best.pt): few boxes pass conf_thres, post-processing "
              "looks cheaper than on a trained model; pass --ckpt")
    print(f"candidates above conf_thres per image (box, class pairs): {candidates:.0f}; "
          f"detections kept per image (multi_label): {detections:.1f}")
    bare_wall = [bare[0] for mode_pairs in pairs.values() for bare, _ in mode_pairs]
    print(f"{'bare forward':28s} {num_images / statistics.median(bare_wall):7.1f} img/s")
    for name, mode_pairs in pairs.items():
        ratio = [bare[0] / mode[0] for bare, mode in mode_pairs]
        cpu_ratio = [bare[1] / mode[1] for bare, mode in mode_pairs]
        ok = "met" if statistics.median(ratio) >= TARGET else "NOT met"
        mode_wall = statistics.median(mode[0] for _, mode in mode_pairs)
        print(f"{name:28s} {num_images / mode_wall:7.1f} img/s | ratio {spread(ratio)} "
              f"[target >= {TARGET}: {ok}] | CPU-time ratio {statistics.median(cpu_ratio):.3f}")
    bare_ms = 1000 * statistics.median(bare_wall) / len(batches)
    print(f"post-processing alone: {post_ms[False]:.2f} ms/batch (multi_label False), "
          f"{post_ms[True]:.2f} ms/batch (True); bare forward {bare_ms:.1f} ms/batch; the ratios these parts imply: "
          f"{bare_ms / (bare_ms + post_ms[False]):.3f}, {bare_ms / (bare_ms + post_ms[True]):.3f}")
    if args.export_rounds:
        export_rows(cfg, model, torch.cat(batches)[:16], args.export_rounds)


def export_rows(cfg, model, images, rounds):
    """images/s of the unfused, fused and ONNX Runtime forwards at batch 1 and batch len(images), and the ratios of
    the last two to the first, per round (the order of the three rotates from round to round)."""
    fused = fuse_batchnorm(model, images[:1], task=None)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(fused, path, images[:1], {f: getattr(cfg, f) for f in MODEL_FIELDS}, cfg.task_names)
        onnx_model, onnx_basic = OnnxModel(path), OnnxModel(path, level="basic")
    # the basic-optimisation session shows what ORT_ENABLE_ALL's graph rewrites are worth
    forwards = {"unfused PyTorch": model, "fused PyTorch": fused, "ONNX Runtime": onnx_model,
                "ORT basic opt.": onnx_basic}
    print(f"\nexport rows: {len(images)} validation images, batch 1 = {len(images)} calls of one image, "
          f"batch {len(images)} = one call; {rounds} rounds; ONNX Runtime intra-op threads {torch.get_num_threads()}")
    for batch in (1, len(images)):
        chunks = list(images.split(batch))
        seconds = {name: [] for name in forwards}
        for r in range(rounds):
            names = list(forwards)[r % len(forwards):] + list(forwards)[:r % len(forwards)]
            for name in names:
                seconds[name].append(timed(forwards[name], chunks)[0])
        base = seconds["unfused PyTorch"]
        best = 0.0
        for name, times in seconds.items():
            ratio = [b / t for b, t in zip(base, times)]
            best = max(best, statistics.median(ratio)) if name in ("fused PyTorch", "ONNX Runtime") else best
            print(f"batch {batch:2d} | {name:16s} {len(images) / statistics.median(times):7.1f} img/s | "
                  f"ratio to unfused {spread(ratio)}")
        ok = "met" if best >= EXPORT_TARGET else "NOT met"
        print(f"batch {batch:2d} | faster of fused / ONNX Runtime: {best:.2f} x unfused "
              f"[target >= {EXPORT_TARGET}: {ok}]")


def count_candidates(outputs, conf_thres):
    """(box, class) pairs whose score objectness * class probability passes conf_thres, over the batch."""
    return sum(int((o[..., 4:5].float().sigmoid() * o[..., 5:].float().sigmoid() > conf_thres).sum()) for o in outputs)


if __name__ == "__main__":
    main()
