"""Commands that only read data (val, predict, export, check) never write into a data folder: they read the built-in
dataset as it is, or say in one line that it is missing or holds other classes, and which training command
generates it. Training regenerates only a folder the generator marked as its own, and says so in the log."""
import json

import pytest
import torch

from yolo.config import BaseConfig, apply_overrides
from yolo.data.checks import DataError
from yolo.data.dataset import read_records
from yolo.data.shapes import ensure_shapes_dataset
from yolo.engine.checkpoint import save_checkpoint
from yolo.models.detector import build_model
from yolo.tasks import check, export, predict, val

COMMANDS = {"val": val.run, "predict": predict.run, "export": export.run, "check": check.run}
OTHER_CLASSES = "['star', 'cross']"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread


def tiny_args(tmp_path, data_root, *more):
    return ["--data_root", str(data_root), "--runs_dir", str(tmp_path / "runs"), "--img_size", "64", "--width", "0.25",
            "--shapes_num_train", "4", "--shapes_num_val", "4", "--num_workers", "0", "--batch_size", "4",
            "--predict_max_images", "2", "--export_check_images", "2", "--device", "cpu", *more]


def save_random_model(path, args):
    cfg = apply_overrides(BaseConfig(), args).finalize()
    torch.manual_seed(0)
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(folder, built-in data of the default classes, a checkpoint of those classes, one of other classes)."""
    tmp = tmp_path_factory.mktemp("nowrites")
    data = tmp / "shapes"
    ensure_shapes_dataset(str(data), 4, 4, 0, ("circle", "square", "triangle"), num_workers=1)
    same = save_random_model(tmp / "same" / "best.pt", tiny_args(tmp, data))
    other = save_random_model(tmp / "other" / "best.pt", tiny_args(tmp, data, "--class_names", OTHER_CLASSES))
    return tmp, data, same, other


def snapshot(root):
    """Every file under root with its size and modification time: any write shows."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_do_not_regenerate_the_data_of_other_classes(setup, command):
    tmp, data, _, other = setup
    before = snapshot(data)
    more = ("--class_names", OTHER_CLASSES) if command == "check" else ("--ckpt_path", str(other))
    cfg = apply_overrides(BaseConfig(), tiny_args(tmp, data, *more)).finalize()
    with pytest.raises(DataError) as error:
        COMMANDS[command](cfg)
    message = str(error.value)
    assert "\n" not in message and str(data) in message and "generated for classes" in message
    assert "['star', 'cross']" in message and "python main.py --task train" in message
    assert snapshot(data) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_do_not_generate_missing_data(setup, command):
    tmp, _, same, _ = setup
    missing = tmp / f"missing_{command}"
    more = () if command == "check" else ("--ckpt_path", str(same))
    cfg = apply_overrides(BaseConfig(), tiny_args(tmp, missing, *more)).finalize()
    with pytest.raises(DataError) as error:
        COMMANDS[command](cfg)
    message = str(error.value)
    assert "\n" not in message and str(missing) in message
    assert f"python main.py --task train --data_root {missing}" in message
    assert not missing.exists()


def test_val_reads_the_built_in_data_as_it_is(setup):
    """Other sizes or seed than the folder was generated with: val evaluates on what is there."""
    tmp, data, same, _ = setup
    before = snapshot(data)
    cfg = apply_overrides(BaseConfig(), tiny_args(tmp, data, "--ckpt_path", str(same), "--shapes_num_val", "9",
                                                  "--shapes_seed", "3", "--eval_artifacts", "false")).finalize()
    results = val.run(cfg)
    assert len(results) == 1
    assert snapshot(data) == before


def test_val_refuses_a_generation_that_did_not_finish(setup):
    tmp, data, same, _ = setup
    half = tmp / "half"
    ensure_shapes_dataset(str(half), 2, 2, 0, ("circle", "square", "triangle"), num_workers=1)
    meta = json.loads((half / "meta.json").read_text())
    (half / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    before = snapshot(half)
    cfg = apply_overrides(BaseConfig(), tiny_args(tmp, half, "--ckpt_path", str(same))).finalize()
    with pytest.raises(DataError, match="did not finish"):
        val.run(cfg)
    assert snapshot(half) == before


def test_training_regenerates_its_own_folder_and_says_so(tmp_path, log_lines):
    root = tmp_path / "shapes"
    ensure_shapes_dataset(str(root), 2, 2, 0, ("circle", "square", "triangle"), num_workers=1)
    cfg = apply_overrides(BaseConfig(), tiny_args(tmp_path, root, "--class_names", OTHER_CLASSES)).finalize()
    read_records(cfg, "train")  # as training reads it: the generator's own folder is regenerated
    assert json.loads((root / "meta.json").read_text())["class_names"] == ["star", "cross"]
    said = [line for line in log_lines if "regenerating" in line and str(root) in line]
    assert said and "class_names" in said[0] and "deleted" in said[0], log_lines
