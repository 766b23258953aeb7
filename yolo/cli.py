"""Usage: yolo-lab [--config configs/my_config.py] [--task NAME] [--<any field> value ...]
       (python main.py ... in a clone of the repository: the same command)

Without --config the command reads configs/my_config.py of the working folder; where there is none (outside a clone)
it runs the package's defaults (BaseConfig: the built-in shapes data, generated under data/shapes on first use).
"""
import os
import sys
from pathlib import Path

from loguru import logger

from .config import BaseConfig, apply_overrides, load_config
from .tasks import TASKS, check_task_name  # the registry only: each command loads on use

DEFAULT_CONFIG = "configs/my_config.py"
LOCAL_RANK_FLAGS = ("--local-rank", "--local_rank")  # python -m torch.distributed.launch passes --local-rank=N
SAID_DEFAULTS = set()  # the working folders for which the log has said that the package's defaults run


def parse_args(argv):
    """Split --config from the field overrides; everything else must be --field value. The launcher's
    --local-rank / --local_rank N is moved to the LOCAL_RANK environment variable, where torchrun puts it.
    Returns (config path, or None when not given, overrides)."""
    config_path, rest, i = None, [], 0
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


def load_command_config(config_path=None):
    """The config a command starts from: the file given, else configs/my_config.py of the working folder, else
    (outside a clone) BaseConfig's defaults, said in the log. Not finalized: overrides come next."""
    if config_path is not None:
        return load_config(config_path)
    if Path(DEFAULT_CONFIG).is_file():
        return load_config(DEFAULT_CONFIG)
    if Path.cwd() not in SAID_DEFAULTS:  # once per folder: the API's calls do not repeat it
        SAID_DEFAULTS.add(Path.cwd())
        logger.info(f"no {DEFAULT_CONFIG} in {Path.cwd()}: running the package's defaults (BaseConfig, the built-in "
                    f"shapes data in data/shapes); give --config FILE for your own")
    return BaseConfig()


def finish_config(cfg):
    """Finalize (every field checked), then read config field `data` (a data.yaml: dataset, folders and class
    names) and finalize again with what it set."""
    cfg.finalize()
    if cfg.data is None:
        return cfg
    from .data.data_yaml import apply_data_yaml  # the data layer only when a data.yaml is given

    return apply_data_yaml(cfg).finalize()


def print_help(argv=()):
    """The commands, then every field with the value the run would start from: that of --config when given, else
    of configs/my_config.py (what a plain `python main.py` runs), else BaseConfig's."""
    print(__doc__)
    print("Tasks (--task NAME, default from the config):")
    for name, description in TASKS.items():
        print(f"  {name:<12} {description}")
    config_path, _ = parse_args([arg for arg in argv if arg not in ("-h", "--help")])
    cfg = load_command_config(config_path)
    source = config_path or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else "BaseConfig")
    print(f"\nEvery field of the config can be overridden; the values of {source} (see yolo/config.py for what each "
          f"one means):")
    for name, value in cfg.to_dict().items():
        print(f"  --{name} {value!r}")


def main(argv=None):
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would otherwise query PyPI on import
    os.environ.setdefault("MPLBACKEND", "Agg")  # plots are saved to files; no display needed (notebooks keep inline)
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        try:
            return print_help(argv)
        except (ValueError, FileNotFoundError) as e:  # a --config that cannot be loaded
            sys.exit(f"error: {e}")
    try:
        config_path, overrides = parse_args(argv)
        cfg = finish_config(apply_overrides(load_command_config(config_path), overrides))
        check_task_name(cfg.task)
    except (ValueError, FileNotFoundError) as e:  # DataError too: a data.yaml that cannot be used
        sys.exit(f"error: {e}")
    from .data.checks import DataError  # heavy imports only once the config is known to be valid
    from .tasks import run_task
    try:
        return run_task(cfg)
    except (DataError, OSError, ValueError, FloatingPointError, ImportError) as e:
        # bad input (a file and what is wrong with it), a full disk or read-only folder (OSError names the file), a
        # diverged run, or an optional package that is not installed (the message says what to install)
        sys.exit(f"error: {e}")


def command():
    """The yolo-lab console command. A console script hands the entry's return value to sys.exit, which would make
    a command's result (train's (fitness, folder)) exit status 1: this returns nothing."""
    main()


if __name__ == "__main__":
    command()
