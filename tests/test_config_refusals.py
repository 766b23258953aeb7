"""Nonsense configs are refused with one line naming the field (or the config file), never trained on or crashed
over: ranges of every numeric field, the type of every field, unknown fields set in a config file, broken config
files, and what main.py prints for them."""
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from yolo.config import BaseConfig, apply_overrides, config_from_dict, load_config
from yolo.config_checks import RANGES


@pytest.mark.parametrize("field, value", [
    ("anchors", [[(0, 0)] * 3] * 3),                      # zero-size anchors train to mAP 0
    ("anchors", [[(10, -4)] * 3] * 3),
    ("anchors", [[(10, "a")] * 3] * 3),
    ("anchors", 5),
    ("obj_scale_weights", (1.0,)),                        # would drop the objectness loss of two scales
    ("obj_scale_weights", (1.0, -1.0, 0.4)),
    ("box_scale_weights", (1.0, 2.0)), ("box_scale_weights", (1.0, 1.0, -0.5)), ("obj_iou_ratio", 1.5),
    ("box_weight", -1.0), ("obj_weight", -0.5), ("cls_weight", -2.0),
    ("warmup_epochs", -1.0), ("lr", 0.0), ("lr", -1e-3), ("lr", float("nan")), ("lr", float("inf")),
    ("weight_decay", -1e-4), ("momentum", 1.0), ("grad_clip", -1.0), ("final_lr_ratio", 1.5),
    ("min_box_size", -1.0), ("ignore_iou_thres", 1.5), ("seed", -1), ("shapes_seed", -3),
    ("shapes_num_train", 0), ("shapes_num_val", 0), ("freeze_backbone_epochs", -1), ("predict_max_images", 0),
    ("num_debug_batch", 0), ("img_size", 0), ("img_size", -32),
    ("device", "foo"), ("device", "cuda:x"), ("device", "cuda:-1"), ("device", "cpu:0"),
])
def test_nonsense_values_are_refused_naming_the_field(field, value):
    cfg = BaseConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=f"config field '{field}'"):
        cfg.finalize()


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_accepted_device_forms(device):
    cfg = BaseConfig()
    cfg.device = device
    cfg.finalize()


def test_every_numeric_field_has_a_range_rule():
    numeric = [name for name, value in BaseConfig().to_dict().items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)]
    assert sorted(set(numeric) - set(RANGES)) == []
    assert BaseConfig().finalize()  # the defaults keep every rule


@pytest.mark.parametrize("field, value", [("epochs", "3"), ("epochs", 3.0), ("lr", "0.01"), ("lr", True),
                                          ("ema", 1), ("run_name", 7), ("device", None), ("img_size", None)])
def test_wrong_types_are_refused(field, value):
    cfg = BaseConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=f"config field '{field}' = {value!r} must be"):
        cfg.finalize()


def test_an_int_is_a_valid_float():
    cfg = BaseConfig()
    cfg.lr, cfg.warmup_epochs, cfg.box_weight = 1, 0, 5
    cfg.finalize()


@pytest.mark.parametrize("spec, message", [
    ({"name": "a", "box_weight": -1.0}, "box_weight"),
    ({"name": "a", "obj_weight": "2"}, "obj_weight"),
    ({"name": "a", "cls_weight": float("nan")}, "cls_weight"),
    ({"name": "a", "shapes_num_train": 0}, "shapes_num_train"),
])
def test_loss_gains_of_a_task_dict_are_checked(spec, message):
    cfg = BaseConfig()
    cfg.tasks = [spec, {"name": "b"}]
    with pytest.raises(ValueError, match=f"config field 'tasks'.*'a'.*'{message}'"):
        cfg.finalize()


@pytest.mark.parametrize("weights", [["a", 1.0], 2.0, [1.0, float("inf")], [1.0, float("nan")]])
def test_task_weights_must_be_finite_numbers(weights):
    cfg = BaseConfig()
    cfg.tasks, cfg.task_weights = [{"name": "a"}, {"name": "b"}], weights
    with pytest.raises(ValueError, match="config field 'task_weights'"):
        cfg.finalize()


