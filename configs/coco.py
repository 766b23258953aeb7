"""COCO 2017 detection (80 classes): train2017 (118k images) and val2017 (5k), from the official json files.

    python main.py --config configs/coco.py --task check     # look at the data first
    python main.py --config configs/coco.py --task train

Layout (the official zips unpacked into data_root):
    data/coco/annotations/instances_train2017.json, data/coco/annotations/instances_val2017.json
    data/coco/train2017/*.jpg, data/coco/val2017/*.jpg
Category ids (1..90 with gaps) become the contiguous indices of COCO_CLASSES; iscrowd boxes are never trained on
and are handled by the COCO metric as crowds. A real run wants a GPU and a pretrained backbone (pretrained_path).
"""
from yolo.config import BaseConfig
from yolo.data.transforms import PHOTO_AUGMENTATIONS

COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
# YOLOv3's k-means anchors for COCO at 416 px
YOLOV3_ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]


class COCOConfig(BaseConfig):
    def __init__(self):
        super().__init__()
        self.run_name = "coco"
        self.dataset = "coco"
        self.data_root = "data/coco"
        self.ann_dir = "annotations"           # <data_root>/annotations/instances_<split>.json
        self.img_dir = "{split}"               # <data_root>/train2017/, <data_root>/val2017/
        self.train_split = "train2017"
        self.val_split = "val2017"
        self.class_names = COCO_CLASSES
        self.img_size = 416
        self.anchors = YOLOV3_ANCHORS
        self.augmentations = PHOTO_AUGMENTATIONS  # noise, colour, flip, zoom/shift
        self.mosaic_prob = 0.5
        self.backbone = "darknet53"
        self.width = 1.0
        self.pretrained_path = None            # e.g. a local darknet53.conv.74: from scratch COCO takes weeks
        self.batch_size = 16
        self.num_workers = 8
        self.epochs = 100
        self.val_interval = 5
        self.ema = True
        self.eval_backend = "faster_coco_eval"  # same numbers as pycocotools, several times faster on 5k images
