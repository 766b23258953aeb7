"""RSA measures something real: two models of the same task trained from different initialisations see the images
more alike, at every layer, than models of two different tasks (built-in shapes vs symbols data, small models).

Other seed triples (the test uses one; a triple takes 2.5 minutes at one thread, 4 on a loaded 2-core machine):
    OMP_NUM_THREADS=1 NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH=. python tests/test_rsa_measurement.py 0,1,2 3,4,5 6,7,8
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo.config import BaseConfig
from yolo.data.dataset import build_loader, read_records
from yolo.engine.checkpoint import load_checkpoint
from yolo.engine.trainer import train
from yolo.models.detector import build_model
from yolo.research.rsa import LAYER_NAMES, similarity_matrices

SMALL_ANCHORS = [[(6, 6), (9, 9), (12, 12)], [(16, 16), (22, 22), (30, 30)], [(40, 40), (56, 56), (80, 80)]]
RSA_IMAGES = 200  # val images per task that every model runs over: on 100 the CKA itself is noisier (the smallest
# gap of a seed triple, 0.008-0.032 there, is 0.012-0.026 on 200 and 0.011-0.038 on 400 images, same models)


def task_cfg(root, task, seed):
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.anchors, cfg.batch_size, cfg.num_workers = 0.25, 128, SMALL_ANCHORS, 16, 0
    # trained as the default config does (lr 0.002, 200 steps of 16 images) until the models detect something
    # (mAP@0.5 0.12-0.19): a higher lr (0.01) detects better in the same steps but leaves models of one task further
    # apart (they then lose to the other task at one or two layers in each of 3 seed triples)
    cfg.shapes_num_train, cfg.shapes_num_val, cfg.cache_images = 400, RSA_IMAGES, True
    cfg.epochs, cfg.val_interval, cfg.lr, cfg.warmup_epochs, cfg.tensorboard = 8, 8, 0.002, 1.0, False
    cfg.eval_artifacts = False  # plots nobody reads
    cfg.device, cfg.seed, cfg.runs_dir, cfg.run_name = "cpu", seed, str(Path(root) / "runs"), f"{task}{seed}"
    cfg.data_root = str(Path(root) / task)
    if task == "symbols":
        cfg.class_names, cfg.shapes_seed = ["star", "cross", "ring"], 1
    return cfg.finalize()


def same_and_other_task(root, seeds):
    """Train a shapes model with seeds[0], another with seeds[1] and a symbols model with seeds[2] (every model from
    its own initialisation) under root, and compare them on RSA_IMAGES val images of each task.
    Returns (same, other): per layer of LAYER_NAMES, the similarity of the two shapes models and the larger of the
    two shapes-symbols similarities."""
    torch.set_num_threads(1)
    models = []
    for task, seed in zip(("shapes", "shapes", "symbols"), seeds):
        cfg = task_cfg(root, task, seed)
        _, run_dir = train(cfg)
        model = build_model(cfg)
        model.load_state_dict(load_checkpoint(run_dir / "last.pt")["model"])
        models.append(model.eval())
    image_sets = []
    for task in ("shapes", "symbols"):
        cfg = task_cfg(root, task, 0)
        cfg.cache_images = False
        image_sets.append([images for images, *_ in build_loader(cfg, read_records(cfg, "val"), train=False)])
    sims = similarity_matrices(models, image_sets, show_progress=False, measure="cka")  # the docs' margins are CKA's
    same = np.array([sims[name][0, 1] for name in LAYER_NAMES])
    other = np.array([max(sims[name][0, 2], sims[name][1, 2]) for name in LAYER_NAMES])
    print(f"\nseeds {seeds}\nlayer      same task  other task    gap\n" + "\n".join(
        f"{name:9s} {s:9.3f} {o:11.3f} {s - o:+6.3f}" for name, s, o in zip(LAYER_NAMES, same, other)), flush=True)
    return same, other


@pytest.mark.slow
def test_same_task_models_are_more_alike_than_other_task_models(tmp_path):
    same, other = same_and_other_task(tmp_path, (0, 1, 2))
    # Over five seed triples (docs/multitask_rsa.md) the same task wins at every layer against the closer of the two
    # other-task pairs, by 0.012 at the least (this triple: 0.026, at top3). The margin is thin because at this size
    # neither model has learned its classes (the class loss stays near the 0.64 of a constant guess), so a shapes and a
    # symbols model both find "a filled shape unlike the background" and differ only in how the objects look: the
    # gap is mostly largest at stride 32 (up to 0.20, objects large) and small at stride 8 (objects of 5-10 px).
    assert np.all(same > other), \
        f"same-task similarity {same.round(3)} vs other task {other.round(3)} at {list(LAYER_NAMES)}"


if __name__ == "__main__":
    for triple in sys.argv[1:] or ["0,1,2"]:
        with tempfile.TemporaryDirectory() as root:
            same_and_other_task(root, tuple(int(s) for s in triple.split(",")))
