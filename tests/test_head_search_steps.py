"""What a head-search step computes: the towers on cached backbone + neck features (the same gradients as the whole
model with those layers frozen), DARTS's unrolled second-order alpha gradient (against finite differences), and
the latency term (a measured, cached table; a large weight makes the genotype keep the cheapest ops)."""
import json

import pytest
import torch

from yolo.config import BaseConfig
from yolo.engine.checkpoint import load_checkpoint, save_checkpoint
from yolo.loss import YOLOLoss
from yolo.models.detector import build_model
from yolo.models.op_latency import expected_latency_ms, latency_table, measure_op_ms
from yolo.models.search_cell import SearchCell, derive_nodes, parse_genotype
from yolo.models.search_ops import OPS
from yolo.research.head_search import HeadOnFeatures, alpha_gradients, alpha_step, cache_features, start_from_checkpoint
from yolo.tasks import search_head


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread (tiny convs)


def small_cfg(tmp_path, **fields):
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.head_channels, cfg.cell_channels = 0.125, 64, 8, 4
    cfg.runs_dir = str(tmp_path / "runs")
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


IMAGES = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
TARGETS = torch.tensor([[0, 1, 30.0, 30.0, 20.0, 16.0], [1, 0, 20.0, 40.0, 12.0, 12.0], [1, 2, 50.0, 12.0, 9.0, 7.0]])


def head_gradients(loss, head):
    return torch.autograd.grad(loss, [p for p in head.parameters()])


# ------------------------------------------------------------------------------------------------- cached features
def test_cached_features_give_the_tower_gradients_of_the_whole_model_with_frozen_layers(tmp_path):
    cfg = small_cfg(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg, head="search")
    for part in (model.backbone, model.neck):
        part.eval().requires_grad_(False)  # frozen: weights and BN statistics
    head, loss_fn = model.heads[0].train(), YOLOLoss(cfg)
    cache = cache_features(model, [(IMAGES, TARGETS, [0, 1], 3)], torch.device("cpu"), flip=True)
    assert len(cache) == 4  # two images, each as it is and mirrored
    net = HeadOnFeatures(head, model.decoding)
    flipped = TARGETS.clone()
    flipped[:, 2] = 64 - flipped[:, 2]
    for indices, images, targets in (([0, 1], IMAGES, TARGETS), ([2, 3], IMAGES.flip(-1), flipped)):
        whole = head_gradients(loss_fn(model(images), targets, model.decoding)[0], head)
        features, cached_targets = cache.batch(indices)
        assert torch.equal(cached_targets, targets)
        cached = head_gradients(loss_fn(net(features), cached_targets, net.decoding)[0], head)
        assert len(whole) == len(cached) and any(g.abs().sum() > 0 for g in whole)
        for a, b in zip(whole, cached):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6 * max(1.0, a.abs().max().item()))
    alphas = [i for i, (name, _) in enumerate(head.named_parameters()) if name.endswith("alphas")]
    assert len(alphas) == 2  # the alphas' gradients are among those compared


def test_the_search_starts_from_the_trained_backbone_neck_and_1x1_head(tmp_path):
    cfg = small_cfg(tmp_path)
    torch.manual_seed(1)
    trained = build_model(cfg)
    torch.manual_seed(2)
    search = build_model(cfg, head="search")
    start_from_checkpoint(search, trained.state_dict(), "trained.pt")
    for name, value in trained.state_dict().items():
        if name.startswith(("backbone.", "neck.")) or name == "anchors":
            assert torch.equal(search.state_dict()[name], value), name
    for s, conv in enumerate(trained.heads[0].convs):
        predict = search.heads[0].predict.convs[s]
        c = conv.in_channels
        assert torch.equal(predict.weight[:, :c], conv.weight) and torch.equal(predict.bias, conv.bias)
        assert not predict.weight[:, c:].any()  # the towers' part starts at zero: the trained predictions exactly
    with torch.no_grad():
        images = IMAGES.float()
        for a, b in zip(trained.eval()(images), search.eval()(images)):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="other.pt.*backbone"):
        start_from_checkpoint(search, {k: v for k, v in trained.state_dict().items() if "backbone" not in k},
                              "other.pt")
    # a trained head of another layout (box bins) cannot be the search's start: refused, not silently skipped
    with pytest.raises(ValueError, match="binned.pt.*prediction conv"):
        start_from_checkpoint(search, build_model(small_cfg(tmp_path, box_bins=4)).state_dict(), "binned.pt")
    with_bins = build_model(small_cfg(tmp_path, box_bins=4), head="search")
    start_from_checkpoint(with_bins, build_model(small_cfg(tmp_path, box_bins=4)).state_dict(), "binned.pt")


