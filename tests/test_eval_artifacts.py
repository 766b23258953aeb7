"""The evaluation artifacts: per_class.csv against pycocotools, the files training and --task val leave (single task
and one set per task), where val writes them, and the TensorBoard figures."""
import csv
import math

import numpy as np
import pytest
import torch
from loguru import logger

import main
from yolo.data.records import Record
from yolo.engine.artifacts import FILES, write_eval_artifacts
from yolo.metrics import evaluate_detections

SMALL = ["--shapes_num_train", "16", "--shapes_num_val", "8", "--img_size", "64", "--width", "0.25",
         "--batch_size", "8", "--num_workers", "0", "--epochs", "2", "--val_interval", "1", "--device", "cpu",
         "--conf_thres", "0.001", "--anchors", "[[(4,4),(6,6),(8,8)],[(10,10),(14,14),(18,18)],[(24,24),(32,32),(44,44)]]"]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


class FakeConfig:
    class_names = ["a", "b", "c"]
    confusion_conf = 0.25
    confusion_iou = 0.45


def test_per_class_csv_agrees_with_pycocotools_and_the_table_is_printed(tmp_path):
    rng = np.random.default_rng(3)
    records, detections = [], {}
    for i in range(12):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (n, 2))], axis=1)
        labels = rng.integers(0, 3, n)
        records.append(Record(f"{i}.jpg", 320, 320, boxes, labels, rng.random(n) < 0.1))
        keep = rng.random(n) < 0.8
        dets = boxes[keep] + rng.normal(0, 4, (int(keep.sum()), 4))
        corner = rng.uniform(0, 250, (2, 2))
        fp = np.concatenate([corner, corner + 20], axis=1)  # two boxes on nothing (or on something by chance)
        detections[i] = (np.concatenate([dets, fp]), rng.uniform(0.05, 1, len(dets) + 2),
                         np.concatenate([np.where(rng.random(len(dets)) < 0.85, labels[keep], 0), [1, 2]]))
    gt = [r.boxes for r in records], [r.labels for r in records], [r.difficult for r in records]
    dets = [[detections[i][k] for i in range(12)] for k in range(3)]
    result = evaluate_detections(*gt, [(320, 320)] * 12, *dets, FakeConfig.class_names)
    messages = []
    sink = logger.add(lambda m: messages.append(str(m)), level="INFO")
    try:
        write_eval_artifacts(tmp_path / "out", result, records, detections, FakeConfig())
    finally:
        logger.remove(sink)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES)
    rows = read_csv(tmp_path / "out" / "per_class.csv")
    assert [r["class"] for r in rows] == FakeConfig.class_names
    for k, row in enumerate(rows):
        name = row["class"]
        assert float(row["ap50"]) == pytest.approx(result.per_class_ap50[name], abs=5e-4)
        coco_map = result.precision[:, :, k, 0, -1].mean()  # COCOeval's AP@[.5:.95] of the class
        assert float(row["ap50_95"]) == pytest.approx(coco_map, abs=1e-6)
        assert int(row["instances"]) == sum(int(((r.labels == k) & ~r.difficult).sum()) for r in records)
    table = next(m for m in messages if "per-class results" in m)
    assert f"{np.mean([float(r['ap50']) for r in rows]):6.3f}" in table.splitlines()[2]  # the 'all' row
    assert f"{result.map:7.3f}" in table.splitlines()[2]


def test_training_and_val_write_the_artifacts_where_they_belong(tmp_path):
    torch.set_num_threads(1)
    common = ["--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs"), *SMALL]
    main.main(["--task", "train", "--run_name", "tiny", *common, "--epochs", "1"])
    run_dir = tmp_path / "runs" / "tiny"
    for name in FILES:
        assert (run_dir / name).is_file(), name
    trained = read_csv(run_dir / "per_class.csv")

    main.main(["--task", "val", "--ckpt_path", str(run_dir / "best.pt"), *common])
    for name in FILES:
        assert (run_dir / "val" / name).is_file(), name
    # training's artifacts are best.pt's evaluation: --task val on best.pt gives the same rows
    assert read_csv(run_dir / "val" / "per_class.csv") == trained
    assert sum(int(r["instances"]) for r in trained) > 0

    # a checkpoint of the user's own: its folder is left alone, the artifacts go to runs_dir/val/<name>/
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "detector.pt").write_bytes((run_dir / "best.pt").read_bytes())
    main.main(["--task", "val", "--ckpt_path", str(mine / "detector.pt"), *common])
    assert [p.name for p in mine.iterdir()] == ["detector.pt"]
    assert (tmp_path / "runs" / "val" / "detector" / "confusion_matrix.png").is_file()

    # the figures are in TensorBoard too
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"eval/pr_curve", "eval/f1_curve", "eval/confusion_matrix"} <= set(events.Tags()["images"])


def test_multitask_training_and_val_write_one_set_per_task(tmp_path):
    torch.set_num_threads(1)
    tasks = [dict(name="shapes", data_root=str(tmp_path / "d1")),
             dict(name="symbols", data_root=str(tmp_path / "d2"), class_names=["star", "cross"], shapes_seed=1)]
    common = ["--tasks", repr(tasks), "--branching", "[[3, [[0], [1]]]]", "--runs_dir", str(tmp_path / "runs"),
              "--run_name", "mt", "--tensorboard", "false", *SMALL, "--epochs", "1"]
    main.main(["--task", "train", *common])
    run_dir = tmp_path / "runs" / "mt"
    main.main(["--task", "val", "--ckpt_path", str(run_dir / "best.pt"), *common])
    for folder in (run_dir, run_dir / "val"):
        for task, names in (("shapes", ["circle", "square", "triangle"]), ("symbols", ["star", "cross"])):
            for name in FILES:
                assert (folder / task / name).is_file(), folder / task / name
            rows = read_csv(folder / task / "per_class.csv")
            assert [r["class"] for r in rows] == names and all(not math.isnan(float(r["conf"])) for r in rows)
        assert not (folder / "per_class.csv").exists()
