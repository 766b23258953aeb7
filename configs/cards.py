"""Playing cards (363 photos, 6 classes: nine, ten, jack, queen, king, ace; Pascal VOC XML beside each image), if you
have them: configs/own_data.py with its data lines filled in, as a user would -- a real dataset of another kind
than raccoon (several look-alike classes, several objects per photo) for bench/peer.py, bench/box_screen.py and
bench/rsa_trees.py --data real.

Source: github.com/EdjeElectronics/TensorFlow-Object-Detection-API-Tutorial-Train-Multiple-Objects-Windows-10,
folders images/train (296 photos, 527 boxes) and images/test (67 photos, 143 boxes), Apache License 2.0. Put the two
folders under data/cards/ (or pass --data_root), e.g. from a clone of that repository:

    mkdir -p data/cards && cp -r <clone>/images/train <clone>/images/test data/cards/
    python main.py --config configs/cards.py --task check
    python main.py --config configs/cards.py --task train          # 15 minutes (time_budget)

The test folder is the val split: with no third split, judge a run by last.pt (bench/peer.py does) and tune with
--val_from_train 0.2, never on the test photos.
"""
from configs.own_data import OwnDataConfig


class CardsConfig(OwnDataConfig):
    def __init__(self):
        super().__init__()
        self.run_name = "cards"
        # ---- the data lines of configs/own_data.py: labelImg's layout, *.jpg and *.xml side by side per split folder
        self.dataset = "voc"
        self.data_root = "data/cards"
        self.ann_dir, self.img_dir = "", ""
        self.train_dirs, self.val_dirs = ["train"], ["test"]
        self.class_names = ["nine", "ten", "jack", "queen", "king", "ace"]
