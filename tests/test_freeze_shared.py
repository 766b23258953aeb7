"""Frozen shared layers (freeze_shared_epochs; freeze_backbone_epochs is the same mechanism for the first shared
layer): which layers they are, and that they keep their weights and BN statistics for N epochs and train after."""
import pytest
import torch

from yolo.config import BaseConfig, task_configs
from yolo.engine import trainer
from yolo.engine.distributed import DistInfo
from yolo.engine.setup import Training, frozen_layers
from yolo.loss import YOLOLoss
from yolo.models.detector import build_model

TWO_TASKS = [dict(name="a"), dict(name="b", class_names=["star", "cross"])]


def two_task_cfg(**fields):
    cfg = BaseConfig()
    cfg.tasks, cfg.branching, cfg.width, cfg.img_size = TWO_TASKS, [[2, [[0], [1]]]], 0.25, 64
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def test_shared_layers_are_the_backbone_then_the_neck_blocks_several_tasks_run():
    model = build_model(two_task_cfg())
    shared = model.shared_layers()
    assert shared[0] is model.backbone and shared[1:] == [model.neck.blocks[j][0] for j in range(3)]
    single = build_model(BaseConfig().finalize())  # one task: nothing in the neck serves several tasks
    assert single.shared_layers() == [single.backbone]
    cfg = two_task_cfg(freeze_backbone_epochs=2, freeze_shared_epochs=1)
    assert frozen_layers(model, 0, cfg) == shared          # both: all shared layers
    assert frozen_layers(model, 1, cfg) == [model.backbone]  # the backbone's longer freeze
    assert frozen_layers(model, 2, cfg) == []


def state(model, prefixes):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefixes)}


def changed(before, model):
    now = model.state_dict()
    return {k for k in before if not torch.equal(before[k], now[k])}


@pytest.mark.parametrize("fields, frozen_prefixes", [
    (dict(freeze_shared_epochs=1), ("backbone.", "neck.blocks.0.", "neck.blocks.1.", "neck.blocks.2.")),
    (dict(freeze_backbone_epochs=1), ("backbone.",)),
])
def test_frozen_layers_keep_weights_and_bn_statistics_then_train(fields, frozen_prefixes):
    torch.manual_seed(0)
    cfg = two_task_cfg(grad_clip=0.0, task_weights=[1.0, 1.0], **fields)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)  # decay must not move them either
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    t = Training(model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False), None,
                 [YOLOLoss(task) for task in task_configs(cfg)], DistInfo(), None, 1, (1.0, 1.0), cfg.task_names,
                 model.tasks_sharing())
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    batch = (images, torch.tensor([[0, 0, 30.0, 30.0, 20.0, 24.0], [1, 1, 40.0, 20.0, 30.0, 16.0]]), [0, 1], 2)
    loaders = [[batch, batch], [batch, batch]]
    frozen = state(model, frozen_prefixes)
    others = state(model, ("neck.", "heads."))
    others = {k: v for k, v in others.items() if not k.startswith(frozen_prefixes)}
    assert any("running_mean" in k for k in frozen) and others

    trainer.train_one_epoch(t, loaders, cfg, epoch=0)
    assert changed(frozen, model) == set(), "a frozen layer moved in the frozen epoch"
    assert changed(others, model), "the heads and branches did not train"

    trainer.train_one_epoch(t, loaders, cfg, epoch=1)
    moved = changed(frozen, model)
    assert any(k.endswith("running_mean") for k in moved) and any(k.endswith("weight") for k in moved)
    assert all(p.requires_grad for p in model.parameters())
