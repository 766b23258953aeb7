"""A template for your own data on a CPU (or a small GPU): copy it, fill in the four data lines, train.

    python main.py --config configs/own_data.py --task check     # look at the data first (bad boxes, tiny boxes)
    python main.py --config configs/own_data.py --task train     # 15 minutes, whatever the machine
    python main.py --config configs/own_data.py --task val --val_split test   # the held-out split, once, at the end

The data lines below are for a Pascal VOC folder (labelImg writes one); for COCO json or YOLO txt see the table in
docs/data.md (dataset = "coco" / "yolo" and their layouts). Keep three splits if you can: `train` to learn from,
`val` to watch the run and pick best.pt, and `test` scored once at the end -- a score on the split best.pt was
picked on is optimistic. With only two splits, score `last.pt` (--ckpt_path runs/<run>/last.pt), as
bench/peer.py does, and tune (--task evolve) with --val_from_train 0.2: a seeded fifth of train becomes the val split.

The training fields are the recipe measured in docs/peer_bench.md and docs/performance.md: a time budget rather than
an epoch count, anchors refit by k-means when they fit the boxes poorly (auto_anchor_bpr, on by default), and a
class-loss gain measured on six look-alike classes.
"""
from yolo.config import BaseConfig


class OwnDataConfig(BaseConfig):
    def __init__(self):
        super().__init__()
        self.run_name = "own_data"
        # ---- your data: four lines (Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{train,val}.txt)
        self.dataset = "voc"
        self.data_root = "data/my_dataset"
        self.class_names = ["my_class"]         # their order is the order of the model's outputs
        self.train_split, self.val_split = "train", "val"
        # ---- a CPU-sized model: ResNet-18 x 0.25 (2.0 M params, 1.9 GFLOPs at 416 px); on a GPU try width 0.5-1.0
        self.backbone = "resnet18"
        self.width = 0.25
        self.img_size = 416                     # objects large in the frame: try 320 px with width 0.3, which beat
                                                # 416 px x 0.25 on raccoon in the same 15 minutes (docs/peer_bench.md)
        # ---- the recipe
        self.time_budget = 15                   # minutes of training + evaluation; the epoch count follows from it
        self.epochs = 60                        # only the first guess of the time budget's planner
        self.val_interval = 5
        # mosaics off: on raccoon, whose objects fill the frame, they cut most boxes and lost 0.069 mAP@0.5 (0.702
        # vs 0.771, the same day; docs/peer_bench.md); with small objects try mosaic_prob 0.5 and mosaic_off_epochs 10
        self.mosaic_prob = 0.0
        # the class term is the mean over the C classes, so each class logit gets cls_weight / C: 2/3 per logit was
        # the best of 0.5, 1, 2 and 4 on the built-in data's 3 classes (docs/performance.md) and beat 1/3 on six
        # look-alike playing-card classes (4 against 2 on held-out train photos, docs/peer_bench.md); for another
        # class count start near 2/3 per logit and check it with bench/box_screen.py
        self.cls_weight = 4.0
        self.neck_activation = "silu"           # beat YOLOv3's LeakyReLU on raccoon: mAP@0.5:0.95 0.352 vs 0.302
        # loss gains: evolve them for your data on a held-out part of train (docs/evolve.md, real data):
        # python main.py --config <yours> --task evolve --val_from_train 0.2 --time_budget None --epochs 15 \
        #     --evolve_generations 10 --evolve_params lr,box_weight,obj_weight,color_jitter,affine_translate,zoom
        self.cache_images = True                # a few hundred photos: decode once (turn off for many thousands)
        self.num_workers = 0                    # 2 cores: the model needs both; the cached loader keeps up
