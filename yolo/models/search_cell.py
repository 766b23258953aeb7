"""Tower heads: a searched cell (or a hand-made 3x3 tower) in front of the 1x1 prediction convs, and genotypes.

Cell (DARTS-style, Liu et al. 2019): two inputs (states 0, 1), three nodes (states 2, 3, 4); node i sums one edge
from every earlier state, so 2 + 3 + 4 = 9 edges. Each edge runs its op at a narrow width (`narrow` channels,
through 1x1 convs from and back to the cell width `channels`), which keeps 9 mixed edges affordable. The cell's
output is the concat of the three nodes reduced by a 1x1 conv.

    TowerHead, for each scale s (the towers are shared by the scales):
        p   = proj_s(P_s)                    1x1 conv of the neck output to `channels` (the scales' widths differ)
        box = box_tower(p, p)                objectness + box feature
        cls = cls_tower(p, box)              class feature, also seeing the box feature
        out = YOLOHead conv_s([P_s, box, cls])  the same 1x1 prediction conv and output layout (B, A, H, W, 5 + C)
                                             as the plain head, so decoding, loss and post-processing are unchanged
The prediction conv also reads P_s itself, and a trained (non-search) tower's last norm starts at zero scale
(zero-init residual, Goyal et al. 2017): a tower head starts as the 1x1 head and its towers add what they learn.
Without the shortcut the towers were a 2 x `channels` bottleneck that short CPU budgets could not train through
(bench/head_search.py: mAP@0.5 0.13 against the 1x1 head's 0.24).

Genotype (what a search keeps): per edge the strongest op other than `none`, then per node the two incoming edges
whose kept op has the largest softmax weight. As text, one line per tower:
    box: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1_dil(2); 4 = sep_x2(1) + std_x1(3)
`n = op(j)` means node n adds op applied to state j.
"""
import os
import re
from pathlib import Path

import torch
from torch import nn

from ..config_checks import HEADS
from .head import YOLOHead
from .search_ops import OPS, MixedEdge, fixed_op, norm, parse_op, unit

NUM_NODES = 2 + 3  # states: 2 inputs + 3 nodes
# the layout of a genotype text (module docstring), stated by write_genotype's last line "# yolo genotype format N";
# a text without that line is format 1. Bump it when the text changes meaning (an op renamed, other nodes): older
# code then refuses the file in one line instead of building another head from it
GENOTYPE_FORMAT = 1
FORMAT_RE = re.compile(r"^#\s*yolo genotype format\s+(\S+)\s*$")
EDGES = tuple((node, src) for node in range(2, NUM_NODES) for src in range(node))  # (node, source state), 9
TOWERS = ("box", "cls")


def conv_norm(c_in, c_out, relu=True):
    layers = [nn.Conv2d(c_in, c_out, 1, bias=False), norm(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class NarrowEdge(nn.Module):
    """1x1 to `narrow` channels -> op -> 1x1 back to `channels` (+ norm). Extra forward args go to the op."""

    def __init__(self, op, channels, narrow):
        super().__init__()
        self.inp = nn.Conv2d(channels, narrow, 1, bias=False)
        self.op = op
        self.out = conv_norm(narrow, channels, relu=False)

    def forward(self, x, *op_args):
        return self.out(self.op(self.inp(x), *op_args))


class SearchCell(nn.Module):
    """The cell with a MixedEdge on all 9 edges; alphas (9, len(OPS)) are its architecture weights."""

    def __init__(self, channels, narrow):
        super().__init__()
        self.alphas = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))  # near-uniform start, as DARTS
        self.edges = nn.ModuleList(NarrowEdge(MixedEdge(narrow), channels, narrow) for _ in EDGES)
        self.out = conv_norm(3 * channels, channels)

    def forward(self, s0, s1):
        weights = self.alphas.softmax(-1)
        states = [s0, s1]
        for node in range(2, NUM_NODES):
            states.append(sum(edge(states[src], weights[k])
                              for k, (edge, (n, src)) in enumerate(zip(self.edges, EDGES)) if n == node))
        return self.out(torch.cat(states[2:], 1))


