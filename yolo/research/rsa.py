"""Representation similarity analysis (RSA): how alike are the features two models compute, layer by layer?

The method of "Branched Multi-Task Networks: Deciding What Layers To Share" (Vandenhende et al., BMVC 2020):
run every task's single-task model over the same images, describe each layer of each model by its representation
dissimilarity matrix (RDM: how differently the layer sees every pair of images), and compare two models' RDMs by the
Spearman rank correlation of their upper triangles (the reference's statistic, `rsa_measure = "spearman"`) or by
centered kernel alignment (CKA, Kornblith et al., ICML 2019; `rsa_measure = "cka"`). Tasks whose models see the images
alike at a layer can share that layer; research/tree_search.py turns the similarities into a branching tree.

Where a split can happen (yolo/branching.py): right after the backbone (its last output, C5) and after each neck
block, so those are the layers recorded, as LAYER_NAMES lists them (layer k = split index k - 1).
Features are taken in eval mode with BatchNorm as trained (not folded into the convolutions: folding changes no
output, only the arithmetic, so the features are the same either way).

HSIC is the unbiased estimator of Song et al., "Feature Selection via Dependence Maximization" (JMLR 2012), written
as U-centering (Szekely & Rizzo, "Partial distance correlation", Ann. Statist. 2014): its value does not drift
with the number of images, unlike the biased estimator's.
"""
import numpy as np
import torch

from ..branching import NECK_BLOCK_NAMES

LAYER_NAMES = ("backbone",) + NECK_BLOCK_NAMES  # layer k holds what a split at index k - 1 would share


@torch.no_grad()
def layer_features(model, batches, task=0):
    """Flattened features of `task`'s path at every layer of LAYER_NAMES, for the images of `batches` (an iterable
    of uint8 (B, 3, S, S) images, letterboxed as for evaluation).
    Returns {layer name: (N, D) float32 tensor}, N = all images, D = C * H * W of that layer."""
    model.eval()
    found = {name: [] for name in LAYER_NAMES}

    def keep(name, pick=lambda out: out):
        return lambda module, inputs, out: found[name].append(pick(out).flatten(1).float().cpu())

    hooks = [model.backbone.register_forward_hook(keep("backbone", lambda out: out[-1]))]  # (C3, C4, C5) -> C5
    for j, copies in enumerate(model.neck.blocks):
        hooks.append(copies[model.neck.routes[task][j]].register_forward_hook(keep(NECK_BLOCK_NAMES[j])))
    try:
        device = next(model.parameters()).device
        for images in batches:
            model(images.to(device), task=task)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts) for name, parts in found.items()}


def rdm(features):
    """Representation dissimilarity matrix of (N, D) features: z-normalise each feature across the N images, then
    RDM[i, j] = 1 - Pearson correlation of images i and j over the D normalised features. (N, N) float64.
    A feature constant over the images carries no information about them: it becomes 0."""
    x = features.double()
    std = x.std(0, keepdim=True)
    z = (x - x.mean(0, keepdim=True)) / torch.where(std > 0, std, torch.ones_like(std))
    z = z - z.mean(1, keepdim=True)                       # Pearson: centre each image's vector ...
    norm = z.norm(dim=1, keepdim=True)
    z = z / torch.where(norm > 0, norm, torch.ones_like(norm))  # ... and scale it to unit length
    return 1 - z @ z.T


def u_center(gram):
    """U-centering of a symmetric (n, n) matrix, n > 3 (Szekely & Rizzo 2014, the unbiased HSIC's centering):
    U[i, j] = K[i, j] - row_i / (n - 2) - col_j / (n - 2) + total / ((n - 1)(n - 2)) for i != j, U[i, i] = 0,
    where row, col and total are sums of K with its diagonal zeroed."""
    n = gram.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 images, got {n}")
    k = gram.double().clone()
    k.fill_diagonal_(0)
    rows = k.sum(1, keepdim=True)
    u = k - rows / (n - 2) - rows.T / (n - 2) + k.sum() / ((n - 1) * (n - 2))
    return u.fill_diagonal_(0)


