"""Entry point: python main.py [--config configs/my_config.py] [--task train|val|predict] [--<any field> value ...]"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would otherwise query PyPI on import

from yolo.config import apply_overrides, load_config  # noqa: E402

DEFAULT_CONFIG = "configs/my_config.py"


def parse_args(argv):
    """Split --config from the field overrides; everything else must be --field value."""
    config_path, rest, i = DEFAULT_CONFIG, [], 0
    while i < len(argv):
        if argv[i] == "--config":
            if i + 1 >= len(argv):
                raise ValueError("--config needs a file path")
            config_path, i = argv[i + 1], i + 2
        elif argv[i].startswith("--config="):
            config_path, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest.append(argv[i])
            i += 1
    return config_path, rest


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        config_path, overrides = parse_args(argv)
        cfg = apply_overrides(load_config(config_path), overrides).finalize()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    from yolo.tasks import run_task  # heavy imports only once the config is known to be valid
    return run_task(cfg)


if __name__ == "__main__":
    main()
