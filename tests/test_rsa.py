"""Representation similarity analysis (yolo/research/rsa.py): RDMs, the unbiased HSIC and CKA against slow references, the
invariances of linear CKA, and the features the hooks record."""
import itertools

import numpy as np
import pytest
import torch

from yolo.config import BaseConfig
from yolo.models.detector import build_model
from yolo.research.rsa import LAYER_NAMES, cka, hsic, layer_features, linear_cka, rdm, similarity_matrices, u_center

# a symmetric 5 x 5 matrix with a non-zero diagonal (the centering must ignore it)
K5 = torch.tensor([[9., 1., 2., 0., 4.],
                   [1., 7., 3., 5., 1.],
                   [2., 3., 8., 2., 6.],
                   [0., 5., 2., 6., 3.],
                   [4., 1., 6., 3., 5.]], dtype=torch.float64)
L5 = torch.tensor([[1., 2., 0., 1., 3.],
                   [2., 4., 1., 2., 2.],
                   [0., 1., 5., 4., 1.],
                   [1., 2., 4., 2., 0.],
                   [3., 2., 1., 0., 7.]], dtype=torch.float64)


def slow_u_center(k):
    """U-centering written out term by term: off the diagonal, K_ij minus row i's and column j's sums over the
    other points divided by n - 2, plus the sum of all off-diagonal entries over (n - 1)(n - 2)."""
    n = len(k)
    off = [[0.0 if i == j else float(k[i][j]) for j in range(n)] for i in range(n)]
    total = sum(off[a][b] for a in range(n) for b in range(n))
    u = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                row = sum(off[i][b] for b in range(n))
                col = sum(off[a][j] for a in range(n))
                u[i][j] = off[i][j] - row / (n - 2) - col / (n - 2) + total / ((n - 1) * (n - 2))
    return u


def slow_hsic(k, l):
    """Song et al.'s unbiased HSIC as the U-statistic it is: the mean over ordered 4-tuples of distinct points of
    K_ij L_ij + K_ij L_qr - 2 K_ij L_iq."""
    n = len(k)
    terms = [k[i][j] * l[i][j] + k[i][j] * l[q][r] - 2 * k[i][j] * l[i][q]
             for i, j, q, r in itertools.permutations(range(n), 4)]
    return float(sum(terms) / len(terms))


def test_u_centering_of_a_5x5_case():
    torch.testing.assert_close(u_center(K5), torch.tensor(slow_u_center(K5.tolist()), dtype=torch.float64))
    # one entry by hand: diagonal zeroed, row 0 sums to 7, column 1 to 10, all off-diagonal entries to 54
    assert u_center(K5)[0, 1].item() == pytest.approx(1 - 7 / 3 - 10 / 3 + 54 / 12)
    assert torch.all(u_center(K5).diagonal() == 0)


def test_unbiased_hsic_is_the_u_statistic():
    assert hsic(K5, L5) == pytest.approx(slow_hsic(K5.tolist(), L5.tolist()), rel=1e-10)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 3, generator=g, dtype=torch.float64)
    b = torch.randn(7, 4, generator=g, dtype=torch.float64)
    assert hsic(a @ a.T, b @ b.T) == pytest.approx(slow_hsic((a @ a.T).tolist(), (b @ b.T).tolist()), rel=1e-9)


def test_cka_of_a_matrix_with_itself_is_one():
    features = torch.randn(30, 50, generator=torch.Generator().manual_seed(1))
    assert cka(rdm(features), rdm(features)) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(features, features) == pytest.approx(1.0, abs=1e-12)
    other = torch.randn(30, 50, generator=torch.Generator().manual_seed(2))
    assert abs(cka(rdm(features), rdm(other))) < 0.3  # unrelated features: near 0 (unbiased), far from 1


