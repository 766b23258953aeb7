"""coco128 (the first 128 COCO train2017 images, YOLO txt labels, 80 classes) from ../shared/data/coco128, if you
have it: a development set for the YOLO-txt reader and the real-data pipeline, and a hard case for bench/peer.py
(80 classes from scratch in 15 minutes).

    python main.py --config configs/coco128.py --task check
    python main.py --config configs/coco128.py --task train      # 15 minutes (time_budget)

It has no split of its own: train and val are the same 128 images, as in the original, so its mAP measures
memorisation, and best.pt is picked on the scored images: judge a run by last.pt. Two images have no label file
(background images) and two label files have no image (reported).
"""
from configs.coco import COCO_CLASSES
from yolo.config import BaseConfig
from yolo.data.transforms import PHOTO_AUGMENTATIONS


class COCO128Config(BaseConfig):
    def __init__(self):
        super().__init__()
        self.run_name = "coco128"
        self.dataset = "yolo"
        self.data_root = "../shared/data/coco128"  # data.yaml, images/train/*.jpg, labels/train/*.txt
        self.train_split = "train"
        self.val_split = "train"
        self.class_names = COCO_CLASSES        # matched by name against data.yaml's names
        self.img_size = 416
        # python main.py --config configs/coco128.py --task anchors at this 416 px: mean best IoU 0.614, BPR@0.3 0.97
        # (docs/data.md shows the same command's output at 320 px)
        self.anchors = [[(6, 7), (10, 22), (20, 12)],  # stride 8
                        [(33, 28), (48, 51), (28, 86)],  # stride 16
                        [(93, 59), (82, 139), (241, 238)]]  # stride 32
        # the real-data recipe of configs/own_data.py (docs/peer_bench.md): 2.1 M params with 80 classes
        self.backbone = "resnet18"
        self.width = 0.25
        self.augmentations = PHOTO_AUGMENTATIONS  # noise, colour, flip, zoom/shift
        self.mosaic_prob = 0.0
        self.cls_weight = 2.0                  # its runs in docs/peer_bench.md; not screened for 80 classes
        self.neck_activation = "silu"
        self.time_budget = 15                  # minutes; the epoch count follows from it
        self.epochs = 60                       # only the planner's first guess
        self.cache_images = True               # 128 images: about 50 MB at 416 px
        self.num_workers = 0                   # 2 cores: the model needs both; the cached loader keeps up
        self.batch_size = 16
        self.val_interval = 5
