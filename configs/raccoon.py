"""The raccoon dataset (200 photos, one class, Pascal VOC XML) from ../shared/data/raccoon, if you have it.

python main.py --config configs/raccoon.py --task train
Its own split: data/train_labels.csv (160 images) and data/test_labels.csv (40 images).
"""
from yolo.config import BaseConfig


class RaccoonConfig(BaseConfig):
    def __init__(self):
        super().__init__()
        self.run_name = "raccoon"
        self.dataset = "voc"
        self.data_root = "../shared/data/raccoon"
        self.ann_dir = "annotations"
        self.img_dir = "images"
        self.train_split_file = "data/train_labels.csv"  # relative to data_root
        self.val_split_file = "data/test_labels.csv"
        self.class_names = ["raccoon"]
        self.img_size = 320
        # YOLOv3's COCO anchors scaled from 416 to 320 px: raccoons fill much of the frame
        self.anchors = [[(8, 10), (12, 23), (25, 18)], [(23, 47), (48, 35), (45, 92)],
                        [(89, 69), (120, 152), (287, 251)]]
        self.width = 0.25          # a CPU-sized model: about 3 minutes on 2 cores; go wider on a GPU
        self.epochs = 25
        self.batch_size = 16
        self.val_interval = 5
        self.cache_images = True   # 200 photos up to 2000 px wide: decode them once
        self.num_workers = 0
