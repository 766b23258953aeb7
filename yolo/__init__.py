"""yolo: a compact YOLOv3-style detector. The Python API (yolo/api.py, docs/api.md) loads on first use, so that
`import yolo.config` (configs, --help) stays light:

    import yolo
    results = yolo.load("runs/shapes/best.pt").predict("photo.jpg")
    yolo.train(epochs=3)
"""
API = ("load", "run", "train", "val", "export", "check", "Detector", "Detections")


def __getattr__(name):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'yolo' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])
