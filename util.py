"""XNOR-Net's ``BinOp``: binarizes the weights of a model's binary layers around forward/backward.

For each binary layer (found by type, see ``model.binconv.BINARY_LAYERS``) the weight has an
input-channel axis and an output-filter axis: ``C_out x C_in x k...`` for a convolution (filter =
slice along dim 0, input axis dim 1) and ``C_in x C_out x k...`` for a transposed convolution
(filter = slice along dim 1, input axis dim 0). ``alpha`` is always one scale per output channel.

Training step::

    with binop.binarized():          # mean-centre, clamp, save, W <- alpha * sign(W)
        loss = criterion(model(x), y)
        loss.backward()
    binop.updateBinaryGradWeight()   # chain rule through alpha * sign(W), on the latent weights
    optimizer.step()

Evaluation runs under ``binop.binarized()`` too. While the weights are binarized, ``state_dict()``
raises, so a checkpoint can only ever hold the latent (real) weights.

``binop.sharpness = k`` (None: the hard sign) makes ``binarization()`` set ``W = alpha * tanh(k W / alpha)``
instead, a soft sign that tends to ``alpha * sign(W)`` as k grows: training with a rising k carries
weights that learnt as real numbers into signs gradually (``--soft_sign_epochs``).
"""
from contextlib import contextmanager

import torch

from model.binconv import BINARY_LAYERS, TRANSPOSED_BINARY_LAYERS


def sign_pm1(w):
    """+1 where w >= 0, -1 elsewhere (never 0), same dtype as ``w``."""
    return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)


class _FilterView:
    """Per-output-filter reductions of one binary layer's weight."""

    def __init__(self, module):
        self.param = module.weight
        transposed = isinstance(module, TRANSPOSED_BINARY_LAYERS)
        self.filter_dim = 1 if transposed else 0
        self.input_dim = 0 if transposed else 1
        shape = self.param.shape
        self.in_channels = shape[self.input_dim]
        self.n = self.param.numel() // shape[self.filter_dim]
        self.other_dims = tuple(d for d in range(self.param.dim()) if d != self.filter_dim)

    def filter_mean(self, t):
        """Mean over each output filter, broadcastable to the weight's shape."""
        return t.mean(dim=self.other_dims, keepdim=True)

    def alpha(self, w):
        """Per-output-filter scale ``mean(|w|)``, broadcastable to the weight's shape."""
        return self.filter_mean(w.abs())


class BinOp:
    """Owns the weights of ``model``'s binary layers and binarizes them XNOR-style."""

    def __init__(self, model):
        modules = [m for m in model.modules() if isinstance(m, BINARY_LAYERS)]
        self.filters = [_FilterView(m) for m in modules]
        self.saved = [None] * len(self.filters)
        self.is_binarized = False
        self.sharpness = None  # None: alpha * sign(W); k > 0: alpha * tanh(k W / alpha)
        for m in modules:
            m.register_state_dict_pre_hook(self._refuse_state_dict_while_binarized)

    def __len__(self):
        return len(self.filters)

    def _refuse_state_dict_while_binarized(self, *args, **kwargs):
        if self.is_binarized:
            raise RuntimeError("the weights are binarized: restore() them before saving a checkpoint "
                               "(checkpoints hold the real latent weights)")

    @torch.no_grad()
    def binarization(self):
        """Mean-centre over the input axis, clamp to [-1, 1], save, then set ``W = alpha * sign(W)``
        (``alpha * tanh(k W / alpha)`` with ``sharpness`` k)."""
        if self.is_binarized:
            raise RuntimeError("BinOp.binarization() called twice without restore()")
        for i, f in enumerate(self.filters):
            w = f.param.data
            w.sub_(w.mean(dim=f.input_dim, keepdim=True)).clamp_(-1.0, 1.0)
            self.saved[i] = w.clone()
            alpha = f.alpha(w)
            if self.sharpness is None:
                w.copy_(sign_pm1(w) * alpha)
            else:
                w.copy_(torch.tanh(w * (self.sharpness / alpha)) * alpha)
        self.is_binarized = True

    @torch.no_grad()
    def restore(self):
        """Put the saved latent weights back, bit for bit."""
        for f, saved in zip(self.filters, self.saved):
            f.param.data.copy_(saved)
        self.saved = [None] * len(self.filters)
        self.is_binarized = False

    @torch.no_grad()
    def updateBinaryGradWeight(self):
        """Rewrite each gradient by the chain rule through ``alpha * sign(W)`` (docs/BINARY.md, step 6):
        ``g' = (g * alpha * 1[|W| <= 1] + sign(W) * mean_filter(g * sign(W))) * (1 - 1/C_in) * n``."""
        if self.is_binarized:
            raise RuntimeError("updateBinaryGradWeight() needs the latent weights: call restore() first")
        for f in self.filters:
            if f.param.grad is None:
                continue
            w, g = f.param.data, f.param.grad
            if self.sharpness is not None:  # d/dW of alpha * tanh(k W / alpha), alpha held fixed
                g.mul_(1 - torch.tanh(w * (self.sharpness / f.alpha(w))).square()).mul_(self.sharpness)
                continue
            s = sign_pm1(w)
            direct = g * f.alpha(w) * (w.abs() <= 1).to(g.dtype)
            through_alpha = s * f.filter_mean(g * s)
            g.copy_((direct + through_alpha) * ((1.0 - 1.0 / f.in_channels) * f.n))

    @contextmanager
    def binarized(self):
        """Run a block with binarized weights; the latent weights are restored even on error."""
        self.binarization()
        try:
            yield
        finally:
            self.restore()
