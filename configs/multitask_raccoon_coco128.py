"""Development config: raccoon (VOC XML, 1 class) and coco128 (YOLO txt, 80 classes) as two tasks of one model,
from ../shared/data when you have it. Mixes two real formats and very different class counts.

    python main.py --config configs/multitask_raccoon_coco128.py --task check
    python main.py --config configs/multitask_raccoon_coco128.py --task train
"""
from configs.coco import COCO_CLASSES
from yolo.config import BaseConfig


class RaccoonCOCO128Config(BaseConfig):
    def __init__(self):
        super().__init__()
        self.run_name = "raccoon_coco128"
        self.tasks = [
            dict(name="raccoon", dataset="voc", data_root="../shared/data/raccoon", ann_dir="annotations",
                 img_dir="images", train_split_file="data/train_labels.csv", val_split_file="data/test_labels.csv",
                 class_names=["raccoon"]),
            dict(name="coco128", dataset="yolo", data_root="../shared/data/coco128", train_split="train",
                 val_split="train", class_names=COCO_CLASSES),
        ]
        self.branching = [[5, [[0], [1]]]]    # share the neck down to up4; top3 / out3 per task
        self.img_size = 320
        # YOLOv3's COCO anchors at 320 px fit both datasets reasonably (python main.py --task anchors fits all tasks)
        self.anchors = [[(8, 10), (12, 23), (25, 18)], [(23, 47), (48, 35), (45, 92)],
                        [(89, 69), (120, 152), (287, 251)]]
        self.width = 0.25
        self.epochs = 20
        self.val_interval = 5
        self.cache_images = True
        self.num_workers = 0
