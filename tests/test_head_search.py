"""Head architecture search: shared candidate ops, mixed edges, genotypes, the searched head and the search task."""
import pytest
import torch
from torch import nn

from yolo.models.search_ops import OPS, MixedEdge, RepShare, StackedOp

CHANNELS = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Hundreds of tiny convs: one thread is several times faster than two fighting over a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_input(seed=0):
    return torch.randn(2, CHANNELS, 9, 11, generator=torch.Generator().manual_seed(seed))


def randomize(module, seed=1):
    """Random weights everywhere, norms included (their defaults 1 / 0 would hide a mixed-up affine)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


# ------------------------------------------------------------------------------------------------- ops
@pytest.mark.parametrize("family", ["std", "sep"])
def test_each_repshare_output_equals_the_stand_alone_stacked_op(family):
    chain = randomize(RepShare(family, CHANNELS))
    x = random_input()
    outputs = chain(x)
    names = [name for name in OPS if name.startswith(family)]
    assert len(outputs) == len(names) == 5
    for name, shared in zip(names, outputs):
        op = StackedOp(name, CHANNELS)
        op.load_state_dict(chain.stand_alone_state(name))  # strict: every tensor of the op comes from the chain
        torch.testing.assert_close(shared, op(x), msg=f"{name}")
    # and the five are different functions (a candidate silently aliased to another would pass the loop above)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.allclose(outputs[i], outputs[j]), (names[i], names[j])


def test_stand_alone_op_depths_by_hand():
    """Independent of RepShare: the number of 3x3 convs and where the dilation sits."""
    def dilations(name):
        return [m.dilation[0] for m in StackedOp(name, CHANNELS).modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dilations("std_x3") == [1, 1, 1]
    assert dilations("sep_x2_dil") == [1, 1, 2]
    assert dilations("std_x1_dil") == [1, 2]
    depthwise = [m for m in StackedOp("sep_x1", CHANNELS).modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 1 and depthwise[0].groups == CHANNELS


@pytest.mark.parametrize("name", ["std_x2", "sep_x1_dil", "std_x1"])
def test_a_one_hot_mixed_edge_equals_that_op(name):
    edge = randomize(MixedEdge(CHANNELS))
    x = random_input()
    weights = torch.zeros(len(OPS))
    weights[OPS.index(name)] = 1.0
    family = edge.families[["std", "sep"].index(name.split("_")[0])]
    op = StackedOp(name, CHANNELS)
    op.load_state_dict(family.stand_alone_state(name))
    torch.testing.assert_close(edge(x, weights), op(x))


def test_none_gives_zeros_and_mixing_is_linear_in_the_weights():
    edge = randomize(MixedEdge(CHANNELS))
    x = random_input()
    none = torch.zeros(len(OPS))
    none[0] = 1.0
    assert torch.equal(edge(x, none), torch.zeros_like(x))
    a, b = torch.rand(len(OPS)), torch.rand(len(OPS))
    torch.testing.assert_close(edge(x, a + b), edge(x, a) + edge(x, b), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------- genotypes
from yolo.models.search_cell import (EDGES, FixedCell, SearchCell, derive_nodes, format_genotype,  # noqa: E402
                                     parse_genotype, read_genotype_text, write_genotype)


def edge_index(node, src):
    return EDGES.index((node, src))


def hand_set_alphas():
    """Alphas whose genotype is known by hand. Each edge gets one favoured op; the favour sets the edge's rank."""
    alphas = torch.zeros(len(EDGES), len(OPS))
    favour = {  # (node, src): (op, logit)
        (2, 0): ("std_x2", 2.0), (2, 1): ("sep_x1", 1.0),
        (3, 0): ("std_x3", 0.5), (3, 1): ("sep_x2_dil", 3.0), (3, 2): ("std_x1_dil", 2.5),
        (4, 0): ("sep_x3", 1.5), (4, 1): ("std_x1", 0.2), (4, 2): ("sep_x2", 0.1), (4, 3): ("std_x2_dil", 1.2),
    }
    for (node, src), (op, logit) in favour.items():
        alphas[edge_index(node, src), OPS.index(op)] = logit
    return alphas


