"""Entry point: python main.py [--config configs/my_config.py] [--task NAME] [--<any field> value ...]"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would otherwise query PyPI on import
os.environ.setdefault("MPLBACKEND", "Agg")  # plots are saved to files; no display needed (notebooks keep inline)

from yolo.config import BaseConfig, apply_overrides, load_config  # noqa: E402
from yolo.tasks import TASKS, check_task_name  # noqa: E402  (the registry only: each command loads on use)

DEFAULT_CONFIG = "configs/my_config.py"


LOCAL_RANK_FLAGS = ("--local-rank", "--local_rank")  # python -m torch.distributed.launch passes --local-rank=N


def parse_args(argv):
    """Split --config from the field overrides; everything else must be --field value. The launcher's
    --local-rank / --local_rank N is moved to the LOCAL_RANK environment variable, where torchrun puts it."""
    config_path, rest, i = DEFAULT_CONFIG, [], 0
    while i < len(argv):
        flag, has_value, value = argv[i].partition("=")
        if argv[i] == "--config":
            if i + 1 >= len(argv):
                raise ValueError("--config needs a file path")
            config_path, i = argv[i + 1], i + 2
        elif argv[i].startswith("--config="):
            config_path, i = argv[i].split("=", 1)[1], i + 1
        elif flag in LOCAL_RANK_FLAGS:
            if not has_value and i + 1 >= len(argv):
                raise ValueError(f"{flag} needs a number")
            value, i = (value, i + 1) if has_value else (argv[i + 1], i + 2)
            if not value.isdigit():
                raise ValueError(f"{flag} must be a number, got {value!r}")
            os.environ.setdefault("LOCAL_RANK", value)
        else:
            rest.append(argv[i])
            i += 1
    return config_path, rest


def print_help():
    print(__doc__)
    print("Tasks (--task NAME, default from the config):")
    for name, description in TASKS.items():
        print(f"  {name:<12} {description}")
    print("\nEvery field of the config can be overridden; defaults (see yolo/config.py for what each one means):")
    for name, value in BaseConfig().to_dict().items():
        print(f"  --{name} {value!r}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        return print_help()
    try:
        config_path, overrides = parse_args(argv)
        cfg = apply_overrides(load_config(config_path), overrides).finalize()
        check_task_name(cfg.task)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    from yolo.data.checks import DataError  # heavy imports only once the config is known to be valid
    from yolo.tasks import run_task
    try:
        return run_task(cfg)
    except (DataError, OSError, ValueError, FloatingPointError, ImportError) as e:
        # bad input (a file and what is wrong with it), a full disk or read-only folder (OSError names the file), a
        # diverged run, or an optional package that is not installed (the message says what to install)
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
