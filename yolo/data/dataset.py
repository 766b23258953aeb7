"""Dataset, collate and loaders: records -> augmented uint8 images and (N, 6) targets."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .formats import load_image_rgb, read_voc
from .shapes import ensure_shapes_dataset
from .transforms import build_transform


class DetectionDataset(Dataset):
    """Yields (image uint8 (3, S, S), targets (n, 5) = class, cx, cy, w, h in input pixels, record index)."""

    def __init__(self, records, transform):
        self.records, self.transform = records, transform

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        rec = self.records[index]
        image = load_image_rgb(rec.image_path)
        if image.shape[:2] != (rec.height, rec.width):
            raise ValueError(f"image {rec.image_path} is {image.shape[1]}x{image.shape[0]} but was indexed as "
                             f"{rec.width}x{rec.height}; was the file replaced after reading the annotations?")
        keep = ~rec.difficult  # VOC rule: 'difficult' objects are neither learned nor counted
        out = self.transform(image=image, bboxes=rec.boxes[keep], labels=rec.labels[keep])
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], dtype=np.float32).reshape(-1, 1)
        cxcywh = np.concatenate(((boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]), 1)
        targets = torch.from_numpy(np.concatenate((labels, cxcywh), 1))
        image = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return image, targets, index


def collate(batch):
    """Stack images; concatenate targets with their image's batch index in front -> (N, 6)."""
    images, targets, indices = zip(*batch)
    rows = [torch.cat((torch.full((len(t), 1), float(i)), t), 1) for i, t in enumerate(targets)]
    return torch.stack(images), torch.cat(rows) if rows else torch.zeros(0, 6), list(indices)


def read_records(cfg, split):
    """The records of the train or val split of the configured dataset (generating the built-in one if needed)."""
    if cfg.dataset == "shapes":
        ensure_shapes_dataset(cfg.data_root, cfg.shapes_num_train, cfg.shapes_num_val, cfg.seed,
                              tuple(cfg.class_names))
    split_name = cfg.train_split if split == "train" else cfg.val_split
    split_file = cfg.train_split_file if split == "train" else cfg.val_split_file
    return read_voc(cfg.data_root, split_name, list(cfg.class_names), ann_dir=cfg.ann_dir, img_dir=cfg.img_dir,
                    split_file=split_file)


def build_loader(cfg, records, train, sampler=None):
    dataset = DetectionDataset(records, build_transform(cfg, train))
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=cfg.num_workers, collate_fn=collate, drop_last=train and len(records) > cfg.batch_size,
                      pin_memory=torch.cuda.is_available(), persistent_workers=cfg.num_workers > 0)
