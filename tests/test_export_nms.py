"""The end-to-end ONNX export (export_nms): decoding, score threshold and NMS inside the graph, one (N, 7) output per
task, matched one to one against the PyTorch post-processing on built-in val images; a dynamic input size
(export_dynamic); val and predict on such a file give what the checkpoint gives."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import ROOT
from test_export import ANCHORS_128, break_task1_fold, outputs_close, two_task_checkpoint
from yolo.config import BaseConfig, apply_overrides, task_configs
from yolo.data.dataset import build_loader, read_records
from yolo.engine import trainer
from yolo.models.onnx_model import OnnxModel, read_metadata
from yolo.postprocess import postprocess, split_detections
from yolo.tasks import export, predict, val

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread
# a low threshold and a small candidate cap: an untrained model then fills both, so both are exercised
NMS = ["--export_nms", "true", "--conf_thres", "0.02", "--pre_nms_topk", "150", "--max_det", "40"]
SCORE_TOL = 1e-4


def finalized(args):
    return apply_overrides(BaseConfig(), args).finalize()


def match_one_to_one(expected, got, conf_thres, box_bound):
    """Pair each PyTorch detection (boxes, scores, labels of one image) with an ONNX one of the same class, boxes
    within box_bound and scores within SCORE_TOL, each used once. Returns (pairs, unexplained): unexplained are the
    unpaired detections of either side whose score does not sit at the threshold."""
    (e_boxes, e_scores, e_labels), (g_boxes, g_scores, g_labels) = [[t.numpy() for t in d] for d in (expected, got)]
    free, pairs = np.ones(len(g_scores), bool), 0
    unpaired_expected = []
    for i in np.argsort(-e_scores):
        diff = np.abs(g_boxes - e_boxes[i]).max(1) if len(g_boxes) else np.zeros(0)
        ok = free & (g_labels == e_labels[i]) & (diff <= box_bound) & (np.abs(g_scores - e_scores[i]) <= SCORE_TOL)
        if ok.any():
            free[np.flatnonzero(ok)[np.argmin(diff[ok])]] = False
            pairs += 1
        else:
            unpaired_expected.append(e_scores[i])
    unpaired = np.concatenate([np.float32(unpaired_expected), g_scores[free]])
    return pairs, [s for s in unpaired if abs(s - conf_thres) > SCORE_TOL]


def assert_same_detections(model, onnx_model, batches, cfg, task):
    """Every image of every batch: the graph's detections are postprocess's (multi-label, the same thresholds)."""
    pairs = 0
    with torch.no_grad():
        for images in batches:
            expected = postprocess(model(images, task=task), model.decoding, cfg.conf_thres, cfg.nms_iou,
                                   cfg.max_det, True, cfg.pre_nms_topk, merge=cfg.nms_merge)
            got = split_detections(onnx_model(images, task=task), len(images))
            bound = export.PARITY_TOL * max(1.0, float(images.shape[-1]), float(images.shape[-2]))
            for e, g in zip(expected, got):
                matched, unexplained = match_one_to_one(e, g, cfg.conf_thres, bound)
                assert not unexplained, f"task {task}: {len(unexplained)} detections without a partner: {unexplained}"
                pairs += matched
    return pairs


# ------------------------------------------------------------------------------------------------ untrained model
@pytest.fixture(scope="module")
def nms_export(tmp_path_factory):
    """A two-task untrained model (random BN statistics) exported with NMS inside: (args, model, path, rows)."""
    args, model = two_task_checkpoint(tmp_path_factory.mktemp("nms"))
    path, rows = export.run(finalized(args + NMS))
    return args, model, path, rows


def test_the_file_says_it_has_nms_inside_and_has_one_output_per_task(nms_export):
    args, _, path, rows = nms_export
    meta = read_metadata(path)
    assert meta["nms"]["conf_thres"] == 0.02 and meta["nms"]["nms_iou"] == 0.45 and meta["nms"]["max_det"] == 40
    assert meta["nms"]["pre_nms_topk"] == 150 and meta["nms"]["multi_label"] is True
    assert meta["nms"]["columns"] == ["image", "x1", "y1", "x2", "y2", "score", "class"]
    assert [o["name"] for o in meta["outputs"]] == ["task0_detections", "task1_detections"]
    assert [r["name"] for r in rows] == ["task0_detections", "task1_detections"]
    assert meta["export"]["nms"]["conf_thres"] == 0.02  # another export name than a plain export's

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["task0_detections", "task1_detections"]
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 64, 64), np.uint8)
    for out, num_classes in zip(session.run(None, {"images": images}), (3, 2)):
        assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 7 and len(out) > 0
        assert set(out[:, 0].tolist()) <= {0.0, 1.0, 2.0} and (out[:, 6] < num_classes).all()
        assert (out[:, 5] > 0.02).all() and (out[:, 3] >= out[:, 1]).all() and (out[:, 4] >= out[:, 2]).all()
        for image in range(3):  # each image's rows together, best first, at most max_det
            scores = out[out[:, 0] == image, 5]
            assert len(scores) <= 40 and (np.diff(scores) <= 0).all()


def test_nms_graph_matches_pytorch_postprocessing_one_to_one(nms_export):
    args, model, path, _ = nms_export
    cfg = finalized(args + NMS)
    onnx_model = OnnxModel(path)
    random_images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    for k, task in enumerate(task_configs(cfg)):
        loader = build_loader(task, read_records(task, "val", generate=False), train=False)
        batches = [images for images, _, _, _ in loader] + [random_images]
        assert assert_same_detections(model, onnx_model, batches, cfg, k) > 100


def test_the_export_check_fails_when_the_graph_differs(tmp_path, monkeypatch):
    args, _ = two_task_checkpoint(tmp_path)
    break_task1_fold(monkeypatch, 0.05)
    with pytest.raises(export.ExportCheckError, match="task1_detections"):
        export.run(finalized(args + NMS))
    assert sorted(p.name for p in (tmp_path / "runs" / "mt").iterdir()) == ["best.pt"]


def test_merge_nms_in_the_graph_matches_pytorch_postprocessing(tmp_path):
    """--nms_merge: the graph's merged boxes are postprocess(merge=True)'s, one to one; and merging moved boxes."""
    args, model = two_task_checkpoint(tmp_path)
    merge = NMS + ["--nms_merge", "true", "--nms_iou", "0.3"]
    path, rows = export.run(finalized(args + merge))
    assert read_metadata(path)["nms"]["nms_merge"] is True and all(r["unexplained"] == 0 for r in rows)
    cfg, onnx_model = finalized(args + merge), OnnxModel(path)
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    assert assert_same_detections(model, onnx_model, [images], cfg, 1) > 20
    with torch.no_grad():
        plain = postprocess(model(images, task=1), model.decoding, cfg.conf_thres, 0.3, cfg.max_det, True,
                            cfg.pre_nms_topk)
        merged = postprocess(model(images, task=1), model.decoding, cfg.conf_thres, 0.3, cfg.max_det, True,
                             cfg.pre_nms_topk, merge=True)
    assert sum(int(((m[0] - p[0]).abs().max(1).values > 0.01).sum()) for m, p in zip(merged, plain)) > 5


def test_merge_in_the_graph_keeps_a_lone_box_whatever_its_score():
    """A detection with no overlapping candidate is its own weighted mean, also at a score of 1e-14 (a division
    guarded by a floor would shrink it towards the origin)."""
    from yolo.models.onnx_nms import EndToEndDetector
    graph = EndToEndDetector(None, conf_thres=0.0, nms_iou=0.45, max_det=10, pre_nms_topk=5, nms_merge=True)
    boxes = torch.tensor([[[10.0, 10, 50, 50], [100, 100, 140, 150]]])           # (1 image, 2 boxes, 4)
    for score in (1e-14, 0.9):
        scores = torch.tensor([[[score, 0.0]]])                                   # (1 image, 1 class, 2 boxes)
        rows = graph.detections(boxes, scores)
        assert rows.shape == (1, 7) and torch.allclose(rows[0, 1:5], boxes[0, 0]), (score, rows)


def test_dynamic_export_takes_any_multiple_of_32(tmp_path):
    args, model = two_task_checkpoint(tmp_path)
    path, _ = export.run(finalized(args + ["--export_dynamic", "true"]))
    assert read_metadata(path)["input"]["shape"] == ["batch", 3, "height", "width"]
    onnx_model = OnnxModel(path)
    for hw in [(64, 64), (96, 64), (64, 128)]:
        images = torch.randint(0, 256, (2, 3, *hw), dtype=torch.uint8)
        with torch.no_grad():
            diffs, ok = outputs_close([o for t in model(images, task=None) for o in t],
                                      [o for t in onnx_model(images, task=None) for o in t], export.PARITY_TOL)
        assert ok, (hw, diffs)
    with pytest.raises(ValueError, match="multiples of 32"):
        onnx_model(torch.zeros(1, 3, 64, 70, dtype=torch.uint8))
    # a file of format 2 (before NMS and dynamic sizes, without the "nms" key) is still read, as a plain export
    older = onnx.load(str(path))
    kept = [p for p in older.metadata_props if p.key != "nms"]
    del older.metadata_props[:]
    older.metadata_props.extend(kept)
    next(p for p in older.metadata_props if p.key == "format").value = json.dumps("yolo-detector-onnx/2")
    onnx.save(older, str(tmp_path / "older.onnx"))
    assert not OnnxModel(tmp_path / "older.onnx").end_to_end

    path, _ = export.run(finalized(args + NMS + ["--export_dynamic", "true"]))  # with NMS: a second file
    assert path.name == "best2.onnx"
    cfg = finalized(args + NMS)
    wide = torch.randint(0, 256, (3, 3, 96, 128), dtype=torch.uint8)
    assert assert_same_detections(model, OnnxModel(path), [wide], cfg, 1) > 10


def test_split_detections_by_hand():
    rows = torch.tensor([[1, 0, 0, 4, 4, 0.9, 2], [0, 1, 1, 2, 2, 0.5, 0], [1, 2, 2, 3, 3, 0.2, 1]])
    (b0, s0, l0), (b1, s1, l1), (b2, s2, l2) = split_detections(rows, 3, conf_thres=0.3)
    assert b0.tolist() == [[1, 1, 2, 2]] and s0.tolist() == [0.5] and l0.tolist() == [0]
    assert s1.tolist() == [pytest.approx(0.9)] and l1.dtype == torch.int64 and l1.tolist() == [2]  # 0.2 dropped
    assert len(b2) == 0 and b2.shape == (0, 4)


# ------------------------------------------------------------------------------------------------ trained model
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained until its mAP is clearly non-zero (about 15 s of CPU): (config args, run folder)."""
    tmp = tmp_path_factory.mktemp("export_nms")
    args = ["--data_root", str(tmp / "data"), "--runs_dir", str(tmp / "runs"), "--run_name", "tiny",
            "--shapes_num_train", "24", "--shapes_num_val", "16", "--img_size", "128", "--width", "0.25",
            "--batch_size", "8", "--num_workers", "0", "--epochs", "16", "--val_interval", "16", "--lr", "0.02",
            "--warmup_epochs", "1", "--cache_images", "true", "--anchors", ANCHORS_128, "--tensorboard", "false",
            "--device", "cpu", "--eval_artifacts", "false"]
    trainer.train(finalized(args))
    return args, tmp / "runs" / "tiny"


