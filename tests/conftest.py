import os
import sys
from pathlib import Path

import pytest
from loguru import logger

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes, not seconds: trainings on the real datasets of ../shared/data "
                                       "(skipped where they are missing), the RSA measurement, a Ray cluster start "
                                       "(deselect with -m 'not slow')")


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
