"""The steps of the head search (yolo/tasks/search_head.py drives them): the cached backbone + neck features the
towers search on, the start from a trained detector, and the architecture step (first or second order, with the
latency term).

Cached features: with the backbone and neck frozen (weights and BN statistics), their outputs for an image never
change, so they are computed once per image (as it is, and mirrored) and kept in memory; a search step is then only
the towers' forward and backward, which makes thousands of architecture steps affordable on a CPU.

Second order (DARTS, Liu et al. ICLR 2019, eq. 6-8): the alphas should be good for the weights they will lead to,
w' = w - xi * dL_train/dw, so their gradient is that of L_val(w', alpha):
    dL_val(w', a)/da - xi * d2L_train(w, a)/da dw . dL_val(w', a)/dw'
with the Hessian-vector product taken by central differences around w: w+- = w +- eps * dL_val/dw',
eps = 0.01 / |dL_val/dw'|. The virtual step is plain gradient descent with the weights' current lr as xi.
"""
from contextlib import contextmanager

import torch
from torch import nn

# cached features stay float32 (the default run's 2,000 images, each also mirrored: 1.8 GB at 256 px, 2.8 GB at
# 320 px): in float16, on the tests' small model, the towers' gradients moved by up to 7 % of their largest value
# (rounding flips some of the loss's label assignments), and the search would no longer follow the gradient of the
# model it searches for
CACHE_DTYPE = torch.float32
FD_RADIUS = 0.01  # DARTS's eps * |dL_val/dw'| of the finite-difference Hessian-vector product


class HeadOnFeatures(nn.Module):
    """A head on cached neck features, shaped like the detector for the loss: net(features) -> raw outputs,
    net.decoding -> the detector's decoding (anchors, strides, reach, box bins)."""

    def __init__(self, head, decoding):
        super().__init__()
        self.head, self.decoding = head, decoding

    def forward(self, features):
        return self.head(features)


class FeatureCache:
    """The neck outputs [P3, P4, P5] of a set of images (index i < n: image i as it is; n + i: mirrored, when
    cached with flip) and their targets (class, cx, cy, w, h) in input pixels."""

    def __init__(self, features, targets, device):
        self.features, self.targets, self.device = features, targets, device

    def __len__(self):
        return len(self.targets)

    def batch(self, indices):
        """(features as float32 channels-last on the device, targets (N, 6) with the batch index in front)."""
        features = [f[indices].to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
                    for f in self.features]
        rows = [torch.cat((torch.full((len(self.targets[i]), 1), float(b)), self.targets[i]), 1)
                for b, i in enumerate(indices)]
        return features, torch.cat(rows).to(self.device)

    def batches(self, batch_size, generator):
        """Random batches without end, a new permutation per pass; the last partial batch of a pass is dropped when
        the cache holds more than one batch (as the training loader does)."""
        size = min(batch_size, len(self))
        while True:
            order = torch.randperm(len(self), generator=generator).tolist()
            for start in range(0, len(order) - size + 1, size):
                yield self.batch(order[start:start + size])


@torch.no_grad()
def cache_features(model, batches, device, flip=True, dtype=CACHE_DTYPE, task=0):
    """FeatureCache of `batches` (loader batches: images uint8 (B, 3, S, S), targets (N, 6), ...) through the model's
    backbone and neck, in eval mode (BN running statistics: an image's features do not depend on its batch)."""
    modes = {m: m.training for m in model.modules()}  # restored one by one: a frozen part stays in eval mode
    model.eval()
    views = {False: ([], []), True: ([], [])}
    for batch in batches:
        images, targets = batch[0].to(device), batch[1]
        for mirrored in (False, True) if flip else (False,):
            features = model.pyramids(images.flip(-1) if mirrored else images, [task])[0]
            views[mirrored][0].append([f.to(dtype) for f in features])
            views[mirrored][1].extend(per_image_targets(targets, len(images), images.shape[-1] if mirrored else None))
    for m, training in modes.items():
        m.train(training)
    chunks = views[False][0] + views[True][0]
    features = [torch.cat([chunk[s] for chunk in chunks]).contiguous() for s in range(len(chunks[0]))]
    return FeatureCache(features, views[False][1] + views[True][1], device)


def per_image_targets(targets, num_images, mirror_width=None):
    """(N, 6) batch targets -> one (n, 5) tensor per image; mirror_width: the targets of the mirrored image."""
    targets = targets.detach().cpu().float()
    if mirror_width is not None:
        targets = targets.clone()
        targets[:, 2] = mirror_width - targets[:, 2]
    return [targets[targets[:, 0] == i, 1:] for i in range(num_images)]


def feature_bytes(cache):
    return sum(f.numel() * f.element_size() for f in cache.features)


