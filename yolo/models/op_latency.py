"""The CPU latency of the head search's candidate ops, measured once and kept as a table, and the expected latency
of a cell's mixed edges: the latency term of the search loss (latency-aware NAS, as FBNet, Wu et al. CVPR 2019,
and ProxylessNAS, Cai et al. ICLR 2019, add it).

GFLOPs understate what small ops cost on a CPU: at 16 channels a 3x3 conv, its norm and its ReLU are bound by
per-call overhead and memory traffic, not arithmetic (a searched head of 1.21x the 1x1 head's GFLOPs ran 2.1x slower
per image). So each candidate is timed on its own, at the width and on the feature sizes it runs at in the head, with
the thread count of the search: a table keyed by op, width, input size and threads, kept as JSON under runs/
(op_latency.json) and reused by every later search on that machine.
"""
import json
import os
from pathlib import Path

import torch

from .flops import ms_per_image
from .search_ops import OPS, StackedOp

BATCH, ROUNDS = 8, 9  # ms per image: the median of ROUNDS forwards of BATCH images, after one warm-up


def table_key(op, channels, size, threads):
    return f"{op} c{channels} {size[0]}x{size[1]} t{threads}"


def measure_op_ms(op, channels, size, threads, batch=BATCH, rounds=ROUNDS):
    """CPU ms per image of the stand-alone op `op` at `channels` on (H, W) = `size` inputs, with `threads` threads:
    channels-last float32 as the head runs it, eval mode."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        module = StackedOp(op, channels).to(memory_format=torch.channels_last)
        x = torch.randn(batch, channels, *size).contiguous(memory_format=torch.channels_last)
        return ms_per_image([module], x, rounds)[0]
    finally:
        torch.set_num_threads(previous)


def latency_table(channels, sizes, threads, path, measure=measure_op_ms):
    """{op: ms per image summed over the feature sizes `sizes` [(H, W), ...]} for every op but none (which costs
    nothing). Entries already in the JSON file `path` are reused; missing ones are measured and added to it."""
    path = Path(path)
    saved = read_table(path)
    missing = [(op, size) for op in OPS[1:] for size in sizes if table_key(op, channels, size, threads) not in saved]
    for op, size in missing:
        saved[table_key(op, channels, size, threads)] = measure(op, channels, size, threads)
    if missing:
        write_table(saved, path)
    return {op: sum(saved[table_key(op, channels, size, threads)] for size in sizes) for op in OPS[1:]}


def read_table(path):
    """The measured entries of `path`; none when it does not exist or is not such a table (it is then rewritten)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in saved.items() if isinstance(v, (int, float))} if isinstance(saved, dict) else {}


def write_table(table, path):
    """Atomically (two searches may share the file: each writes a whole table, none a half one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    os.replace(tmp, path)


def expected_latency_ms(alphas, table):
    """Sum over the edges of a cell's alphas (E, len(OPS)) of the expected ms of the op each edge keeps:
    sum_k softmax(alpha)_k * ms_k over the ops other than `none`. `none` is left out of the softmax: a genotype
    never keeps it, so a term that rewarded it would only shrink every real op alike and steer nothing."""
    ms = torch.tensor([table[op] for op in OPS[1:]], dtype=alphas.dtype, device=alphas.device)
    return (alphas[:, 1:].softmax(-1) * ms).sum()
