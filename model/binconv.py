"""Binary layers in XNOR-Net order: BatchNorm -> sign -> convolution with binarized weights.

Each binary layer *is* an ``nn.Conv*`` / ``nn.ConvTranspose*`` (same ``weight`` and ``bias``, so its
state-dict keys match a full-precision layer) with one extra child, ``bn``, the BatchNorm applied to
its input before the sign. The weights are binarized outside the layer by ``util.BinOp``
(``alpha * sign(W)`` per output filter); the layer itself binarizes only its input.

The convolution itself runs on ``W / s`` with ``s = max |W|`` per output filter (detached) and
scales its output by ``s`` afterwards: the same function of ``W`` for any weights, but with
binarized weights (``W / s = +-1``) every sum is an exact integer, so the result is independent of
the order of summation and equals a bit-packed kernel's ``dot * alpha + bias`` bit for bit.

With ``shortcut=True`` the layer adds a real-valued, parameter-free shortcut of its input to its
output (Bi-Real Net, ReActNet): ``y = conv(sign(bn(x))) + S(x)``, where ``S`` matches the shapes by
averaging 2x2 pixels (spatial stride 2), repeating pixels (x2 upsampling of a transposed conv),
repeating channels (C -> kC) or averaging channel groups (kC -> C). Real-valued information then
reaches every layer, which is what makes binary networks train well; ``S`` has no weights, so the
state-dict keys do not change and the packed engine adds the same ``S(x)`` after its kernel.

Padding is **one-padding**: the sign tensor counts as padded with +1, so a bit-packed kernel
(bit 1 = -1) pads with all-zero words and needs no border correction; the output has the size of a
zero-padded convolution's. PyTorch computes it as the zero-padded convolution of the signs plus the
border's own contribution, which does not depend on the input: a one-channel convolution of the
padding ring (1 outside the input, 0 inside) with the filters summed over input channels. Both
terms are exact integers, so the sum is the one-padded convolution bit for bit, without convolving
(and back-propagating through) a padded copy of every sign tensor.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BinActive(torch.autograd.Function):
    """sign(x) with +1 at 0; clipped straight-through gradient (passes where |x| < 1)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x.abs() < 1).to(grad_output.dtype)


def binary_sign(x):
    """+1 where x >= 0, -1 elsewhere, differentiable with the clipped straight-through estimator."""
    return BinActive.apply(x)


def padding_ring(x, padding):
    """``1 x 1 x (n_i + 2 p_i)...`` over the trailing dims ``n_i`` of ``x``: 1 in the ``padding[i]``-wide
    border, 0 over ``x`` itself (``x``'s dtype and device)."""
    sizes = x.shape[x.dim() - len(padding):]
    pads = []
    for p in reversed(padding):
        pads += [p, p]
    return F.pad(x.new_zeros((1, 1, *sizes)), pads, value=1.0)


