"""`python main.py --task peel --peel_task NAME [--ckpt_path multi.pt]`: one task's single-task checkpoint out of a
multi-task one (the default: best.pt of the run, as --task val picks it). It gives exactly that task's detections
of the multi-task model. Written to <run folder>/peel/<task>.pt, or <task>2.pt, 3 ... when that exists."""
from ..engine.checkpoint import default_checkpoint
from ..engine.logs import setup_logging
from ..research.merge import peel_checkpoint


def run(cfg):
    """Peel cfg.peel_task out of cfg.ckpt_path (else the default checkpoint). Returns the new checkpoint's path."""
    setup_logging()
    if not cfg.peel_task:
        raise ValueError("--task peel needs config field 'peel_task': the name of the task to take out")
    return peel_checkpoint(default_checkpoint(cfg), cfg.peel_task, cfg.runs_dir)
