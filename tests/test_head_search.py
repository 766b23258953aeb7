"""Head architecture search: shared candidate ops, mixed edges, genotypes, the searched head and the search task."""
import pytest
import torch
from torch import nn

from yolo.models.search_ops import OPS, MixedEdge, RepShare, StackedOp

CHANNELS = 8


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
