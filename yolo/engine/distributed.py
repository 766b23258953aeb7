"""Several processes, one model: DistributedDataParallel (DDP) under torchrun, DataParallel otherwise.

`torchrun --nproc_per_node N main.py ...` starts N copies of main.py and tells each who it is through the
environment (RANK = its index among all processes, LOCAL_RANK = its index on this machine, WORLD_SIZE = how many in
all, MASTER_ADDR/PORT = where they meet). Every process builds the same model, trains on its own shard of the data
(DistributedSampler) and DDP averages the gradients during backward, so the weights stay identical everywhere.
Rank 0 alone writes files and logs. Without those variables this module is a no-op: world size 1, rank 0.
"""
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from loguru import logger
from torch import nn
from torch.utils.data import DistributedSampler, Sampler

from ..data.sampling import WeightedEpochSampler


@dataclass
class DistInfo:
    rank: int = 0                 # index of this process among all processes
    local_rank: int = 0           # index on this machine = the GPU it uses
    world_size: int = 1           # number of processes
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False      # this module created the process group (and destroys it at the end)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def is_distributed(self):
        return self.world_size > 1


def select_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"config field 'device' = {name!r} but CUDA is not available; use 'cpu' or 'auto'")
    device = torch.device(name)  # the form (auto | cpu | cuda | cuda:N | mps) is checked with the config
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"config field 'device' = {name!r} but this machine has {torch.cuda.device_count()} GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"config field 'device' = {name!r} but Apple's MPS is not available; use 'cpu' or 'auto'")
    return device


def init_distributed(device_name="auto", backend="auto"):
    """Join the process group when launched by torchrun / torch.distributed.launch; else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return DistInfo(device=select_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)  # one GPU per process: LOCAL_RANK picks it, whatever `device` says
    owns = not dist.is_initialized()
    if owns:
        backend = ("nccl" if use_cuda else "gloo") if backend == "auto" else backend
        # env:// reads MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE set by the launcher
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return DistInfo(rank, local_rank, world_size, device, owns)


def cleanup_distributed(info):
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model, cfg, info):
    """DDP under a launcher; DataParallel when one process sees several GPUs (batch_size is then the total)."""
    if info.is_distributed:
        if cfg.sync_bn and info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif cfg.sync_bn:
            logger.warning("sync_bn is ignored: torch's SyncBatchNorm runs on GPUs only")
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                   find_unused_parameters=parameters_may_go_unused(cfg))
    if info.device.type == "cuda" and torch.cuda.device_count() > 1 and cfg.device in ("auto", "cuda"):
        logger.info(f"{torch.cuda.device_count()} GPUs visible: nn.DataParallel splits each batch between them "
                    f"(torchrun + DDP is faster)")
        return nn.DataParallel(model)
    return model


def parameters_may_go_unused(cfg):
    """Whether some steps leave parameters without a gradient, which DDP must be told to expect (it costs a graph
    walk per step, so only then): frozen layers, or one sampled task per step (the other tasks' heads and branches
    idle)."""
    sampled = bool(cfg.tasks) and len(cfg.tasks) > 1 and cfg.task_sampling != "all"
    return cfg.freeze_backbone_epochs > 0 or cfg.freeze_shared_epochs > 0 or sampled


def unwrap(model):
    """The bare model inside DataParallel / DistributedDataParallel wrappers."""
    return model.module if hasattr(model, "module") else model


def no_sync_unless(model, sync):
    """DDP averages gradients in every backward; while accumulating, skip that until the batch before an update."""
    if sync or not isinstance(model, nn.parallel.DistributedDataParallel):
        return nullcontext()
    return model.no_sync()


# ------------------------------------------------------------------------------------------------- data
def train_sampler(dataset, info, seed, weights=None):
    """Each process gets a disjoint, reshuffled-every-epoch part of the data (call set_epoch); None = plain shuffle.
    weights (class_balanced): draws by weight with replacement instead, the same draw cut into one part per process."""
    if weights is not None:
        return WeightedEpochSampler(weights, info.world_size, info.rank, seed)
    if not info.is_distributed:
        return None
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                              drop_last=True)


class ShardSampler(Sampler):
    """Evaluation: process r takes images r, r + world, r + 2 world ... (every image exactly once, no padding)."""

    def __init__(self, dataset, info):
        self.indices = list(range(info.rank, len(dataset), info.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def eval_sampler(dataset, info):
    return ShardSampler(dataset, info) if info.is_distributed else None


# ------------------------------------------------------------------------------------------------- collectives
def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process():
    return not is_distributed() or dist.get_rank() == 0


def barrier(info):
    if not info.is_distributed:
        return
    if info.device.type == "cuda":
        dist.barrier(device_ids=[info.device.index])
    else:
        dist.barrier()


@contextmanager
def main_process_first(info):
    """Rank 0 runs the block first (e.g. generating the built-in dataset), the others then run it on its result."""
    if not info.is_main:
        barrier(info)
    yield
    if info.is_main:
        barrier(info)


def broadcast_object(obj, info):
    """Rank 0's `obj` on every process."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ranks_true(flag, info):
    """True only when `flag` is True on every process (so all stop together instead of waiting on each other)."""
    if not info.is_distributed:
        return flag
    t = torch.tensor([int(flag)], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_over_ranks(values, info):
    """The element-wise sum of a list of numbers over all processes (the list itself without DDP)."""
    if not info.is_distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def average_over_ranks(tensor, info):
    """The element-wise mean of a tensor over all processes (the loss's counts under DDP)."""
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / info.world_size


def sync_buffers_from_main(module, info):
    """Copy rank 0's buffers (BN running statistics) to every process. DDP does this at the start of each forward,
    but after the last batch each rank holds its own statistics; syncing keeps checkpoints and evaluation equal."""
    if info.is_distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def gather_detections(detections):
    """Merge the {image index: detections} dicts of all processes; rank 0 gets the union, the others None."""
    if not is_distributed():
        return detections
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, detections)
    if dist.get_rank() != 0:
        return None
    merged = {}
    for part in parts:
        merged.update(part)
    return merged
