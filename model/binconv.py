"""Binary layers in XNOR-Net order: BatchNorm -> sign -> convolution with binarized weights.

Each binary layer *is* an ``nn.Conv*`` / ``nn.ConvTranspose*`` (same ``weight`` and ``bias``, so its
state-dict keys match a full-precision layer) with one extra child, ``bn``, the BatchNorm applied to
its input before the sign. The weights are binarized outside the layer by ``util.BinOp``
(``alpha * sign(W)`` per output filter); the layer itself binarizes only its input.

The convolution itself runs on ``W / s`` with ``s = max |W|`` per output filter (detached) and
scales its output by ``s`` afterwards: the same function of ``W`` for any weights, but with
binarized weights (``W / s = +-1``) every sum is an exact integer, so the result is independent of
the order of summation and equals a bit-packed kernel's ``dot * alpha + bias`` bit for bit.

Padding is **one-padding**: the sign tensor is padded with +1 and the convolution runs without
padding. A bit-packed kernel (bit 1 = -1) then pads with all-zero words and needs no border
correction. The convolution still has the output size of a zero-padded one.
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


def _one_pad(x, padding):
    """Pad the trailing ``len(padding)`` dims of ``x`` by ``padding[i]`` on both sides with +1."""
    if not any(padding):
        return x
    pads = []
    for p in reversed(padding):
        pads += [p, p]
    return F.pad(x, pads, value=1.0)


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
    """Mixin: owns ``bn`` over the input channels and turns the input into +-1 signs."""

    def _init_input_bn(self, in_channels, dims):
        self.bn = _BATCHNORMS[dims](in_channels)

    def binarize_input(self, x):
        return binary_sign(self.bn(x))


class _BinConvNd(_BinaryInput):
    def forward(self, x):
        signs = _one_pad(self.binarize_input(x), self.padding)
        scale = _filter_scale(self.weight, filter_dim=0)
        return _scaled_output(self._conv_forward(signs, self.weight / scale, None), scale, self.bias)


class BinConv2d(_BinConvNd, nn.Conv2d):
    """Binary ``nn.Conv2d``: input ``B x C_in x H x W`` -> ``B x C_out x H' x W'``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self._init_input_bn(in_channels, 2)

    def _conv_forward(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


class BinConv3d(_BinConvNd, nn.Conv3d):
    """Binary ``nn.Conv3d``: input ``B x C_in x T x H x W`` -> ``B x C_out x T' x H' x W'``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        nn.Conv3d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self._init_input_bn(in_channels, 3)

    def _conv_forward(self, x, weight, bias):
        return F.conv3d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


class _BinConvTransposeNd(_BinaryInput):
    """One-padded transposed convolution.

    An input tap ``i`` reaches output ``o = i * s - p + k``; the taps that fall outside the input
    are ``i = -q .. -1`` and ``M .. M + q - 1`` with ``q = (K - 1 - p) // s``. Padding the sign
    tensor by ``q`` ones on both sides and using padding ``p + s * q`` gives those taps the value +1
    and leaves the output size unchanged.
    """

    def _one_padding(self):
        q = tuple((k - 1 - p) // s for k, p, s in zip(self.kernel_size, self.padding, self.stride))
        inner = tuple(p + s * n for p, s, n in zip(self.padding, self.stride, q))
        return q, inner

    def forward(self, x, output_size=None):
        if output_size is not None:
            raise ValueError("binary transposed convolutions do not take output_size")
        q, inner = self._one_padding()
        signs = _one_pad(self.binarize_input(x), q)
        scale = _filter_scale(self.weight, filter_dim=1)
        return _scaled_output(self._transposed_forward(signs, self.weight / scale, inner), scale, self.bias)


class BinConvTranspose2d(_BinConvTransposeNd, nn.ConvTranspose2d):
    """Binary ``nn.ConvTranspose2d``; weight ``C_in x C_out x kH x kW``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        nn.ConvTranspose2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                                    bias=bias)
        self._init_input_bn(in_channels, 2)

    def _transposed_forward(self, x, weight, padding):
        return F.conv_transpose2d(x, weight, None, self.stride, padding,
                                  self.output_padding, self.groups, self.dilation)


class BinConvTranspose3d(_BinConvTransposeNd, nn.ConvTranspose3d):
    """Binary ``nn.ConvTranspose3d``; weight ``C_in x C_out x kT x kH x kW``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        nn.ConvTranspose3d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                                    bias=bias)
        self._init_input_bn(in_channels, 3)

    def _transposed_forward(self, x, weight, padding):
        return F.conv_transpose3d(x, weight, None, self.stride, padding,
                                  self.output_padding, self.groups, self.dilation)


BINARY_LAYERS = (BinConv2d, BinConv3d, BinConvTranspose2d, BinConvTranspose3d)
TRANSPOSED_BINARY_LAYERS = (BinConvTranspose2d, BinConvTranspose3d)
