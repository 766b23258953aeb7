"""The config you edit. Every field and its default is in yolo/config.py (BaseConfig); override what you need here,
or on the command line: python main.py --task train --epochs 3 --img_size 256."""
from yolo.config import BaseConfig


class MyConfig(BaseConfig):
    def __init__(self):
        super().__init__()
        self.task = "train"
        self.run_name = "shapes"
        # the built-in synthetic dataset (generated on first use under data/shapes); see configs/raccoon.py for real data
        self.dataset = "shapes"
        # sized to train on a 2-core CPU in minutes (timed in docs/performance.md); on a GPU try width 0.5-1.0, 416 px
        self.backbone = "resnet18"
        self.width = 0.25
        # 320 instead of 256 keeps more pixels of the small shapes: +0.065 / +0.069 mAP@0.5:0.95 over two random seeds
        # at the same 5 epochs, for 1.5 x the time per image (docs/performance.md, "The image size")
        self.img_size = 320
        self.epochs = 5  # 2,000 images each: about 8 minutes on 2 CPU cores, est. 11 on the slowest day
        self.val_interval = 2
        # 2,000 small images fit in RAM; decoding them once and loading in the training process beats worker
        # processes that would fight the two compute threads for the same two cores (bench/pipeline.py)
        self.cache_images = True
        self.num_workers = 0
        self.label_assignment = "nearby_grid"
        # the classes are what this data makes hard (circles and squares look alike when a few pixels wide): a
        # class-loss gain of 2 instead of 0.5 lifts mAP@0.5 from 0.81 to 0.95 at 7 epochs, 0.91 at 5 (at 256 px;
        # docs/performance.md)
        self.cls_weight = 2.0
        # merge-NMS: each kept box becomes the score x IoU weighted mean of the overlapping boxes of its class;
        # +0.036 and +0.047 mAP@0.5:0.95 on two 256 px runs, nothing to train (docs/performance.md)
        self.nms_merge = True