# ------------------------------------------------------------------------------------------------- the start
def start_from_checkpoint(model, state, source):
    """Load a trained detector's backbone, neck and anchors (all of them: a partial backbone would make features of
    another model) into a search model, and start its prediction convs from the trained head's: the P_s part of
    each conv (and its bias) from the checkpoint's 1x1 head or tower head's prediction conv, the towers' part at
    zero, so the search starts from the trained detector's predictions exactly and the towers add what they learn."""
    own = model.state_dict()
    trunk = [k for k in own if k.startswith(("backbone.", "neck.")) or k == "anchors"]
    bad = [k for k in trunk if k not in state or state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"{source}: its backbone / neck do not fit the search model (e.g. {bad[0]}: "
                         f"{'missing' if bad[0] not in state else tuple(state[bad[0]].shape)}); give the checkpoint "
                         f"of a detector of this config (backbone, width, neck)")
    model.load_state_dict({k: state[k] for k in trunk}, strict=False)
    predict = model.heads[0].predict
    with torch.no_grad():
        for s, conv in enumerate(predict.convs):
            for prefix in (f"heads.0.convs.{s}.", f"heads.0.predict.convs.{s}."):  # 1x1 head, tower head
                weight, bias = state.get(prefix + "weight"), state.get(prefix + "bias")
                c = conv.in_channels - 2 * model.heads[0].proj[s][0].out_channels  # P_s's channels
                if weight is not None and weight.shape[0] == conv.out_channels and weight.shape[1] >= c:
                    conv.weight.zero_()
                    conv.weight[:, :c].copy_(weight[:, :c])
                    conv.bias.copy_(bias)
                    break
            else:
                raise ValueError(f"{source}: its head's prediction conv of stride index {s} does not fit the search "
                                 f"model's ({conv.out_channels} outputs: classes and box_bins must be the checkpoint's)")


# ------------------------------------------------------------------------------------------------- the alpha step
@contextmanager
def frozen(params):
    """No gradients for `params` inside (the backward stops where only they would need it)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def gradients(loss_of, batch, wrt, others):
    """(d loss / d wrt, loss), `others` frozen; a parameter the loss does not reach gets zeros."""
    with frozen(others):
        loss = loss_of(batch)
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(wrt, grads)], loss.detach()


def alpha_gradients(loss_of, alpha_batch, weight_batch, alphas, weights, order=1, xi=0.0, radius=FD_RADIUS):
    """The alphas' gradient (a list like alphas) and the loss on alpha_batch. order 1: of L_val at the current
    weights; order 2: DARTS's unrolled gradient (module docstring), xi the virtual step's lr, radius the finite
    differences' eps * |dL_val/dw'|. loss_of(batch) -> the scalar loss of the current parameters. The weights end
    where they started."""
    if order == 1:
        grads, loss = gradients(loss_of, alpha_batch, alphas, weights)
        return grads, loss.item()
    start = [w.detach().clone() for w in weights]
    train_grads, _ = gradients(loss_of, weight_batch, weights, alphas)
    try:
        with torch.no_grad():
            for w, g in zip(weights, train_grads):
                w.sub_(xi * g)  # the virtual step: w' = w - xi dL_train/dw
        with torch.enable_grad():
            loss = loss_of(alpha_batch)
            found = torch.autograd.grad(loss, alphas + weights, allow_unused=True)
        found = [torch.zeros_like(p) if g is None else g for p, g in zip(alphas + weights, found)]
        val_alpha, val_weights = found[:len(alphas)], found[len(alphas):]
        eps = radius / (torch.sqrt(sum((g * g).sum() for g in val_weights)) + 1e-12)
        sides = []
        for sign in (1.0, -1.0):  # dL_train/dalpha at w +- eps dL_val/dw'
            with torch.no_grad():
                for w, w0, g in zip(weights, start, val_weights):
                    w.copy_(w0 + sign * eps * g)
            sides.append(gradients(loss_of, weight_batch, alphas, weights)[0])
    finally:
        with torch.no_grad():
            for w, w0 in zip(weights, start):
                w.copy_(w0)
    hessian_vector = [(plus - minus) / (2 * eps) for plus, minus in zip(*sides)]
    return [g - xi * h for g, h in zip(val_alpha, hessian_vector)], loss.item()


def alpha_step(loss_of, alpha_batch, weight_batch, alphas, weights, optimizer, order=1, xi=0.0, latency=None):
    """One update of the alphas: alpha_gradients plus, when given, the gradient of latency() (the weighted expected
    latency of the cells, a function of the alphas alone). Returns the loss on alpha_batch."""
    grads, loss = alpha_gradients(loss_of, alpha_batch, weight_batch, alphas, weights, order, xi)
    if latency is not None:
        grads = [g + lg for g, lg in zip(grads, torch.autograd.grad(latency(), alphas))]
    for a, g in zip(alphas, grads):
        a.grad = g
    optimizer.step()
    return loss
