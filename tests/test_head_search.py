"""Head architecture search: shared candidate ops, mixed edges, genotypes, the searched head and the search task."""
import pytest
import torch
from torch import nn

from yolo.models.search_ops import OPS, MixedEdge, RepShare, StackedOp

CHANNELS = 8


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread (tiny convs)


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
from yolo.models.search_cell import (EDGES, FixedCell, SearchCell, derive_nodes, edge_by_edge,  # noqa: E402
                                     format_genotype, parse_genotype, read_genotype_text, write_genotype)


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


@pytest.mark.parametrize("same_inputs", [True, False])
@pytest.mark.parametrize("batch,channels_last", [(2, False), (1, True), (2, True)])
def test_the_fused_search_cell_equals_its_edges_one_by_one(same_inputs, batch, channels_last):
    """The cell runs the edges of one state as one grouped computation; values and every gradient (alphas, each
    edge's convs and norms, the inputs) must be those of the plain edge-by-edge loop -- also at batch 1 in channels
    last, the layout and batch of a search on cached features (where a 5-d view would give the grouped conv a tensor
    of odd strides, whose weight gradient PyTorch 2.14 on CPU gets wrong)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    cell = randomize(SearchCell(16, CHANNELS)).double().to(memory_format=layout)
    gen = torch.Generator().manual_seed(3)

    def features():
        x = torch.randn(batch, 16, 7, 9, generator=gen, dtype=torch.float64).contiguous(memory_format=layout)
        return x.requires_grad_()
    s0 = features()
    s1 = s0 if same_inputs else features()
    target = torch.randn(batch, 16, 7, 9, generator=gen, dtype=torch.float64)
    results = []
    for forward in (cell.forward, lambda a, b: edge_by_edge(cell, a, b)):
        out = forward(s0, s1)
        inputs = [s0] if same_inputs else [s0, s1]
        grads = torch.autograd.grad((out - target).pow(2).sum(), list(cell.parameters()) + inputs)
        results.append((out, grads))
    (fused, fused_grads), (loop, loop_grads) = results
    torch.testing.assert_close(fused, loop)
    assert loop.abs().mean() > 0.1  # something was computed
    for (name, _), a, b in zip(cell.named_parameters(), fused_grads, loop_grads):
        torch.testing.assert_close(a, b, msg=name)
    assert loop_grads[0].abs().sum() > 0  # the alphas' gradient is compared, not two zeros


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


# ------------------------------------------------------------------------------------------------- heads in the model
from yolo.config import BaseConfig  # noqa: E402
from yolo.engine.checkpoint import load_model, save_checkpoint  # noqa: E402
from yolo.loss import YOLOLoss  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.models.head import YOLOHead  # noqa: E402
from yolo.postprocess import postprocess  # noqa: E402

GENOTYPE = ("box: 2 = std_x2(0) + sep_x1(1); 3 = sep_x2_dil(1) + std_x1_dil(2); 4 = sep_x3(0) + std_x2_dil(3)\n"
            "cls: 2 = std_x1(0) + sep_x3(1); 3 = std_x3(0) + sep_x1(2); 4 = sep_x1_dil(1) + std_x2(2)\n"
            "# yolo genotype format 2\n")


def small_cfg(tmp_path, head="conv1x1", **fields):
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.head_channels, cfg.cell_channels = 0.125, 64, 16, 8
    cfg.runs_dir = str(tmp_path / "runs")
    cfg.head = head
    if head == "searched":
        (tmp_path / "genotype.txt").write_text(GENOTYPE)
        cfg.genotype_file = str(tmp_path / "genotype.txt")
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def test_every_head_gives_the_same_layout_through_the_same_prediction_conv(tmp_path):
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    shapes = {}
    for head in ("conv1x1", "tower3x3", "searched"):
        torch.manual_seed(0)
        model = build_model(small_cfg(tmp_path, head)).eval()
        final = model.heads[0] if head == "conv1x1" else model.heads[0].predict
        assert type(final) is YOLOHead and type(final).forward is YOLOHead.forward
        # the model's output is exactly YOLOHead's forward of what reaches the prediction convs
        seen = []
        handle = final.register_forward_hook(lambda m, inputs, out: seen.append((inputs[0], out)))
        with torch.no_grad():
            outputs = model(images)
        handle.remove()
        features, hooked = seen[0]
        with torch.no_grad():
            by_hand = [conv(x).view(2, 3, 8, *x.shape[2:]).permute(0, 1, 3, 4, 2) for conv, x in zip(final.convs, features)]
        for out, hook_out, ref in zip(outputs, hooked, by_hand):
            assert out is hook_out
            torch.testing.assert_close(out, ref)
        shapes[head] = [tuple(o.shape) for o in outputs]
    assert shapes["conv1x1"] == shapes["tower3x3"] == shapes["searched"] == [(2, 3, 8, 8, 8), (2, 3, 4, 4, 8),
                                                                              (2, 3, 2, 2, 8)]


def test_the_searched_head_trains_through_the_plain_loss_and_postprocess(tmp_path):
    cfg = small_cfg(tmp_path, "searched")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    targets = torch.tensor([[0, 1, 30.0, 30.0, 20.0, 16.0], [1, 0, 20.0, 40.0, 12.0, 12.0]])
    loss, items, _ = YOLOLoss(cfg)(model(torch.full((2, 3, 64, 64), 100.0)), targets, model.decoding)
    loss.backward()
    cells = [p for n, p in model.named_parameters() if ".box_tower." in n or ".cls_tower." in n]
    assert cells and all(p.grad is not None for p in cells)
    model.eval()
    with torch.no_grad():
        detections = postprocess(model(torch.zeros(1, 3, 64, 64)), model.decoding, conf_thres=0.0, max_det=5)
    boxes, scores, labels = detections[0]
    assert boxes.shape == (5, 4) and labels.max() < cfg.num_classes


def test_load_model_rebuilds_the_searched_head_without_the_genotype_file(tmp_path):
    cfg = small_cfg(tmp_path, "searched")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = tmp_path / "runs" / "x" / "best.pt"
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1}, path)
    (tmp_path / "genotype.txt").unlink()  # the checkpoint carries the genotype text
    plain = small_cfg(tmp_path, "conv1x1", ckpt_path=str(path), head_channels=32)
    loaded, _, _ = load_model(plain)
    assert plain.head == "searched" and plain.genotype == GENOTYPE and plain.head_channels == 16
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        for a, b in zip(model(images), loaded(images)):
            torch.testing.assert_close(a, b)


def test_a_searched_head_without_a_genotype_is_a_clear_error(tmp_path):
    cfg = BaseConfig()
    cfg.head = "searched"
    with pytest.raises(ValueError, match="needs 'genotype_file'"):
        cfg.finalize()
    cfg.genotype_file = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="genotype_file"):
        cfg.finalize()


# ------------------------------------------------------------------------------------------------- the search task
from yolo.engine.checkpoint import load_checkpoint  # noqa: E402
from yolo.models.search_cell import parse_genotype as parse  # noqa: E402
from yolo.tasks import search_head  # noqa: E402


def tiny_search_cfg(tmp_path, **fields):
    fields = {"data_root": str(tmp_path / "data"), "shapes_num_train": 12, "shapes_num_val": 4, "batch_size": 6,
              "num_workers": 0, "cache_images": True, "search_epochs": 2, "search_genotype_interval": 1,
              "head_channels": 8, "cell_channels": 4, "val_interval": 1, "tensorboard": False,
              "run_name": "t", "search_mode": "end_to_end", **fields}  # the cached search: test_head_search_steps.py
    return small_cfg(tmp_path, **fields)


def test_each_step_of_the_alternation_moves_only_its_own_parameters(tmp_path):
    cfg = small_cfg(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg, head="search").train()
    alphas = model.heads[0].architecture_parameters()
    assert len(alphas) == 2 and all(a.shape == (9, len(OPS)) for a in alphas)
    weights = [p for p in model.parameters() if all(p is not a for a in alphas)]
    images, targets = torch.full((2, 3, 64, 64), 90.0), torch.tensor([[0, 1, 30.0, 30.0, 20.0, 16.0]])

    def snapshot():
        return [p.detach().clone() for p in alphas], [p.detach().clone() for p in weights]

    a0, w0 = snapshot()
    adam = torch.optim.Adam(alphas, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    search_head.train_step(model, YOLOLoss(cfg), images, targets, adam, train=alphas, frozen=weights)
    a1, w1 = snapshot()
    assert all(not torch.equal(x, y) for x, y in zip(a0, a1))
    assert all(torch.equal(x, y) for x, y in zip(w0, w1))
    sgd = torch.optim.SGD(weights, lr=0.1)
    search_head.train_step(model, YOLOLoss(cfg), images, targets, sgd, train=weights, frozen=alphas)
    a2, w2 = snapshot()
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    assert sum(not torch.equal(x, y) for x, y in zip(w1, w2)) > len(weights) // 2
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again


def test_the_heldout_split_is_disjoint_and_same_uses_one_loader(tmp_path):
    cfg = tiny_search_cfg(tmp_path, search_heldout_fraction=0.25)
    weight_loader, alpha_loader = search_head.search_loaders(cfg)
    weight_files = {r.image_path for r in weight_loader.dataset.records}
    alpha_files = {r.image_path for r in alpha_loader.dataset.records}
    assert len(weight_files) == 9 and len(alpha_files) == 3 and not weight_files & alpha_files
    cfg.search_alpha_split = "same"
    weight_loader, alpha_loader = search_head.search_loaders(cfg)
    assert alpha_loader is None and len(weight_loader.dataset) == 12


def test_search_writes_its_files_and_a_genotype_the_searched_head_builds(tmp_path):
    cfg = tiny_search_cfg(tmp_path)
    genotype, run_dir = search_head.run(cfg)
    assert run_dir.name == "t_search"
    for name in ("genotype.txt", "alphas.png", "cells.png", "alphas.pt", "config.json"):
        assert (run_dir / name).is_file(), name
    text = (run_dir / "genotype.txt").read_text()
    assert parse(text) == genotype and "step 2/2 (final)" in text
    history = load_checkpoint(run_dir / "alphas.pt")
    assert history["box"].shape == (len(history["steps"]), 9, len(OPS))
    torch.testing.assert_close(history["box"].sum(-1), torch.ones(len(history["steps"]), 9))
    assert not torch.equal(history["box"][0], history["box"][-1])  # the alphas moved
    # the genotype of the final alphas, by an independent route
    assert derive_nodes(history["alphas"][1]) == genotype["cls"]

    # what --head searched --genotype_file <search>/genotype.txt builds (training and reloading it: tests above)
    searched_cfg = tiny_search_cfg(tmp_path)
    searched_cfg.head, searched_cfg.genotype_file = "searched", str(run_dir / "genotype.txt")
    model = build_model(searched_cfg.finalize())
    assert parse(searched_cfg.genotype) == genotype
    assert [edge.op.name for edge in model.heads[0].box_tower.edges] == [op for n in genotype["box"] for op, _ in n]


def test_the_search_warms_up_the_momentum_and_the_biases_lr_as_training_does(tmp_path, monkeypatch):
    cfg = tiny_search_cfg(tmp_path, warmup_momentum=0.5, warmup_bias_lr=0.05, warmup_epochs=3.0, search_epochs=6)
    seen, train_step = [], search_head.train_step

    def spy(model, loss_fn, images, targets, optimizer, **kwargs):
        groups = {g.get("name", i): g for i, g in enumerate(optimizer.param_groups)}
        seen.append((groups[0]["betas"][0], groups[0]["lr"], groups["bias"]["lr"]))
        return train_step(model, loss_fn, images, targets, optimizer, **kwargs)

    monkeypatch.setattr(search_head, "train_step", spy)
    search_head.run(cfg)
    momentum, weight_lr, bias_lr = seen[0]  # the first weight step of a 3-step warmup (1 step a pass): p = 1/3
    assert momentum == pytest.approx(0.5 + (cfg.momentum - 0.5) / 3)
    assert weight_lr == pytest.approx(cfg.lr / 3) and bias_lr == pytest.approx(0.05 * 2 / 3 + cfg.lr / 3)


def test_the_alphas_l2_decay_is_the_configs(tmp_path, monkeypatch):
    """search_alpha_weight_decay reaches the alphas' Adam (it bounds how far they move: docs/head_search.md)."""
    step, seen = search_head.alpha_step, []

    def spy(loss_of, alpha_batch, weight_batch, alphas, weights, optimizer, *args, **kwargs):
        seen.append(optimizer.param_groups[0]["weight_decay"])
        return step(loss_of, alpha_batch, weight_batch, alphas, weights, optimizer, *args, **kwargs)

    monkeypatch.setattr(search_head, "alpha_step", spy)
    for decay in (0.0, 0.05):
        seen.clear()
        search_head.run(tiny_search_cfg(tmp_path / f"decay{decay}", search_alpha_weight_decay=decay, search_epochs=1))
        assert seen and set(seen) == {decay}
