import subprocess
import sys

import pytest

from conftest import ROOT
from yolo.config import BaseConfig, apply_overrides, config_from_dict, load_config, parse_value


def test_overrides_are_parsed_to_the_type_of_the_default():
    cfg = apply_overrides(BaseConfig(), ["--task", "val", "--epochs", "3", "--img_size=416", "--lr", "0.01",
                                         "--filter_by_max_iou", "false", "--affine_scale", "(0.5, 1.5)",
                                         "--pretrained_path", "w.pth", "--class_names", "['a', 'b']",
                                         "--anchors", "[[(1, 2)], [(3, 4)], [(5, 6)]]"]).finalize()
    assert cfg.task == "val" and cfg.epochs == 3 and cfg.img_size == 416 and cfg.lr == 0.01
    assert cfg.filter_by_max_iou is False and cfg.affine_scale == (0.5, 1.5) and cfg.pretrained_path == "w.pth"
    assert cfg.class_names == ["a", "b"] and cfg.num_classes == 2 and cfg.anchors[2] == [(5, 6)]


def test_none_and_dashes():
    cfg = apply_overrides(BaseConfig(), ["--ckpt-path", "x.pt"])
    assert cfg.ckpt_path == "x.pt"
    cfg = apply_overrides(cfg, ["--ckpt_path", "None"])
    assert cfg.ckpt_path is None


def test_unknown_field_names_the_closest():
    with pytest.raises(ValueError, match="unknown config field 'epoch'.*did you mean 'epochs'"):
        apply_overrides(BaseConfig(), ["--epoch", "3"])


@pytest.mark.parametrize("args, message", [
    (["--epochs", "three"], "config field 'epochs'"),
    (["--filter_by_max_iou", "maybe"], "expected a bool"),
    (["--affine_scale", "0.5"], "expected a list/tuple"),
    (["--epochs"], "needs a value"),
    (["epochs", "3"], "unexpected command-line argument"),
    (["--num_classes", "3"], "unknown config field 'num_classes'"),  # derived fields cannot be set
])
def test_bad_override_values(args, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(BaseConfig(), args)


@pytest.mark.parametrize("field, value, message", [
    ("backbone", "vgg", "choose one of"),
    ("label_assignment", "best_grid", "choose one of"),
    ("img_size", 300, "multiple of 32"),
    ("width", 0, "width"),
    ("anchors", [[(1, 1)], [(2, 2)]], "anchors"),
    ("batch_size", 0, "batch_size"),
    ("match_iou_thres", 1.5, "match_iou_thres"),
    ("class_names", [], "class_names"),
    ("hflip_prob", 1.5, "hflip_prob"),
    ("color_jitter", 1.0, "color_jitter"),
    ("affine_translate", -0.1, "affine_translate"),
    ("affine_scale", (1.25, 0.75), "affine_scale"),
    ("affine_scale", (0.5,), "affine_scale"),
])
def test_validation_names_field_and_allowed_values(field, value, message):
    cfg = BaseConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=message) as e:
        cfg.finalize()
    assert field in str(e.value)


def test_parse_value_bools_and_literals():
    assert parse_value("True", False) is True and parse_value("0", True) is False
    assert parse_value("[1, 2]", None) == [1, 2] and parse_value("some/path", None) == "some/path"


def test_load_config_file_and_checkpoint_round_trip(tmp_path):
    cfg = load_config(ROOT / "configs" / "my_config.py").finalize()
    assert isinstance(cfg, BaseConfig) and cfg.num_classes == len(cfg.class_names)
    again = config_from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="exactly one subclass"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.py"):
        load_config(tmp_path / "missing.py")


def test_main_reports_config_errors_without_traceback():
    out = subprocess.run([sys.executable, "main.py", "--epochz", "1"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "did you mean 'epochs'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path).finalize()  # a field renamed in BaseConfig but not in a config file would fail here
    unknown = set(cfg.to_dict()) - set(BaseConfig().finalize().to_dict())
    assert not unknown, f"{path.name} sets fields BaseConfig does not have: {sorted(unknown)}"


def test_help_shows_the_values_of_the_config_it_would_run(capsys):
    import main

    main.main(["--config", str(ROOT / "configs" / "raccoon.py"), "--help"])
    shown = capsys.readouterr().out
    raccoon = load_config(ROOT / "configs" / "raccoon.py")
    assert f"  --img_size {raccoon.img_size!r}\n" in shown and raccoon.img_size != BaseConfig().img_size
    assert "configs/raccoon.py" in shown


def test_schedule_counts_the_steps_the_multi_task_trainer_takes(tmp_path, monkeypatch):
    from yolo.tasks import schedule

    seen = []
    monkeypatch.setattr(schedule, "plot_lr_schedule", lambda curve, iters, path, title: seen.append(iters))
    tasks = [{"name": "a", "data_root": str(tmp_path / "a"), "shapes_num_train": 8, "shapes_num_val": 2},
             {"name": "b", "data_root": str(tmp_path / "b"), "shapes_num_train": 4, "shapes_num_val": 2}]
    for sampling, steps in (("all", 2), ("proportional", 3)):  # passes of 2 and 1 batches of 4
        cfg = apply_overrides(BaseConfig(), ["--tasks", repr(tasks), "--task_sampling", sampling, "--batch_size", "4",
                                             "--runs_dir", str(tmp_path / "runs"), "--data_root", str(tmp_path / "top"),
                                             "--shapes_num_train", "8", "--shapes_num_val", "2"])
        schedule.run(cfg.finalize())
        assert seen[-1] == steps, sampling