class FixedCell(nn.Module):
    """The cell of a genotype: node n sums its two kept edges, each its fixed op (fresh weights)."""

    def __init__(self, channels, narrow, nodes):
        super().__init__()
        self.nodes = [[(op, src) for op, src in node] for node in nodes]
        self.edges = nn.ModuleList(NarrowEdge(fixed_op(op, narrow), channels, narrow)
                                   for node in self.nodes for op, _ in node)
        self.out = conv_norm(3 * channels, channels)

    def forward(self, s0, s1):
        states, edges = [s0, s1], iter(self.edges)
        for node in self.nodes:
            states.append(sum(next(edges)(states[src]) for _, src in node))
        return self.out(torch.cat(states[2:], 1))


class Tower3x3(nn.Module):
    """The hand-made baseline: `depth` std 3x3 units on the first input (the second is not used)."""

    def __init__(self, channels, depth=2):
        super().__init__()
        self.units = nn.Sequential(*(unit("std", channels) for _ in range(depth)))

    def forward(self, s0, s1):
        return self.units(s0)


class TowerHead(nn.Module):
    """Per-scale projection -> box and class towers shared by the scales -> YOLOHead (module docstring)."""

    def __init__(self, in_channels, num_anchors, num_classes, img_size, strides, channels, box_tower, cls_tower,
                 zero_init=True):
        super().__init__()
        self.proj = nn.ModuleList(conv_norm(c, channels) for c in in_channels)
        self.box_tower, self.cls_tower = box_tower, cls_tower
        self.predict = YOLOHead([c + 2 * channels for c in in_channels], num_anchors, num_classes, img_size, strides)
        if zero_init:  # the towers start silent: the head starts as the 1x1 head on P_s
            for tower in (box_tower, cls_tower):
                last_norm = [m for m in tower.modules() if isinstance(m, nn.GroupNorm)][-1]
                nn.init.zeros_(last_norm.weight)
        self.num_anchors, self.num_classes = num_anchors, num_classes

    def forward(self, features):
        tower_features = []
        for proj, x in zip(self.proj, features):
            p = proj(x)
            box = self.box_tower(p, p)
            tower_features.append(torch.cat([x, box, self.cls_tower(p, box)], 1))
        return self.predict(tower_features)

    def architecture_parameters(self):
        """The alphas of search cells (none for other towers)."""
        return [p for name, p in self.named_parameters() if name.endswith("alphas")]


def build_head(kind, in_channels, num_anchors, num_classes, img_size=416, strides=(8, 16, 32), channels=32,
               narrow=16, genotype=None, genotype_source="genotype"):
    """kind: one of config HEADS -- conv1x1 (YOLOHead alone) | tower3x3 | searched (needs the genotype text) -- or
    search (mixed edges: the model --task search_head trains). genotype_source: where the text came from, for errors."""
    if kind == "conv1x1":
        return YOLOHead(in_channels, num_anchors, num_classes, img_size, strides)
    if kind == "tower3x3":
        towers = Tower3x3(channels), Tower3x3(channels)
    elif kind == "search":
        towers = SearchCell(channels, narrow), SearchCell(channels, narrow)
    elif kind == "searched":
        if not genotype:
            raise ValueError("head 'searched' needs a genotype: set config field 'genotype_file' to the genotype.txt "
                             "of a search (python main.py --task search_head)")
        nodes = parse_genotype(genotype, genotype_source)
        towers = FixedCell(channels, narrow, nodes["box"]), FixedCell(channels, narrow, nodes["cls"])
    else:
        raise ValueError(f"unknown head {kind!r}; choose one of {HEADS + ('search',)}")
    # the search's towers are not silenced: the alphas learn from what the mixed edges contribute, from step one
    return TowerHead(in_channels, num_anchors, num_classes, img_size, strides, channels, *towers,
                     zero_init=kind != "search")


