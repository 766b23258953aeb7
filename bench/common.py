"""What several bench scripts share (each puts the repository root on sys.path before importing this)."""
import os
from pathlib import Path

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