def test_linear_cka_invariant_to_rotation_and_isotropic_scaling_only():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 12, generator=g, dtype=torch.float64)
    y = x @ torch.randn(12, 8, generator=g, dtype=torch.float64) + 0.5 * torch.randn(40, 8, generator=g,
                                                                                      dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    base = linear_cka(x, y)
    assert 0.2 < base < 0.99
    assert linear_cka(x @ rotation, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(3.7 * x, 0.02 * y) == pytest.approx(base, rel=1e-10)
    # the invariances are specific: stretching one axis alone changes the value
    stretch = torch.ones(12, dtype=torch.float64)
    stretch[0] = 10
    assert abs(linear_cka(x * stretch, y) - base) > 1e-3


def test_rdm_against_numpy_corrcoef():
    g = torch.Generator().manual_seed(4)
    features = torch.randn(6, 20, generator=g) * torch.linspace(0.1, 5, 20) + torch.linspace(-3, 3, 20)
    features[:, 5] = 2.0  # a constant feature: no information, must not produce NaN
    x = features.double().numpy()
    std = x.std(0, ddof=1)
    z = (x - x.mean(0)) / np.where(std > 0, std, 1)
    expected = 1 - np.corrcoef(z)
    np.testing.assert_allclose(rdm(features).numpy(), expected, atol=1e-10)


def test_layer_features_are_the_outputs_of_each_layer():
    torch.manual_seed(0)
    cfg = BaseConfig()
    cfg.width, cfg.img_size = 0.25, 64
    model = build_model(cfg.finalize()).eval()
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    feats = layer_features(model, [images[:2], images[2:]])
    assert list(feats) == list(LAYER_NAMES)
    with torch.no_grad():
        c3, c4, c5 = model.backbone((images.float() - model.mean) / model.std)
        p3, p4, p5 = model.neck((c3, c4, c5))[0]
    # two forwards of the same eval model: equal up to float summation order (oneDNN may pick other kernels)
    torch.testing.assert_close(feats["backbone"], c5.flatten(1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats["out5"], p5.flatten(1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats["out3"], p3.flatten(1), rtol=1e-4, atol=1e-4)
    assert feats["up4"].shape == (3, model.neck.blocks[5][0][0][0].out_channels * 8 * 8)  # upsampled to stride 8


def test_similarity_matrices_are_symmetric_with_unit_diagonal():
    torch.manual_seed(0)
    cfg = BaseConfig()
    cfg.width, cfg.img_size = 0.25, 64
    models = [build_model(cfg.finalize()) for _ in range(2)]
    sets = [[torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)] for _ in range(2)]
    sims = similarity_matrices(models + [models[0]], sets, show_progress=False)
    for name, s in sims.items():
        assert s.shape == (3, 3) and np.allclose(s, s.T) and np.allclose(np.diag(s), 1)
        assert s[0, 2] == pytest.approx(1.0)  # the same model twice


def upper_triangle(matrix):
    return matrix.numpy()[np.triu_indices(len(matrix), 1)]


def test_spearman_of_two_rdms_is_scipys_on_their_upper_triangles():
    stats = pytest.importorskip("scipy.stats")
    from yolo.research.rsa import spearman
    g = torch.Generator().manual_seed(6)
    for n in (4, 9, 25):
        x = torch.randn(n, 30, generator=g)
        a, b = rdm(x), rdm(x + torch.randn(n, 30, generator=g))
        expected = stats.spearmanr(upper_triangle(a), upper_triangle(b))[0]
        assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
        assert spearman(a, a) == pytest.approx(1.0, abs=1e-12)
    # tied dissimilarities take the mean of their ranks, as scipy's
    a, b = torch.round(a * 4) / 4, torch.round(b * 4) / 4
    assert len(np.unique(upper_triangle(a))) < len(upper_triangle(a)) / 2
    assert spearman(a, b) == pytest.approx(stats.spearmanr(upper_triangle(a), upper_triangle(b))[0], abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0, abs=1e-12)
    # only the order counts: any increasing function of one RDM leaves the value unchanged (CKA changes)
    assert spearman(a, torch.exp(3 * b)) == pytest.approx(spearman(a, b), abs=1e-12)
    # a constant RDM orders no pair of images: 0, as CKA gives for a matrix without structure
    assert spearman(a, torch.ones_like(a)) == 0.0


def test_similarity_matrices_use_the_chosen_measure():
    from yolo.research.rsa import spearman
    torch.manual_seed(0)
    cfg = BaseConfig()
    cfg.width, cfg.img_size = 0.25, 64
    models = [build_model(cfg.finalize()).eval() for _ in range(2)]
    images = [torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)]
    rdms = [{k: rdm(f) for k, f in layer_features(m, images).items()} for m in models]
    for measure, compare in (("spearman", spearman), ("cka", cka)):
        sims = similarity_matrices(models, [images], show_progress=False, measure=measure)
        for name in LAYER_NAMES:
            assert sims[name][0, 1] == pytest.approx(compare(rdms[0][name], rdms[1][name]), abs=1e-9)
    assert BaseConfig().rsa_measure == "spearman"  # the reference's statistic is the default
    from yolo.config_checks import RSA_MEASURES
    from yolo.research.rsa import RDM_MEASURES
    assert tuple(RDM_MEASURES) == RSA_MEASURES  # every choice the config accepts is implemented
    with pytest.raises(ValueError, match="rsa_measure"):
        bad = BaseConfig()
        bad.rsa_measure = "pearson"
        bad.finalize()
