"""`python main.py --config <multi-task config> --task merge --merge_ckpts a.pt,b.pt [--merge_average true]`: one
multi-task checkpoint from one single-task checkpoint per task, for the config's `branching`: the start of a
multi-task fine-tuning (--init_ckpt). Written to <runs_dir>/merge/<run_name>.pt, or <run_name>2.pt, 3 ... when that
exists."""
from ..engine.logs import setup_logging
from ..research.merge import merge_checkpoints


def run(cfg):
    """Merge cfg.merge_ckpts for cfg's tasks and branching. Returns the merged checkpoint's path."""
    setup_logging()
    return merge_checkpoints(cfg)
