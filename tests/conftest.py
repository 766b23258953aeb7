import os
import sys
from pathlib import Path

import pytest
import torch
from loguru import logger

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the second tier, run with -m slow: trainings through main.py, on the "
                                       "real datasets of ../shared/data (skipped where they are missing), the "
                                       "notebooks executed, several processes (DDP, the launcher, Ray), the RSA "
                                       "measurement, the bench scripts' --help; the default run deselects them "
                                       "(pyproject.toml)")


@pytest.fixture
def log_lines():
    """The messages logged (INFO and up) while the test runs."""
    lines = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    yield lines
    try:
        logger.remove(sink)
    except ValueError:  # already removed by a setup_logging
        pass


@pytest.fixture(autouse=True)
def keep_working_folder():
    """Every test ends in the folder it started in: code under test may chdir (a Ray trial moves into the project
    root it is given), and a later test's relative paths (configs/my_config.py) must not depend on it."""
    folder = os.getcwd()
    yield
    os.chdir(folder)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): on a shared 2-core CPU
    two OpenMP threads mostly wait for each other, and ONNX Runtime follows torch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def untrained_checkpoint(path, args):
    """A checkpoint of this project holding an untrained model of the config of command-line `args` (seeded):
    enough for commands that only need a model to run (predict, export, val)."""
    from yolo.config import BaseConfig, apply_overrides
    from yolo.engine.checkpoint import save_checkpoint
    from yolo.models.detector import build_model

    cfg = apply_overrides(BaseConfig(), list(args)).finalize()
    torch.manual_seed(0)
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "epoch": 0}, path)
    return path