def hsic(gram_x, gram_y):
    """Unbiased HSIC of two (n, n) kernel matrices (Song et al. 2012): sum_ij U(K)_ij U(L)_ij / (n (n - 3))."""
    n = gram_x.shape[0]
    return float((u_center(gram_x) * u_center(gram_y)).sum() / (n * (n - 3)))


def cka(gram_x, gram_y):
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with the unbiased HSIC; 1 for two equal matrices.
    (The unbiased HSIC of a matrix with itself can come out at or below 0 for a matrix without structure: then 0.)"""
    xx, yy = hsic(gram_x, gram_x), hsic(gram_y, gram_y)
    if xx <= 0 or yy <= 0:
        return 0.0
    return hsic(gram_x, gram_y) / (xx * yy) ** 0.5


def average_ranks(values):
    """Ranks 1 ... n of a 1-D float64 array, tied values sharing the mean of their ranks (scipy.stats.rankdata)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # where each run of equal values begins
    ends = np.r_[starts[1:], len(values)]
    run_of = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends + 1) / 2)[run_of]                   # mean of the ranks start + 1 ... end
    return ranks


def rank_correlation(x, y):
    """Spearman rank correlation of two equal-length 1-D sequences: the Pearson correlation of their ranks, ties at
    their mean rank; nan when either orders nothing (all its values equal)."""
    rx, ry = average_ranks(np.asarray(x, np.float64)), average_ranks(np.asarray(y, np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norms = np.linalg.norm(rx) * np.linalg.norm(ry)
    return float(rx @ ry / norms) if norms > 0 else float("nan")


def spearman(rdm_x, rdm_y):
    """Spearman rank correlation of the upper triangles (i < j) of two (n, n) RDMs. 1 for two RDMs that order the
    pairs of images alike, whatever their scale. (An RDM whose entries are all equal orders nothing: then 0.)"""
    upper = np.triu_indices(rdm_x.shape[0], 1)
    r = rank_correlation(rdm_x.double().cpu().numpy()[upper], rdm_y.double().cpu().numpy()[upper])
    return 0.0 if np.isnan(r) else r


def linear_cka(x, y):
    """Linear CKA of (n, p) and (n, q) features: the CKA of their Gram matrices X X^T and Y Y^T (unbiased HSIC).
    Invariant to an orthogonal rotation and an isotropic scaling of either feature set."""
    x, y = x.double(), y.double()
    return cka(x @ x.T, y @ y.T)


RDM_MEASURES = {"spearman": spearman, "cka": cka}  # config field rsa_measure (config_checks.RSA_MEASURES)


def similarity_matrices(models, image_sets, show_progress=True, measure="spearman"):
    """Similarity of every pair of models at every layer: {layer: (T, T) array}, entry [a, b] = the `measure`
    ("spearman" or "cka": RDM_MEASURES) of the RDMs of model a and model b, averaged over the image sets (one per
    task: each model sees every task's images).

    models: T single-task models (same backbone and width); image_sets: T iterables of uint8 image batches
    (re-iterable: every model runs over each)."""
    from ..engine.logs import progress

    compare = RDM_MEASURES[measure]
    num = len(models)
    total = {name: np.zeros((num, num)) for name in LAYER_NAMES}
    bar = progress(total=num * len(image_sets), show=show_progress, desc="rsa features")
    for images in image_sets:
        rdms = []
        for model in models:
            rdms.append({name: rdm(f) for name, f in layer_features(model, images).items()})
            bar.update()
        for name in LAYER_NAMES:
            for a in range(num):
                for b in range(a, num):
                    value = 1.0 if a == b else compare(rdms[a][name], rdms[b][name])
                    total[name][a, b] += value
                    total[name][b, a] = total[name][a, b]
    bar.close()
    return {name: matrix / len(image_sets) for name, matrix in total.items()}