def tiny_search_cfg(tmp_path, **fields):
    fields = {"data_root": str(tmp_path / "data"), "shapes_num_train": 8, "shapes_num_val": 4, "batch_size": 4,
              "num_workers": 0, "cache_images": True, "search_steps": 2, "search_genotype_interval": 1,
              "tensorboard": False, "run_name": "t", **fields}
    return small_cfg(tmp_path, **fields)


def test_a_cached_search_on_a_trained_checkpoint_writes_both_genotype_forms(tmp_path):
    """Second order and the latency term on, on a latency table already on disk (reused: nothing measured)."""
    cfg = tiny_search_cfg(tmp_path, search_order=2, search_latency_weight=0.5)
    torch.manual_seed(0)
    ckpt = tmp_path / "runs" / "t" / "best.pt"
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "epoch": 1}, ckpt)
    table = tmp_path / "runs" / "op_latency.json"
    table.write_text(json.dumps({f"{op} c4 {s}x{s} t1": 1.0 + i for i, op in enumerate(OPS[1:]) for s in (8, 4, 2)}))
    before = table.read_text()
    genotype, run_dir = search_head.run(cfg)  # no init_ckpt: the run named run_name is the trained detector
    log = (run_dir / "log.txt").read_text()
    assert f"{ckpt}" in log and "alpha steps/s" in log and "(cached, order 2)" in log
    assert "std_x1 3.00" in log and "ms/img" in log and table.read_text() == before  # the table on disk, reused
    assert parse_genotype((run_dir / "genotype.txt").read_text()) == genotype
    assert parse_genotype((run_dir / "genotype_reference.txt").read_text()) == genotype
    history = load_checkpoint(run_dir / "alphas.pt")
    assert int(history["steps"][-1]) == 2 and not torch.equal(history["box"][0], history["box"][-1])


def test_a_cached_search_without_a_trained_detector_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_ckpt.*python main.py --task train"):
        search_head.run(tiny_search_cfg(tmp_path))


