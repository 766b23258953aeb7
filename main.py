"""Entry point in a clone: python main.py [--config configs/my_config.py] [--task NAME] [--<any field> value ...]

The command lives in yolo/cli.py, installed as `yolo-lab` (pip install -e .); this file runs it from the clone."""
from yolo.cli import DEFAULT_CONFIG, LOCAL_RANK_FLAGS, main, parse_args, print_help  # noqa: F401 (main.main etc.)

if __name__ == "__main__":
    main()
