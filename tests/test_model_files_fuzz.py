"""Every command that takes a model file, fed the same broken files (empty, truncated, not a torch file, a foreign
file, a checkpoint whose config or weights are malformed, a newer format): each stops with one line naming the file
and what is wrong with it (main.py's `error: ...`), never a traceback."""
import argparse
import pickle
from pathlib import Path

import pytest
import torch

import main
from yolo.config import BaseConfig
from yolo.engine.checkpoint import save_checkpoint
from yolo.models.detector import build_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "0.25", "--img_size", "64", "--shapes_num_train", "4", "--shapes_num_val", "4", "--batch_size", "4",
        "--num_workers", "0", "--device", "cpu", "--epochs", "1", "--tensorboard", "false", "--cache_images", "false"]
TWO_TASKS = "[{'name': 'a'}, {'name': 'b', 'class_names': ['star', 'cross', 'ring'], 'shapes_seed': 1}]"


def good_checkpoint(width=0.25, **config):
    """A checkpoint of a tiny model of `width`, whose saved config is changed by `config`."""
    cfg = BaseConfig()
    cfg.width, cfg.img_size = width, 64
    ckpt = {"model": build_model(cfg.finalize()).state_dict(), "config": cfg.to_dict(), "epoch": 1}
    ckpt["config"].update(config)
    return ckpt


def write_broken_files(folder, good):
    """{file name: (path, what the message must say)}: one file of each way a model file can be broken."""
    data = (folder / "good.pt").read_bytes()
    raw = {  # written byte for byte
        "empty.pt": (b"", "empty file"),
        "truncated.pt": (data[: len(data) // 2], "truncated"),
        "text.pt": (b"these are not the weights you are looking for\n", "not a torch file"),
        "pickled_list.pt": (pickle.dumps([1, 2, 3]), "not a torch file"),
    }
    saved = {  # written with torch.save / save_checkpoint
        "state_dict.pt": (good["model"], "not a checkpoint of this project"),
        "list.pt": ([torch.zeros(2), 3], "not a checkpoint of this project"),
        "objects.pt": ({"model": argparse.Namespace(a=1), "config": {}}, "Python objects"),
        "model_list.pt": ({**good, "model": [1, 2]}, "'model'"),
        "config_list.pt": ({**good, "config": [1, 2]}, "config"),
        "config_types.pt": (good_checkpoint(img_size="64"), "config"),
        "config_anchors.pt": (good_checkpoint(anchors=[["ab", "cd"]] * 3), "config"),
        "config_task_name.pt": (good_checkpoint(tasks=[{"name": "../../outside/x"}, {"name": "b"}]), "config"),
        "other_weights.pt": ({**good_checkpoint(width=0.5), "config": good["config"]}, "fit"),  # 0.5 wide, says 0.25
        "newer_format.pt": ({**good, "format": 99}, "format 99"),
    }
    files = {}
    for name, (content, reason) in raw.items():
        (folder / name).write_bytes(content)
        files[name] = folder / name, reason
    for name, (content, reason) in saved.items():
        save_checkpoint(content, folder / name)
        files[name] = folder / name, reason
    return files


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    folder = tmp / "runs" / "broken"  # inside runs_dir, as a run's files are (a resume continues in that folder)
    folder.mkdir(parents=True)
    good = good_checkpoint()
    save_checkpoint(good, folder / "good.pt")
    return tmp, write_broken_files(folder, good)


COMMANDS = {  # command: arguments taking the model file F
    "val": lambda f: ["--task", "val", "--ckpt_path", f],
    "predict": lambda f: ["--task", "predict", "--ckpt_path", f],
    "export": lambda f: ["--task", "export", "--ckpt_path", f],
    "train_init": lambda f: ["--task", "train", "--init_ckpt", f],
    "train_resume": lambda f: ["--task", "train", "--resume", "true", "--resume_path", f],
    "merge": lambda f: ["--task", "merge", "--tasks", TWO_TASKS, "--merge_ckpts", f"{f},{f}"],
    "peel": lambda f: ["--task", "peel", "--peel_task", "a", "--ckpt_path", f],
    "rsa": lambda f: ["--task", "rsa", "--tasks", TWO_TASKS, "--rsa_ckpts", f"{f},{f}", "--rsa_images", "4"],
}
FILES = ["empty.pt", "truncated.pt", "text.pt", "pickled_list.pt", "state_dict.pt", "list.pt", "objects.pt",
         "model_list.pt", "config_list.pt", "config_types.pt", "config_anchors.pt", "config_task_name.pt",
         "other_weights.pt", "newer_format.pt"]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_broken_model_file_is_one_line_naming_it(broken, command, name, capsys):
    tmp, files = broken
    path, reason = files[name]
    if command == "train_init" and name == "other_weights.pt":
        reason = "none of its weights fits"  # fine-tuning loads what fits; here nothing does
    args = ["--config", str(ROOT / "configs" / "my_config.py"), *TINY, "--runs_dir", str(tmp / "runs"),
            "--data_root", str(tmp / "data"), *COMMANDS[command](str(path))]
    with pytest.raises(SystemExit) as stop:
        torch.set_num_threads(1)
        main.main(args)
    message = str(stop.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    assert str(path) in message and reason in message, message
    assert "Traceback" not in capsys.readouterr().err
