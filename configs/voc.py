"""Pascal VOC (20 classes) as the YOLO papers use it: train on VOC2007 trainval + VOC2012 trainval (16,551
images), validate on VOC2007 test (4,952 images).

    python main.py --config configs/voc.py --task check     # look at the data first
    python main.py --config configs/voc.py --task train

Layout (the official tars unpacked into data/):
    data/VOCdevkit/VOC2007/{Annotations, ImageSets/Main/trainval.txt, ImageSets/Main/test.txt, JPEGImages}
    data/VOCdevkit/VOC2012/{Annotations, ImageSets/Main/trainval.txt, JPEGImages}
`difficult` objects are not trained on and count neither as hits nor as misses in the metric, as in VOC's devkit.
A real run wants a GPU and a pretrained backbone (pretrained_path).
"""
from yolo.config import BaseConfig
from yolo.data.transforms import PHOTO_AUGMENTATIONS

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


class VOCConfig(BaseConfig):
    def __init__(self):
        super().__init__()
        self.run_name = "voc"
        self.dataset = "voc"
        self.data_root = "data/VOCdevkit"
        self.train_dirs = ["VOC2007", "VOC2012"]
        self.val_dirs = ["VOC2007"]
        self.train_split = "trainval"
        self.val_split = "test"
        self.class_names = VOC_CLASSES
        self.img_size = 416
        # YOLOv3's COCO anchors at 416 px; python main.py --config configs/voc.py --task anchors fits VOC's own
        self.anchors = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)],
                        [(116, 90), (156, 198), (373, 326)]]
        self.augmentations = PHOTO_AUGMENTATIONS  # noise, colour, flip, zoom/shift
        self.mosaic_prob = 0.5
        self.backbone = "resnet50"
        self.width = 1.0
        self.pretrained_path = None            # e.g. a local torchvision resnet50 state_dict (see docs/models.md)
        self.batch_size = 16
        self.num_workers = 8
        self.epochs = 60
        self.val_interval = 5
        self.ema = True