# ------------------------------------------------------------------------------------------------- second order
def tiny_cell_problem():
    torch.manual_seed(0)
    cell = SearchCell(4, 2).double()
    with torch.no_grad():
        cell.alphas.copy_(torch.randn(cell.alphas.shape, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    train = (torch.randn(2, 4, 5, 5, generator=gen, dtype=torch.float64),
             torch.randn(2, 4, 5, 5, generator=gen, dtype=torch.float64))
    val = (torch.randn(2, 4, 5, 5, generator=gen, dtype=torch.float64),
           torch.randn(2, 4, 5, 5, generator=gen, dtype=torch.float64))
    weights = [p for name, p in cell.named_parameters() if name != "alphas"]

    def loss_of(batch):
        x, y = batch
        return (cell(x, x) - y).pow(2).mean()
    return cell, weights, loss_of, train, val


def unrolled_loss(cell, weights, loss_of, train, val, xi):
    """L_val(w - xi dL_train/dw (w, alpha), alpha), the objective of DARTS's second-order gradient, by hand."""
    grads = torch.autograd.grad(loss_of(train), weights)
    backup = [w.detach().clone() for w in weights]
    with torch.no_grad():
        for w, g in zip(weights, grads):
            w.sub_(xi * g)
        loss = loss_of(val).item()
        for w, b in zip(weights, backup):
            w.copy_(b)
    return loss


def test_the_second_order_alpha_gradient_matches_finite_differences():
    cell, weights, loss_of, train, val = tiny_cell_problem()
    xi, h = 0.5, 1e-5
    # in float64 a small radius makes the Hessian-vector product's central differences exact to ~1e-9: what is
    # checked is the unrolled gradient itself (DARTS's radius 0.01 suits float32 and a head of many weights; on this
    # cell of a few hundred it is off by up to 10x, from the curvature of a 2-channel GroupNorm)
    grads, _ = alpha_gradients(loss_of, val, train, [cell.alphas], weights, order=2, xi=xi, radius=1e-5)
    numeric, checked = torch.zeros_like(cell.alphas), range(0, cell.alphas.numel(), 7)  # every edge, several ops
    for index in checked:
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                cell.alphas.view(-1)[index] += sign * h
            values.append(unrolled_loss(cell, weights, loss_of, train, val, xi))
            with torch.no_grad():
                cell.alphas.view(-1)[index] -= sign * h
        numeric.view(-1)[index] = (values[0] - values[1]) / (2 * h)
    grads, first, numeric = (g.view(-1)[list(checked)] for g in (grads[0], first_order(val, cell, loss_of), numeric))
    torch.testing.assert_close(grads, numeric, rtol=1e-4, atol=1e-9)
    assert (first - numeric).abs().max() > 100 * (grads - numeric).abs().max()  # the second-order term matters here
    # and the weights are back where they were
    _, weights_after, _, _, _ = tiny_cell_problem()
    assert all(torch.equal(a, b) for a, b in zip(weights, weights_after))


def first_order(batch, cell, loss_of):
    return torch.autograd.grad(loss_of(batch), cell.alphas)[0]


def test_the_first_order_gradient_is_the_alpha_gradient_at_the_current_weights():
    cell, weights, loss_of, train, val = tiny_cell_problem()
    grads, loss = alpha_gradients(loss_of, val, train, [cell.alphas], weights, order=1, xi=0.5)
    expected = torch.autograd.grad(loss_of(val), cell.alphas)[0]
    torch.testing.assert_close(grads[0], expected)
    assert loss == pytest.approx(loss_of(val).item())


# ------------------------------------------------------------------------------------------------- latency
def test_the_latency_table_is_measured_once_per_key_and_reused(tmp_path):
    calls = []

    def fake(op, channels, size, threads):
        calls.append((op, channels, size, threads))
        return 1.0 + OPS.index(op) + size[0] / 100

    path = tmp_path / "runs" / "op_latency.json"
    table = latency_table(4, [(8, 8), (4, 4)], 1, path, measure=fake)
    assert len(calls) == 2 * 10 and set(table) == set(OPS[1:])
    assert table["std_x1"] == pytest.approx(2 * (1.0 + OPS.index("std_x1")) + 0.12)  # summed over the sizes
    assert latency_table(4, [(8, 8), (4, 4)], 1, path, measure=fake) == table and len(calls) == 20  # reused
    latency_table(4, [(8, 8)], 2, path, measure=fake)  # another thread count is another key
    assert len(calls) == 30
    saved = json.loads(path.read_text())
    assert "sep_x2_dil c4 8x8 t2" in saved and len(saved) == 30
    assert measure_op_ms("sep_x1", 4, (8, 8), 1, batch=2, rounds=2) > 0  # the real measurement runs


def cheapest_first(cheapest):
    """A hand-set table: `cheapest` costs 1 ms, the others 5 to 14 ms."""
    return {op: 1.0 if op == cheapest else 5.0 + i for i, op in enumerate(OPS[1:])}


def latency_search(table, weight, steps=25):
    torch.manual_seed(0)
    cell = SearchCell(4, 2)
    weights = [p for name, p in cell.named_parameters() if name != "alphas"]
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    batch = (x, torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4)))

    def loss_of(b):
        return (cell(b[0], b[0]) - b[1]).pow(2).mean()

    optimizer = torch.optim.Adam([cell.alphas], lr=0.1, betas=(0.5, 0.999))
    for _ in range(steps):
        alpha_step(loss_of, batch, batch, [cell.alphas], weights, optimizer,
                   latency=lambda: weight * expected_latency_ms(cell.alphas, table))
    return [op for node in derive_nodes(cell.alphas) for op, _ in node]


@pytest.mark.parametrize("cheapest", ["std_x2_dil", "sep_x1"])
def test_a_large_latency_weight_makes_the_genotype_keep_the_cheapest_ops(cheapest):
    assert set(latency_search(cheapest_first(cheapest), weight=10.0)) == {cheapest}


def test_without_the_latency_term_the_task_loss_decides():
    assert len(set(latency_search(cheapest_first("sep_x1"), weight=0.0))) > 1


def test_the_expected_latency_is_the_softmax_weighted_table_over_the_ops_a_genotype_keeps():
    alphas = torch.zeros(9, len(OPS))
    alphas[:, 0] = 5.0  # `none` costs nothing but a genotype never keeps it: it does not lower the expectation
    table = cheapest_first("sep_x1")
    expected = 9 * sum(table.values()) / 10
    assert expected_latency_ms(alphas, table).item() == pytest.approx(expected)
    alphas[0, OPS.index("sep_x1")] = 50.0
    assert expected_latency_ms(alphas, table).item() == pytest.approx(8 * sum(table.values()) / 10 + 1.0)