@pytest.mark.slow
def test_val_and_predict_on_the_nms_file_match_the_checkpoint(trained):
    args, run = trained
    path, rows = export.run(finalized(args + ["--export_nms", "true"]))
    assert rows[0]["matched"] > 0 and rows[0]["unexplained"] == 0
    on_pt = val.run(finalized(args + ["--ckpt_path", str(run / "best.pt")]))[0]
    on_onnx = val.run(finalized(args + ["--ckpt_path", str(path)]))[0]
    assert on_pt.map50 > 0.01, "the model must detect something, or equal mAPs would prove nothing"
    assert abs(on_pt.map50 - on_onnx.map50) < 1e-4 and abs(on_pt.map - on_onnx.map) < 1e-4, (on_pt, on_onnx)

    predict_args = args + ["--predict_conf", "0.05", "--predict_max_images", "3"]
    out_dir = predict.run(finalized(predict_args + ["--ckpt_path", str(path)]))
    results = json.loads((out_dir / "predictions.json").read_text())
    assert out_dir.name == "predictions_onnx" and len(list(out_dir.glob("*.jpg"))) == 3
    assert results and min(r["score"] for r in results) > 0.05


def test_the_plain_onnxruntime_example_of_the_docs_runs(nms_export, tmp_path):
    """docs/export.md's example (numpy + onnxruntime + PIL, nothing of this project) on an NMS file and a photo."""
    page = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    code = next(block for block in re.findall(r"```python\n(.*?)```", page, re.S) if "task0_detections" in block)
    assert "yolo" not in re.sub(r"#.*", "", code), "the example must need nothing from this repository"
    args, _, path, _ = nms_export
    shutil.copy(path, tmp_path / "best.onnx")
    task = task_configs(finalized(args))[0]
    shutil.copy(read_records(task, "val", generate=False)[0].image_path, tmp_path / "photo.jpg")
    (tmp_path / "detect.py").write_text(code.replace("runs/shapes/best.onnx", "best.onnx"))
    out = subprocess.run([sys.executable, "detect.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr

