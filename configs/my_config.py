"""The config you edit. Every field and its default is in yolo/config.py (BaseConfig); override what you need here,
or on the command line: python main.py --task train --epochs 3 --img_size 320."""
from yolo.config import BaseConfig


class MyConfig(BaseConfig):
    def __init__(self):
        super().__init__()
        self.task = "train"
        self.run_name = "shapes"
        # the built-in synthetic dataset (generated on first use under data/shapes); see configs/raccoon.py for real data
        self.dataset = "shapes"
        self.backbone = "resnet18"
        self.width = 0.5
        self.img_size = 320
        self.label_assignment = "nearby_grid"
