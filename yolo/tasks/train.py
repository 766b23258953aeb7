"""`python main.py --task train`: the training loop lives in yolo/engine/trainer.py; this is its command."""
from ..engine.trainer import train


def run(cfg):
    """Train as configured (or continue the run, --resume true). Returns (best fitness, run folder)."""
    return train(cfg)
