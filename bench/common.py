"""What several bench scripts share (each puts the repository root on sys.path before importing this)."""
import os
from pathlib import Path
from xml.etree import ElementTree

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import torch  # noqa: E402

from yolo.data.dataset import build_loader, read_records  # noqa: E402
from yolo.loss import YOLOLoss  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402


def emit(text, out=None):
    """Print a result table, and also write it to `out` (a path, or None) with its folders."""
    print(text)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def one_class_cards(cards_root, out):
    """The card photos of configs/cards.py (train/ and test/ folders of VOC XML) with every box named "card": a copy of
    the XML files under `out`, the photos linked beside them, the data folder left as it is. Six look-alike classes
    in a few hundred photos take longer to learn than a short bench run lasts; finding the cards does not."""
    for folder in ("train", "test"):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for xml in sorted((cards_root / folder).glob("*.xml")):
            tree = ElementTree.parse(xml)
            for name in tree.getroot().iter("name"):
                name.text = "card"
            tree.write(out / folder / xml.name)
            for image in xml.parent.glob(xml.stem + ".*"):
                link = out / folder / image.name
                if image.suffix != ".xml" and not link.exists():
                    link.symlink_to(image.resolve())
    return out


def endless(loader):
    """Batches without end, a new (reshuffled) pass when one ends, as an epoch loop draws them."""
    while True:
        yield from loader


def training_step_parts(cfg):
    """What the pipeline benches time: (model in train mode, loss function, endless train batches, update), where
    update(loss) is the trainer's backward + gradient clipping + optimizer step."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def update(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()

    batches = endless(build_loader(cfg, read_records(cfg, "train"), train=True))
    return model, YOLOLoss(cfg), batches, update
