"""The searched head's cells (the towers of yolo/models/heads.py TowerHead) and their genotypes.

Cell (DARTS-style, Liu et al. 2019): two inputs (states 0, 1), three nodes (states 2, 3, 4); node i sums one edge
from every earlier state, so 2 + 3 + 4 = 9 edges. Each edge runs its op at a narrow width (`narrow` channels,
through 1x1 convs from and back to the cell width `channels`), which keeps 9 mixed edges affordable. The cell's
output is the concat of the three nodes reduced by a 1x1 conv. The box tower's states 0 and 1 are both the scale's
feature; the class tower's state 0 is the box tower's feature and state 1 the scale's (the reference's order).

Genotype (what a search keeps): per edge the strongest op other than `none`, then per node the two incoming edges
whose kept op has the largest softmax weight. As text, one line per tower:
    box: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1_dil(2); 4 = sep_x2(1) + std_x1(3)
`n = op(j)` means node n adds op applied to state j. The reference's form (Zhong et al., ECCV 2020, whose papers
publish their genotypes so) is read and written too: one line per tower, box then class, each node a list of
(op, state) with the reference's op names (search_ops.REFERENCE_OPS):
    Genotype(normal=[[('std_conv_3x3_x2', 0), ('sinSep_conv_3x3', 1)], [...], [...]], normal_concat=range(2, 5))
"""
import ast
import os
import re
from pathlib import Path

import torch
from torch import nn

from .search_ops import (FAMILIES, OPS, REFERENCE_OPS, MixedEdge, RepShare, fixed_op, fused_forward, norm, parse_op,
                         reference_name)

NUM_NODES = 2 + 3  # states: 2 inputs + 3 nodes
# the meaning of a genotype file (module docstring), stated by write_genotype's last line "# yolo genotype format N";
# a text without that line is format 1. Bump it when a genotype changes meaning (an op renamed or rebuilt, other
# nodes or inputs): every other format is then refused in one line instead of building another head from it.
# Format 2: the class tower reads [box feature, scale feature] (format 1: the other way round) and x2 ops end in
# their own decouple 1x1. The reference's form needs no line: its meaning is the reference's, whatever the version
GENOTYPE_FORMAT = 2
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
        """Node n = sum over its edges (source j) of edge(state j, softmax(alpha) of the edge). The edges that read
        one state run as one fused computation (fused_edges): all those of both inputs when they are one tensor (the
        box tower), then those of node 2, then of node 3."""
        weights = self.alphas.softmax(-1)
        states, outputs = [s0, s1], {}

        def run_edges_from(sources):
            ks = [k for k, (_, src) in enumerate(EDGES) if src in sources]
            outputs.update(zip(ks, fused_edges([self.edges[k] for k in ks], states[sources[0]], weights[ks])))

        for sources in ([0, 1],) if s0 is s1 else ([0], [1]):
            run_edges_from(sources)
        for node in range(2, NUM_NODES):
            states.append(sum(outputs[k] for k, (n, _) in enumerate(EDGES) if n == node))
            if node < NUM_NODES - 1:
                run_edges_from([node])
        return self.out(torch.cat(states[2:], 1))


def edge_by_edge(cell, s0, s1):
    """What SearchCell computes, by its definition: every edge called on its own (the reference the fused forward is
    tested against, and bench/search_step.py times)."""
    weights = cell.alphas.softmax(-1)
    states = [s0, s1]
    for node in range(2, NUM_NODES):
        states.append(sum(cell.edges[k](states[src], weights[k]) for k, (n, src) in enumerate(EDGES) if n == node))
    return cell.out(torch.cat(states[2:], 1))


