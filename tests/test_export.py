"""Export: BatchNorm folding is exact, the .onnx file computes what PyTorch computes (checked here with ONNX Runtime
independently of the export's own check, which must also be able to fail), its metadata decodes the outputs, and
val / predict on the .onnx give what they give on the checkpoint."""
import json

import pytest
import torch
from torch import nn

from yolo.config import BaseConfig, apply_overrides, task_configs
from yolo.data.dataset import build_loader, read_records
from yolo.engine import trainer
from yolo.engine.evaluator import predict_loader
from yolo.engine.checkpoint import load_model, save_checkpoint
from yolo.models.detector import build_model
from yolo.models.fuse import fuse_batchnorm
from yolo.models.onnx_model import OnnxModel, read_metadata
from yolo.tasks import export, predict, val

ANCHORS_128 = "[[(6,6),(9,9),(12,12)],[(16,16),(22,22),(30,30)],[(40,40),(56,56),(80,80)]]"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread


def randomize_batchnorm(model, seed=0):
    """BN statistics and affine terms far from the identity a fresh BN starts as, so folding them changes weights."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


def outputs_close(expected, got, rel_tol):
    """Max |got - expected| per output, and whether each is within rel_tol * max(1, max|expected|)."""
    diffs = [float((e - g).abs().max()) for e, g in zip(expected, got)]
    return diffs, all(d <= rel_tol * max(1.0, float(e.abs().max())) for d, e in zip(diffs, expected))


# ------------------------------------------------------------------------------------------------- fusion
@pytest.mark.parametrize("backbone", ["resnet18", "darknet53", "mobilenet_v3_small"])
def test_fused_model_equals_unfused_and_has_no_batchnorm(backbone):
    cfg = BaseConfig()
    cfg.backbone, cfg.width, cfg.img_size = backbone, 0.25, 32
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(cfg.finalize()))
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    num_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    before = [p.clone() for p in model.parameters()]
    fused = fuse_batchnorm(model, images, task=None)
    assert num_bn > 10 and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the original is untouched
    with torch.no_grad():
        expected, got = model(images), fused(images)
    diffs, _ = outputs_close(expected, got, 0)
    assert max(diffs) <= 1e-5, diffs


def test_fusing_a_batchnorm_not_fed_by_a_conv_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="does not come straight from a Conv2d"):
        fuse_batchnorm(model, torch.rand(1, 3, 8, 8))


# ------------------------------------------------------------------------------------------------- multi-task
def two_task_checkpoint(tmp_path, extra=()):
    """An untrained two-task model (random BN statistics) saved as runs/mt/best.pt; returns its config args. Its neck
    uses SiLU (the trained model of this file: LeakyReLU), so export must rebuild the activation the checkpoint says.
    extra: more config arguments (e.g. another head)."""
    tasks = [dict(name="shapes", data_root=str(tmp_path / "d1")),
             dict(name="symbols", data_root=str(tmp_path / "d2"), class_names=["star", "cross"], shapes_seed=1)]
    args = ["--tasks", repr(tasks), "--branching", "[[2, [[0], [1]]]]", "--runs_dir", str(tmp_path / "runs"),
            "--run_name", "mt", "--shapes_num_train", "4", "--shapes_num_val", "4", "--img_size", "64",
            "--width", "0.25", "--batch_size", "4", "--num_workers", "0", "--export_check_images", "3",
            "--neck_activation", "silu", *extra]
    cfg = apply_overrides(BaseConfig(), args).finalize()
    for task in task_configs(cfg):  # generate each task's data, as its training would: export only reads it
        read_records(task, "val")
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(cfg))
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 0},
                    tmp_path / "runs" / "mt" / "best.pt")
    return args, model


def test_two_task_export_names_metadata_and_parity(tmp_path):
    args, model = two_task_checkpoint(tmp_path)
    path, rows = export.run(apply_overrides(BaseConfig(), args).finalize())
    assert path == (tmp_path / "runs" / "mt" / "best.onnx").resolve()
    names = [f"task{k}_stride{s}" for k in (0, 1) for s in (8, 16, 32)]
    assert [r["name"] for r in rows] == names
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.onnx", "best.pt"]  # no temporary file left

    meta = read_metadata(path)
    assert meta["num_tasks"] == 2 and meta["task_names"] == ["shapes", "symbols"]
    assert meta["class_names"] == [["circle", "square", "triangle"], ["star", "cross"]]
    assert meta["decoding"]["anchors"] == model.anchors.tolist() and meta["decoding"]["reach"] == 1.5
    assert meta["model_config"]["branching"] == [[2, [[0], [1]]]]

    onnx_model = OnnxModel(path)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)  # another batch size than exported with
    with torch.no_grad():
        for task in (0, 1):
            got = onnx_model(images, task=task)
            expected = model(images, task=task)
            assert [g.shape for g in got] == [e.shape for e in expected]
            diffs, ok = outputs_close(expected, got, export.PARITY_TOL)
            assert ok, diffs

    # each task's detections on its own validation images (the evaluator's path) are the same from both files
    for k, task in enumerate(task_configs(apply_overrides(BaseConfig(), args).finalize())):
        loader = build_loader(task, read_records(task, "val"), train=False)
        from_pt = predict_loader(model, loader, task, torch.device("cpu"), False, True, k)
        from_onnx = predict_loader(onnx_model, loader, task, torch.device("cpu"), False, True, k)
        assert sum(len(d[0]) for d in from_pt.values()) > 0
        for index, (boxes, scores, labels) in from_pt.items():
            onnx_boxes, onnx_scores, onnx_labels = from_onnx[index]
            assert (labels == onnx_labels).all() and abs(boxes - onnx_boxes).max() < 1e-3
            assert abs(scores - onnx_scores).max() < 1e-5


def break_task1_fold(monkeypatch, shift):
    """Make export's BatchNorm fold get one bias of task 1's head wrong by `shift`, so the exported graph differs."""
    def broken_fuse(model, *example, **kwargs):
        fused = fuse_batchnorm(model, *example, **kwargs)
        fused.heads[1].convs[0].bias.data += shift
        return fused

    monkeypatch.setattr(export, "fuse_batchnorm", broken_fuse)


def test_export_fails_when_onnx_does_not_match_and_leaves_no_file(tmp_path, monkeypatch):
    args, _ = two_task_checkpoint(tmp_path)
    break_task1_fold(monkeypatch, 0.01)
    with pytest.raises(export.ExportCheckError, match="task1_stride8"):
        export.run(apply_overrides(BaseConfig(), args).finalize())
    assert sorted(p.name for p in (tmp_path / "runs" / "mt").iterdir()) == ["best.pt"]


# ------------------------------------------------------------------------------------------------- trained model
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained until its mAP is clearly non-zero (about 15 s of CPU): (config args, run folder)."""
    tmp = tmp_path_factory.mktemp("export")
    args = ["--data_root", str(tmp / "data"), "--runs_dir", str(tmp / "runs"), "--run_name", "tiny",
            "--shapes_num_train", "24", "--shapes_num_val", "16", "--img_size", "128", "--width", "0.25",
            "--batch_size", "8", "--num_workers", "0", "--epochs", "16", "--val_interval", "16", "--lr", "0.02",
            "--warmup_epochs", "1", "--cache_images", "true", "--anchors", ANCHORS_128, "--tensorboard", "false",
            "--device", "cpu"]
    trainer.train(apply_overrides(BaseConfig(), args).finalize())
    return args, tmp / "runs" / "tiny"