def test_genotype_keeps_the_strongest_op_and_the_two_strongest_edges_per_node():
    nodes = derive_nodes(hand_set_alphas())
    assert nodes == [[("std_x2", 0), ("sep_x1", 1)],
                     [("sep_x2_dil", 1), ("std_x1_dil", 2)],
                     [("sep_x3", 0), ("std_x2_dil", 3)]]


def test_genotype_skips_none_even_when_it_is_the_strongest():
    alphas = hand_set_alphas()
    # edge (3, 0): `none` dominates, sep_x1 is the runner-up and, with none's mass gone, it is still the op kept;
    # ranked by sep_x1's own weight the edge is weak, so node 3 keeps its two other edges
    alphas[edge_index(3, 0)] = 0.0
    alphas[edge_index(3, 0), OPS.index("none")] = 6.0
    alphas[edge_index(3, 0), OPS.index("sep_x1")] = 0.3
    assert derive_nodes(alphas)[1] == [("sep_x2_dil", 1), ("std_x1_dil", 2)]
    # node 2 has only two edges: a none-dominated edge is still kept, with its strongest real op
    alphas[edge_index(2, 1)] = 0.0
    alphas[edge_index(2, 1), OPS.index("none")] = 9.0
    alphas[edge_index(2, 1), OPS.index("std_x3")] = 0.4
    assert derive_nodes(alphas)[0] == [("std_x2", 0), ("std_x3", 1)]


def test_genotype_text_round_trips_through_a_file(tmp_path):
    genotype = {"box": derive_nodes(hand_set_alphas()), "cls": derive_nodes(-hand_set_alphas())}
    path = tmp_path / "genotype.txt"
    write_genotype(genotype, path, header="search of a test\nstep 3")
    text = read_genotype_text(path)
    assert text.startswith("# search of a test\n# step 3\n")
    assert parse_genotype(text) == genotype
    assert format_genotype(parse_genotype(text)) == format_genotype(genotype)
    assert text.splitlines()[2] == "box: 2 = std_x2(0) + sep_x1(1); 3 = sep_x2_dil(1) + std_x1_dil(2); " \
                                   "4 = sep_x3(0) + std_x2_dil(3)"


@pytest.mark.parametrize("bad, message", [
    ("box: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n", "no line for tower"),
    ("box: 2 = std_x9(0) + sep_x1(1); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n"
     "cls: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n", "unknown op 'std_x9'"),
    ("box: 2 = std_x2(0) + sep_x1(2); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n"
     "cls: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n", "states 0..1"),
    ("box: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + none(2); 4 = sep_x2(1) + std_x1(3)\n"
     "cls: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n", "unknown op 'none'"),
])
def test_a_bad_genotype_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_genotype(bad, source="g.txt")


def test_a_fixed_cell_runs_the_genotype_ops_with_fresh_weights():
    nodes = derive_nodes(hand_set_alphas())
    cell = FixedCell(16, CHANNELS, nodes)
    assert [edge.op.name for edge in cell.edges] == [op for node in nodes for op, _ in node]
    out = cell(torch.randn(1, 16, 6, 6), torch.randn(1, 16, 6, 6))
    assert out.shape == (1, 16, 6, 6)
    # fresh: far fewer params than the search cell it came from (two kept edges per node, one op per edge)
    assert sum(p.numel() for p in cell.parameters()) < sum(p.numel() for p in SearchCell(16, CHANNELS).parameters()) / 3


def test_alphas_get_gradients_and_move_after_a_step():
    torch.manual_seed(0)
    cell = SearchCell(16, CHANNELS)
    before = cell.alphas.detach().clone()
    optimizer = torch.optim.Adam([cell.alphas], lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    x = torch.randn(2, 16, 8, 8)
    loss = (cell(x, x) - 1.0).pow(2).mean()
    loss.backward()
    assert cell.alphas.grad is not None and cell.alphas.grad.abs().sum() > 0
    assert (cell.alphas.grad.abs().sum(1) > 0).all()  # every edge's mixture reaches the loss
    optimizer.step()
    # Adam's first step moves each alpha with a non-zero gradient by about lr
    moved = (cell.alphas.detach() - before).abs()
    assert moved.max() > 1e-4 and moved.max() < 1e-3