def fused_edges(edges, x, weights):
    """k NarrowEdge(MixedEdge)s that read the same x (B, C, H, W), with weights (k, len(OPS)) (softmax(alpha) of
    each), computed as one k times wider edge (search_ops.fused_forward): returns the k outputs, each equal to
    edges[i](x, weights[i]) (tested). A search step then makes about 2.5 times fewer conv calls."""
    k = len(edges)
    h = fused_forward([e.inp for e in edges], x, shared_input=True)  # (B, k narrow, H, W)
    candidates = [y for f in range(len(FAMILIES))  # OPS[1:] order, each (B, k narrow, H, W)
                  for y in RepShare.candidates(h, lambda name, y, f=f: fused_forward(
                      [e.op.families[f].get_submodule(name) for e in edges], y))]
    # `none` adds nothing; edge i's channels get sum_o weights[i, o] * candidate_o. Kept 4-d: a 5-d view of a
    # channels-last batch of one gives the grouped conv below odd strides, and PyTorch (2.14, CPU) its weight
    # gradient wrong (tested)
    per_channel = weights[:, 1:].repeat_interleave(h.shape[1] // k, 0)  # (k narrow, len(OPS) - 1)
    mixed = sum(per_channel[:, o].view(1, -1, 1, 1) * y for o, y in enumerate(candidates))
    return fused_forward([e.out for e in edges], mixed).chunk(k, 1)


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


def format_genotype(genotype, form="text"):
    """One line per tower (module docstring): this project's text, or with form="reference" the reference's
    Genotype(...) lines, box then class; then the format line, so the text means the same wherever it goes."""
    if form == "reference":
        lines = [f"Genotype(normal={[[(reference_name(op), src) for op, src in node] for node in genotype[t]]!r}, "
                 f"normal_concat=range(2, {NUM_NODES}))" for t in TOWERS]
    else:
        lines = [f"{tower}: " + "; ".join(f"{n} = " + " + ".join(f"{op}({src})" for op, src in node)
                                          for n, node in enumerate(genotype[tower], start=2)) for tower in TOWERS]
    return "\n".join(lines + [f"# yolo genotype format {GENOTYPE_FORMAT}"]) + "\n"


# what each older format meant, for the line that refuses it
OLDER_FORMATS = {1: "the class tower read [scale feature, box feature] and x2 ops had no decouple 1x1"}
SEARCH_AGAIN = "search again (python main.py --task search_head)"


def genotype_format(text):
    """The format a genotype text states in its '# yolo genotype format N' line (an int when it is a number); without
    one, 1 for this project's text and GENOTYPE_FORMAT for the reference's form, whose meaning is the reference's."""
    stated = [m.group(1) for m in map(FORMAT_RE.match, (line.strip() for line in text.splitlines())) if m]
    if stated:
        return int(stated[-1]) if stated[-1].isdigit() else stated[-1]
    return GENOTYPE_FORMAT if any(line.strip().startswith("Genotype(") for line in text.splitlines()) else 1


def format_problem(version):
    """Why a genotype of format `version` is not built here, as a clause ("format 1, older than ..."); None if it is."""
    if version == GENOTYPE_FORMAT:
        return None
    if version in OLDER_FORMATS:
        return f"format {version}, older than the format {GENOTYPE_FORMAT} this code builds ({OLDER_FORMATS[version]})"
    return (f"format {version}, but this code reads format {GENOTYPE_FORMAT}: another (newer) version of this project "
            f"wrote it")


def check_format(text, source, stated_only):
    """Refuse a text of another format in one line. stated_only: only a format the text states in its format line
    (checked before the lines are parsed, so a newer file is refused as such, not for lines this code cannot read)."""
    stated = any(FORMAT_RE.match(line.strip()) for line in text.splitlines())
    version = genotype_format(text)
    problem = format_problem(version)
    if problem is None or (stated_only and not stated):
        return
    if version in OLDER_FORMATS:
        unstated = "" if stated else " (a text without a '# yolo genotype format N' line is format 1)"
        raise ValueError(f"{source}: genotype {problem}{unstated}; {SEARCH_AGAIN}, or for a genotype written by hand: "
                         f"swap states 0 and 1 in its cls line and add the line '# yolo genotype format "
                         f"{GENOTYPE_FORMAT}'")
    raise ValueError(f"{source}: genotype {problem}; update this project, or {SEARCH_AGAIN} with this one")


NODE_RE = re.compile(r"^\s*(\d+)\s*=\s*(.+?)\s*$")
EDGE_RE = re.compile(r"^\s*(\w+)\((\d+)\)\s*$")
REFERENCE_RE = re.compile(r"^Genotype\(\s*normal\s*=\s*(\[.*\])\s*,\s*normal_concat\s*=\s*(.+?)\s*\)$")


def parse_genotype(text, source="genotype"):
    """A genotype text in either form (lines starting with # are ignored) -> {tower: nodes}. Errors name `source`."""
    check_format(text, source, stated_only=True)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reference = [line for line in lines if line.startswith("Genotype(")]
    if reference and len(reference) != len(lines):
        raise ValueError(f"{source}: holds both forms (Genotype(...) lines and box:/cls: lines); keep one")
    genotype = parse_reference(reference, source) if reference else parse_text(lines, source)
    check_format(text, source, stated_only=False)  # a text without a format line: format 1, refused
    return genotype


def parse_text(lines, source):
    """This project's lines `box: 2 = op(j) + op(k); 3 = ...` -> {tower: nodes}."""
    genotype = {}
    for line in lines:
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
        node.append((op, src))
    return check_node(node, expected, source, text.strip())


def check_node(node, expected, source, text):
    """A node's [(op, state), (op, state)]: two edges from different earlier states."""
    for _, src in node:
        if src >= expected:
            raise ValueError(f"{source}: node {expected} may only read states 0..{expected - 1}, got {src}")
    if len(node) != 2 or node[0][1] == node[1][1]:
        raise ValueError(f"{source}: node {expected} needs two edges from different states, got {text!r}")
    return node


def parse_reference(lines, source):
    """The reference's form: Genotype(normal=[[(op, state), (op, state)], ...], normal_concat=range(2, 5)) for the box
    tower, then for the class tower. Read with ast.literal_eval (plain literals only: never code)."""
    if len(lines) != len(TOWERS):
        raise ValueError(f"{source}: the reference's form needs {len(TOWERS)} lines Genotype(...), box tower then "
                         f"class tower; got {len(lines)}")
    genotype = {}
    for tower, line in zip(TOWERS, lines):
        where = f"{source}: {tower} tower"
        match = REFERENCE_RE.match(line)
        if not match:
            raise ValueError(f"{where}: {line[:60]!r}... is not Genotype(normal=[...], normal_concat=range(2, 5))")
        if match.group(2).replace(" ", "") not in (f"range(2,{NUM_NODES})", "[2,3,4]"):
            raise ValueError(f"{where}: needs normal_concat=range(2, {NUM_NODES}) (its {NUM_NODES - 2} nodes "
                             f"concatenated), got {match.group(2)!r}")
        try:
            nodes = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            nodes = None
        if not is_reference_nodes(nodes):
            raise ValueError(f"{where}: normal=... is not a list of {NUM_NODES - 2} nodes [(op, state), (op, state)]")
        genotype[tower] = []
        for n, node in enumerate(nodes, start=2):
            unknown = [op for op, _ in node if op not in REFERENCE_OPS]
            if unknown:
                raise ValueError(f"{where}, node {n}: unknown op {unknown[0]!r} (the reference's ops this search "
                                 f"space has: {', '.join(REFERENCE_OPS)})")
            genotype[tower].append(check_node([(REFERENCE_OPS[op], src) for op, src in node], n, where, str(node)))
    return genotype


def is_reference_nodes(nodes):
    def edge(e):
        return isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str) and type(e[1]) is int and e[1] >= 0
    return (isinstance(nodes, list) and len(nodes) == NUM_NODES - 2
            and all(isinstance(node, (list, tuple)) and all(edge(e) for e in node) for node in nodes))


def write_genotype(genotype, path, header="", form="text"):
    """Write atomically (the search rewrites it while it runs; a reader never sees half a file), in either form."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(f"# {line}\n" for line in header.splitlines()) + format_genotype(genotype, form))
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