def test_onnx_val_and_predict_match_the_checkpoint(trained):
    args, run = trained
    path, rows = export.run(apply_overrides(BaseConfig(), args).finalize())  # default: the run's best.pt
    assert path == (run / "best.onnx").resolve() and [r["name"] for r in rows] == ["task0_stride8", "task0_stride16",
                                                                                  "task0_stride32"]
    torch_cfg = apply_overrides(BaseConfig(), args + ["--ckpt_path", str(run / "best.pt")]).finalize()
    torch_model, _, _ = load_model(torch_cfg)
    onnx_model = OnnxModel(path)
    images = torch.randint(0, 256, (5, 3, 128, 128), dtype=torch.uint8)
    with torch.no_grad():
        diffs, ok = outputs_close(torch_model(images), onnx_model(images), export.PARITY_TOL)
    assert ok, diffs

    on_pt = val.run(torch_cfg)[0]
    # backend onnxruntime with the .pt path runs the .onnx exported beside it
    on_onnx = val.run(apply_overrides(BaseConfig(), args + ["--ckpt_path", str(run / "best.pt"), "--backend",
                                                            "onnxruntime"]).finalize())[0]
    assert on_pt.map50 > 0.02, "the model must detect something, or equal mAPs would prove nothing"
    assert abs(on_pt.map50 - on_onnx.map50) < 5e-4 and abs(on_pt.map - on_onnx.map) < 5e-4, (on_pt, on_onnx)

    predict_args = args + ["--predict_conf", "0.05", "--predict_max_images", "3"]
    out_dir = predict.run(apply_overrides(BaseConfig(), predict_args + ["--ckpt_path", str(path)]).finalize())
    assert out_dir == run / "predictions_onnx" and len(list(out_dir.glob("*.jpg"))) == 3
    from_onnx = json.loads((out_dir / "predictions.json").read_text())
    assert from_onnx, "a trained model finds something at 0.05"
    # predict with the checkpoint runs the fused PyTorch model: the same detections
    torch_cfg = apply_overrides(BaseConfig(), predict_args + ["--ckpt_path", str(run / "best.pt")]).finalize()
    from_torch = json.loads((predict.run(torch_cfg) / "predictions.json").read_text())
    assert [(d["image_id"], d["category_id"]) for d in from_torch] == [(d["image_id"], d["category_id"])
                                                                       for d in from_onnx]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(from_torch, from_onnx)) < 1e-4


def test_export_of_a_users_checkpoint_leaves_its_folder_alone(trained, tmp_path):
    args, run = trained
    mine = tmp_path / "my_models"
    mine.mkdir()
    (mine / "detector.pt").write_bytes((run / "best.pt").read_bytes())
    path, _ = export.run(apply_overrides(BaseConfig(), args + ["--ckpt_path", str(mine / "detector.pt"),
                                                               "--export_fuse", "false", "--export_check_images",
                                                               "2"]).finalize())
    assert path.parent.parent == (run.parent / "export").resolve() and path.is_file()
    assert path.parent.name.startswith("detector-") and path.name == "detector.onnx"  # folder: name + path hash
    assert sorted(p.name for p in mine.iterdir()) == ["detector.pt"]