# ------------------------------------------------------------------------------------------------- genotypes
def derive_nodes(alphas):
    """alphas: (9, len(OPS)) of one cell -> [[(op, source), (op, source)] for each node], sources ascending."""
    weights = alphas.detach().float().softmax(-1)
    nodes = []
    for node in range(2, NUM_NODES):
        kept = []
        for k, (n, src) in enumerate(EDGES):
            if n == node:
                best = int(weights[k, 1:].argmax()) + 1  # never `none`: it would only mean "drop the edge"
                kept.append((float(weights[k, best]), OPS[best], src))
        top2 = sorted(kept, key=lambda c: -c[0])[:2]
        nodes.append(sorted(((op, src) for _, op, src in top2), key=lambda e: e[1]))
    return nodes


def genotype_of(head):
    """{tower: nodes} of a search head's current alphas."""
    return {"box": derive_nodes(head.box_tower.alphas), "cls": derive_nodes(head.cls_tower.alphas)}


def format_genotype(genotype):
    """One line per tower (module docstring)."""
    return "\n".join(f"{tower}: " + "; ".join(f"{n} = " + " + ".join(f"{op}({src})" for op, src in node)
                                              for n, node in enumerate(genotype[tower], start=2))
                     for tower in TOWERS) + "\n"


NODE_RE = re.compile(r"^\s*(\d+)\s*=\s*(.+?)\s*$")
EDGE_RE = re.compile(r"^\s*(\w+)\((\d+)\)\s*$")


def parse_genotype(text, source="genotype"):
    """The text of format_genotype (lines starting with # are ignored) -> {tower: nodes}. Errors name `source`."""
    genotype = {}
    for line in text.splitlines():
        version = FORMAT_RE.match(line.strip())
        if version and version.group(1) != str(GENOTYPE_FORMAT):
            raise ValueError(f"{source}: genotype format {version.group(1)}, but this code reads format "
                             f"{GENOTYPE_FORMAT}: another (newer) version of this project wrote it; update this "
                             f"project, or search again with this one (python main.py --task search_head)")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tower, _, rest = line.partition(":")
        tower = tower.strip()
        if tower not in TOWERS or tower in genotype:
            raise ValueError(f"{source}: line {line!r} must start with one of {TOWERS}: (each once)")
        genotype[tower] = [parse_node(part, n, source) for n, part in enumerate(rest.split(";"), start=2)]
        if len(genotype[tower]) != NUM_NODES - 2:
            raise ValueError(f"{source}: tower {tower} needs {NUM_NODES - 2} nodes separated by ';', got {line!r}")
    missing = [t for t in TOWERS if t not in genotype]
    if missing:
        raise ValueError(f"{source}: no line for tower(s) {missing}")
    return genotype


def parse_node(text, expected, source):
    match = NODE_RE.match(text)
    if not match or int(match.group(1)) != expected:
        raise ValueError(f"{source}: expected node '{expected} = op(j) + op(k)', got {text.strip()!r}")
    node = []
    for part in match.group(2).split("+"):
        edge = EDGE_RE.match(part)
        if not edge:
            raise ValueError(f"{source}: node {expected}: {part.strip()!r} is not op(state)")
        op, src = edge.group(1), int(edge.group(2))
        try:
            parse_op(op)
        except ValueError as e:
            raise ValueError(f"{source}: node {expected}: {e}") from None
        if src >= expected:
            raise ValueError(f"{source}: node {expected} may only read states 0..{expected - 1}, got {src}")
        node.append((op, src))
    if len(node) != 2 or node[0][1] == node[1][1]:
        raise ValueError(f"{source}: node {expected} needs two edges from different states, got {text.strip()!r}")
    return node


def write_genotype(genotype, path, header=""):
    """Write atomically (the search rewrites it while it runs; a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(f"# {line}\n" for line in header.splitlines()) + format_genotype(genotype)
                   + f"# yolo genotype format {GENOTYPE_FORMAT}\n")
    os.replace(tmp, path)


def read_genotype_text(path, field="genotype_file"):
    """The text of a genotype file, checked by parsing it. Errors name the file and the config field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config field '{field}': {path} does not exist (python main.py --task search_head "
                                f"writes runs/<run_name>_search/genotype.txt)")
    text = path.read_text()
    parse_genotype(text, source=str(path))
    return text