class ParameterFreeShortcut(nn.Module):
    """``S(x)``: ``B x C_in x T x H x W`` (or ``B x C_in x H x W``) -> the layer's output shape.

    ``stride`` (per trailing dim) > 1 averages blocks of that many pixels, ``upsample`` > 1 repeats
    each pixel that many times, then channels are repeated (``C_out = k C_in``: ``[x, x, ...]``) or
    averaged over the k chunks (``C_in = k C_out``: mean of ``x[:, i*C_out:(i+1)*C_out]``)."""

    def __init__(self, in_channels, out_channels, stride=(1, 1, 1), upsample=(1, 1, 1)):
        super().__init__()
        if out_channels % in_channels and in_channels % out_channels:
            raise ValueError(f"a parameter-free shortcut needs channel counts that divide each other, "
                             f"got {in_channels} -> {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.upsample = tuple(stride), tuple(upsample)

    def forward(self, x):
        if any(s > 1 for s in self.stride):
            pool = F.avg_pool3d if x.dim() == 5 else F.avg_pool2d
            x = pool(x, self.stride)
        for dim, factor in enumerate(self.upsample, start=2):
            if factor > 1:
                x = x.repeat_interleave(factor, dim=dim)
        if self.out_channels > self.in_channels:
            return x.repeat(1, self.out_channels // self.in_channels, *[1] * (x.dim() - 2))
        if self.out_channels < self.in_channels:
            return x.unflatten(1, (self.in_channels // self.out_channels, self.out_channels)).mean(dim=1)
        return x

    def extra_repr(self):
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, upsample={self.upsample}"


_BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _filter_scale(weight, filter_dim):
    """Detached ``max |W|`` per output filter, shaped to broadcast against ``weight``."""
    dims = [d for d in range(weight.dim()) if d != filter_dim]
    scale = weight.detach().abs().amax(dim=dims, keepdim=True)
    return scale.clamp_min(torch.finfo(scale.dtype).tiny)


def _scaled_output(out, scale, bias):
    """``out * scale + bias`` per output channel (``out``: ``B x C_out x ...``), as two roundings."""
    shape = (1, -1) + (1,) * (out.dim() - 2)
    out = out * scale.reshape(shape)
    return out if bias is None else out + bias.reshape(shape)


class _BinaryInput:
    """Mixin: owns ``bn`` over the input channels, turns the input into +-1 signs, and adds the
    optional real-valued ``shortcut`` (a ``ParameterFreeShortcut`` or None) to the output."""

    def _init_input(self, in_channels, dims, shortcut, stride=None, upsample=None):
        self.bn = _BATCHNORMS[dims](in_channels)
        self.shortcut = None
        if shortcut:
            self.shortcut = ParameterFreeShortcut(in_channels, self.out_channels, stride or (1,) * dims,
                                                  upsample or (1,) * dims)

    def binarize_input(self, x):
        return binary_sign(self.bn(x))

    def add_shortcut(self, out, x):
        return out if self.shortcut is None else out + self.shortcut(x)


class _BinConvNd(_BinaryInput):
    def forward(self, x):
        signs = self.binarize_input(x)
        scale = _filter_scale(self.weight, filter_dim=0)
        weight = self.weight / scale
        dot = self._convolve(signs, weight, self.padding)
        if any(self.padding):  # + the +1 border: one input channel, the filters summed over channels
            dot = dot + self._convolve(padding_ring(signs, self.padding), weight.sum(dim=1, keepdim=True), 0)
        return self.add_shortcut(_scaled_output(dot, scale, self.bias), x)


class BinConv2d(_BinConvNd, nn.Conv2d):
    """Binary ``nn.Conv2d``: input ``B x C_in x H x W`` -> ``B x C_out x H' x W'``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, shortcut=False):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self._init_input(in_channels, 2, shortcut, stride=self.stride)

    def _convolve(self, x, weight, padding):
        return F.conv2d(x, weight, None, self.stride, padding, self.dilation)


class BinConv3d(_BinConvNd, nn.Conv3d):
    """Binary ``nn.Conv3d``: input ``B x C_in x T x H x W`` -> ``B x C_out x T' x H' x W'``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, shortcut=False):
        nn.Conv3d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self._init_input(in_channels, 3, shortcut, stride=self.stride)

    def _convolve(self, x, weight, padding):
        return F.conv3d(x, weight, None, self.stride, padding, self.dilation)


class _BinConvTransposeNd(_BinaryInput):
    """One-padded transposed convolution.

    An input tap ``i`` reaches output ``o = i * s - p + k``; the taps that fall outside the input
    are ``i = -q .. -1`` and ``M .. M + q - 1`` with ``q = (K - 1 - p) // s``. Those taps count as +1:
    a ``q``-wide ring of ones around the input with padding ``p + s * q`` has the output size of the
    plain transposed convolution, and its term is added to it.
    """

    def _one_padding(self):
        q = tuple((k - 1 - p) // s for k, p, s in zip(self.kernel_size, self.padding, self.stride))
        inner = tuple(p + s * n for p, s, n in zip(self.padding, self.stride, q))
        return q, inner

    def forward(self, x, output_size=None):
        if output_size is not None:
            raise ValueError("binary transposed convolutions do not take output_size")
        q, inner = self._one_padding()
        signs = self.binarize_input(x)
        scale = _filter_scale(self.weight, filter_dim=1)
        weight = self.weight / scale
        dot = self._transposed_forward(signs, weight, self.padding)
        if any(q):  # + the +1 border: one input channel, the filters summed over input channels
            dot = dot + self._transposed_forward(padding_ring(signs, q), weight.sum(dim=0, keepdim=True), inner)
        return self.add_shortcut(_scaled_output(dot, scale, self.bias), x)


class BinConvTranspose2d(_BinConvTransposeNd, nn.ConvTranspose2d):
    """Binary ``nn.ConvTranspose2d``; weight ``C_in x C_out x kH x kW``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, shortcut=False):
        nn.ConvTranspose2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                                    bias=bias)
        self._init_input(in_channels, 2, shortcut, upsample=self.stride)

    def _transposed_forward(self, x, weight, padding):
        return F.conv_transpose2d(x, weight, None, self.stride, padding, self.output_padding, 1, self.dilation)


class BinConvTranspose3d(_BinConvTransposeNd, nn.ConvTranspose3d):
    """Binary ``nn.ConvTranspose3d``; weight ``C_in x C_out x kT x kH x kW``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, shortcut=False):
        nn.ConvTranspose3d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                                    bias=bias)
        self._init_input(in_channels, 3, shortcut, upsample=self.stride)

    def _transposed_forward(self, x, weight, padding):
        return F.conv_transpose3d(x, weight, None, self.stride, padding, self.output_padding, 1, self.dilation)


BINARY_LAYERS = (BinConv2d, BinConv3d, BinConvTranspose2d, BinConvTranspose3d)
TRANSPOSED_BINARY_LAYERS = (BinConvTranspose2d, BinConvTranspose3d)