def test_override_of_a_float_field_with_an_int_literal():
    cfg = apply_overrides(BaseConfig(), ["--obj_scale_weights", "(4, 1, 0.4)", "--lr", "1"]).finalize()
    assert cfg.lr == 1.0


# ------------------------------------------------------------------------------------------------- config files
def write_config(tmp_path, body, name="cfg.py"):
    path = tmp_path / name
    path.write_text("from yolo.config import BaseConfig\n\n\nclass C(BaseConfig):\n    def __init__(self):\n"
                    "        super().__init__()\n" + "".join(f"        {line}\n" for line in body))
    return path


def test_a_typo_in_a_config_file_names_the_closest_field(tmp_path):
    path = write_config(tmp_path, ["self.epchs = 1"])
    with pytest.raises(ValueError, match=r"cfg\.py.*unknown config field 'epchs'.*did you mean 'epochs'"):
        load_config(path)


def test_a_config_file_may_not_set_a_derived_field(tmp_path):
    with pytest.raises(ValueError, match="unknown config field 'num_classes'"):
        load_config(write_config(tmp_path, ["self.num_classes = 3"]))


def test_a_config_file_may_keep_private_helpers(tmp_path):
    cfg = load_config(write_config(tmp_path, ["self._base_lr = 0.01", "self.lr = self._base_lr / 2"])).finalize()
    assert cfg.lr == 0.005 and "_base_lr" not in cfg.to_dict()


def test_a_string_in_an_int_field_of_a_config_file(tmp_path):
    with pytest.raises(ValueError, match=r"cfg\.py: config field 'epochs' = '3' must be an int"):
        load_config(write_config(tmp_path, ['self.epochs = "3"']))


@pytest.mark.parametrize("body, name, message", [
    (["raise RuntimeError('boom')"], "cfg.py", r"cfg\.py.*RuntimeError: boom"),
    (["self.lr = = 1"], "cfg.py", r"cfg\.py.*line 7"),
    (["import not_a_module_anywhere"], "cfg.py", r"cfg\.py.*not_a_module_anywhere"),
    (["self.epochs = 3"], "cfg.yaml", r"cfg\.yaml.*\.py"),
])
def test_broken_config_files_are_one_value_error(tmp_path, body, name, message):
    with pytest.raises(ValueError, match=message):
        load_config(write_config(tmp_path, body, name))


def test_an_unknown_key_of_a_checkpoint_config_is_a_warning(log_lines):
    stored = {**BaseConfig().to_dict(), "old_field": 3}
    cfg = config_from_dict(stored)
    assert not hasattr(cfg, "old_field")
    assert any("WARNING" in line and "old_field" in line for line in log_lines)


def test_select_device_refuses_a_missing_gpu(monkeypatch):
    from yolo.engine.distributed import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="config field 'device' = 'cuda:3'.*1 GPU"):
        select_device("cuda:3")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="config field 'device' = 'mps'"):
        select_device("mps")


@pytest.mark.parametrize("args, message", [
    (["--img_size", "0"], "config field 'img_size'"),
    (["--img_size", "-32"], "config field 'img_size'"),
    (["--device", "foo"], "config field 'device'"),
    (["--evolve_params", ""], "config field 'evolve_params'"),
    (["--config", "SYNTAX"], "line 7"),
])
def test_main_prints_one_error_line(tmp_path, args, message):
    args = [str(write_config(tmp_path, ["self.lr = = 1"])) if a == "SYNTAX" else a for a in args]
    out = subprocess.run([sys.executable, "main.py", *args, "--task", "info"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr


@pytest.mark.parametrize("name", ["../outside", "a/b", "/abs", "..", ".", ""])
def test_a_run_name_must_be_a_plain_name(name):
    cfg = apply_overrides(BaseConfig(), ["--run_name", name])
    with pytest.raises(ValueError, match=r"config field 'run_name'.*plain name"):
        cfg.finalize()
