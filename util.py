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

from model.binconv import BINARY_LAYERS, TRANSPOSED_BINARY_LAYERS, filter_scale


class _FilterView:
    """One binary layer's weight: its per-output-filter reductions, and two buffers of its shape that
    every binarization reuses (``binarized``: ``alpha * sign(W)``, what the layer's weight holds while
    binarized; ``unit``: ``W / s``, which the layer convolves), so that no step allocates them anew."""

    def __init__(self, module):
        self.module = module
        self.param = module.weight
        transposed = isinstance(module, TRANSPOSED_BINARY_LAYERS)
        self.filter_dim = 1 if transposed else 0
        self.input_dim = 0 if transposed else 1
        shape = self.param.shape
        self.in_channels = shape[self.input_dim]
        self.n = self.param.numel() // shape[self.filter_dim]
        self.other_dims = tuple(d for d in range(self.param.dim()) if d != self.filter_dim)
        self.binarized = self.unit = None

    def filter_mean(self, t):
        """Mean over each output filter, broadcastable to the weight's shape."""
        return t.mean(dim=self.other_dims, keepdim=True)

    def alpha(self, w):
        """Per-output-filter scale ``mean(|w|)``, broadcastable to the weight's shape."""
        return self.filter_mean(torch.abs(w, out=self.buffers(w)[0]))

    def buffers(self, w):
        """``(binarized, unit)``, allocated like ``w`` on first use (and again if ``w`` moved)."""
        if self.binarized is None or self.binarized.shape != w.shape or self.binarized.dtype != w.dtype \
                or self.binarized.device != w.device:
            self.binarized, self.unit = torch.empty_like(w), torch.empty_like(w)
        return self.binarized, self.unit

    def sign_into(self, w, out):
        """``out`` = +1 where ``w >= 0`` (-0.0 included), -1 elsewhere: the sign bit of ``w + 0`` given to 1."""
        return torch.copysign(torch.ones((), dtype=w.dtype, device=w.device), torch.add(w, 0.0, out=out), out=out)


class BinOp:
    """Owns the weights of ``model``'s binary layers and binarizes them XNOR-style."""

    def __init__(self, model):
        modules = [m for m in model.modules() if isinstance(m, BINARY_LAYERS)]
        self.filters = [_FilterView(m) for m in modules]
        self.saved = [None] * len(self.filters)
        self.alphas = [None] * len(self.filters)  # each layer's alpha of the last binarization
        self.binarized_sharpness = None  # the sharpness of the last binarization
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
        """Mean-centre over the input axis and clamp to [-1, 1] (in place: these are the latent weights
        from now on), keep them, and give the layer ``alpha * sign(W)`` (``alpha * tanh(k W / alpha)``
        with ``sharpness`` k) in their place; the latent tensors are swapped back by ``restore``, not
        copied. Each layer also gets ``binarized_weight = (W / s, s)``, ``s = max |W|`` per filter."""
        if self.is_binarized:
            raise RuntimeError("BinOp.binarization() called twice without restore()")
        for i, f in enumerate(self.filters):
            w = f.param.data
            w.sub_(w.mean(dim=f.input_dim, keepdim=True)).clamp_(-1.0, 1.0)
            alpha = f.alpha(w)
            binarized, unit = f.buffers(w)
            if self.sharpness is None:  # W / s = sign(W) (for any filter whose alpha is a normal float)
                torch.mul(f.sign_into(w, unit), alpha, out=binarized)
                scale = alpha.clamp_min(torch.finfo(alpha.dtype).tiny)
            else:
                torch.mul(w, self.sharpness / alpha, out=binarized).tanh_().mul_(alpha)
                scale = filter_scale(binarized, f.filter_dim)
                torch.div(binarized, scale, out=unit)
            self.saved[i], self.alphas[i] = w, alpha
            f.param.data = binarized
            f.module.binarized_weight = (unit, scale)
        self.is_binarized, self.binarized_sharpness = True, self.sharpness

    @torch.no_grad()
    def restore(self):
        """Put the saved latent weights back, bit for bit."""
        for f, saved in zip(self.filters, self.saved):
            f.param.data = saved
            f.module.binarized_weight = None
        self.saved = [None] * len(self.filters)
        self.is_binarized = False

    @torch.no_grad()
    def updateBinaryGradWeight(self):
        """Rewrite each gradient by the chain rule through ``alpha * sign(W)`` (docs/BINARY.md, step 6):
        ``g' = (g * alpha * 1[|W| <= 1] + sign(W) * mean_filter(g * sign(W))) * (1 - 1/C_in) * n``.
        The latent weights were clamped to [-1, 1] by ``binarization``, so ``1[|W| <= 1]`` is 1."""
        if self.is_binarized:
            raise RuntimeError("updateBinaryGradWeight() needs the latent weights: call restore() first")
        for f, alpha in zip(self.filters, self.alphas):
            if f.param.grad is None:
                continue
            w, g = f.param.data, f.param.grad
            scratch, sign = f.buffers(w)
            fresh = alpha is not None and self.binarized_sharpness is None  # sign holds sign(W) already
            alpha = f.alpha(w) if alpha is None else alpha
            if self.sharpness is not None:  # d/dW of alpha * tanh(k W / alpha), alpha held fixed
                slope = torch.mul(w, self.sharpness / alpha, out=scratch).tanh_().square_().neg_().add_(1)
                g.mul_(slope).mul_(self.sharpness)
                continue
            if not fresh:
                f.sign_into(w, sign)
            through_alpha = torch.mul(sign, f.filter_mean(torch.mul(g, sign, out=scratch)), out=scratch)
            g.mul_(alpha).add_(through_alpha).mul_((1.0 - 1.0 / f.in_channels) * f.n)
        self.alphas = [None] * len(self.filters)

    @contextmanager
    def binarized(self):
        """Run a block with binarized weights; the latent weights are restored even on error."""
        self.binarization()
        try:
            yield
        finally:
            self.restore()
