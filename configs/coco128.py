"""coco128 (the first 128 COCO train2017 images, YOLO txt labels, 80 classes) from ../shared/data/coco128, if you
have it: a development set for the YOLO-txt reader and the real-data pipeline, not a benchmark.

    python main.py --config configs/coco128.py --task check
    python main.py --config configs/coco128.py --task train

It has no split of its own: train and val are the same 128 images, as in the original, so its mAP measures
memorisation. Two images have no label file (background images) and two label files have no image (reported).
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
        self.img_size = 320
        # python main.py --config configs/coco128.py --task anchors: mean best IoU 0.61, BPR@0.3 0.97 (defaults: 0.53, 0.83)
        self.anchors = [[(5, 5), (8, 17), (16, 9)],  # stride 8
                        [(25, 22), (37, 39), (22, 66)],  # stride 16
                        [(71, 46), (63, 107), (185, 183)]]  # stride 32
        self.augmentations = PHOTO_AUGMENTATIONS  # noise, colour, flip, zoom/shift
        self.mosaic_prob = 0.5
        self.cache_images = True               # 128 images: about 30 MB at 320 px
        self.backbone = "resnet18"
        self.width = 0.5
        self.epochs = 30
        self.batch_size = 16
        self.val_interval = 5
