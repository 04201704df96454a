"""Binary layers in XNOR-Net order: BatchNorm -> sign -> convolution with binarized weights.

Each binary layer *is* an ``nn.Conv*`` / ``nn.ConvTranspose*`` (same ``weight`` and ``bias``, so its
state-dict keys match a full-precision layer) with one extra child, ``bn``, the BatchNorm applied to
its input before the sign. The weights are binarized outside the layer by ``util.BinOp``
(``alpha * sign(W)`` per output filter); the layer itself binarizes only its input.

The convolution itself runs on ``W / s`` with ``s = max |W|`` per output filter (detached) and
scales its output by ``s`` afterwards: the same function of ``W`` for any weights, but with
binarized weights (``W / s = +-1``) every sum is an exact integer, so the result is independent of
the order of summation and equals a bit-packed kernel's ``dot * alpha + bias`` bit for bit.
``BinOp`` hands each layer its ``W / s`` and ``s`` (``binarized_weight``) so that they are computed once.

**Memory.** One autograd function (``_BinaryConvolution``) runs BatchNorm -> sign -> convolution and
keeps for backward only the layer's input (which the previous layer's activation keeps anyway), the
batch statistics and ``W / s``; backward recomputes the BatchNorm output, the signs and the
straight-through mask from them. A decoder layer takes its input as channel parts (upsampled
features, skip connection) and never keeps their concatenation. The float32 outputs and gradients
are those of the plain composition ``conv(binary_sign(bn(x)))``, bit for bit, and a binary model
keeps fewer bytes for backward than full-precision FLAVR (``benchmarks/bench_train.py``). Under
autocast the convolutions run in autocast's dtype and their outputs stay in it.

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
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from myutils import compute_dtype

_CONVOLUTION = torch.ops.aten.convolution.default
_CONVOLUTION_BACKWARD = torch.ops.aten.convolution_backward.default
_BATCH_NORM_BACKWARD = torch.ops.aten.native_batch_norm_backward.default
_STRAIGHT_THROUGH = torch.ops.aten.hardtanh_backward.default  # the gradient where -1 < y < 1, 0 elsewhere


class BinActive(torch.autograd.Function):
    """sign(x) with +1 at 0; clipped straight-through gradient (passes where |x| < 1). The definition
    that the binary layers compute (fused with their BatchNorm and convolution, see the module docstring)."""

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


# ---------------------------------------------------------------- the input BatchNorm, forward and backward

def _momentum(bn):
    """``nn.BatchNorm``'s bookkeeping of a training forward: count the batch, return the running
    statistics' update factor (``momentum``, or the cumulative average's 1/n when it is None)."""
    if not (bn.training and bn.track_running_stats):
        return 0.0 if bn.momentum is None else bn.momentum
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


def _synchronized(bn):
    """Whether ``bn`` normalises with the statistics of every process's batch: in training, with a
    process group running, for a SyncBatchNorm or a BatchNorm that ``synchronize_binary_batch_norms``
    marked (PyTorch's DistributedDataParallel refuses SyncBatchNorm modules on the CPU)."""
    marked = isinstance(bn, nn.SyncBatchNorm) or getattr(bn, "synchronized", False)
    return marked and bn.training and dist.is_available() and dist.is_initialized()


def batch_norm_forward(bn, x):
    """``bn(x)`` as ``nn.BatchNorm`` computes it (same kernel, same running-statistics update), plus
    what backward needs: ``(y, mode, statistics)``, mode "local" (batch statistics of this process:
    saved mean and inverse std), "synchronized" (``_synchronized``: mean, variance, inverse std and
    sample count over all processes) or "eval" (running mean and variance)."""
    momentum = _momentum(bn)
    if _synchronized(bn):
        return _synchronized_forward(bn, x, momentum)
    if not bn.training and bn.running_mean is not None:
        y = torch.native_batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, False, 0.0, bn.eps)[0]
        return y, "eval", (bn.running_mean, bn.running_var)
    running = (bn.running_mean, bn.running_var) if bn.track_running_stats else (None, None)
    y, mean, invstd = torch.native_batch_norm(x, bn.weight, bn.bias, *running, True, momentum, bn.eps)
    return y, "local", (mean, invstd)


def batch_norm_recompute(bn, x, mode, statistics):
    """The ``y`` that ``batch_norm_forward`` returned, recomputed from ``x`` by the same kernel."""
    if mode == "local":
        return torch.native_batch_norm(x, bn.weight, bn.bias, None, None, True, 0.0, bn.eps)[0]
    mean, var = statistics[:2]
    return torch.native_batch_norm(x, bn.weight, bn.bias, mean, var, False, 0.0, bn.eps)[0]


def batch_norm_backward(bn, grad_y, x, mode, statistics, mask):
    """Gradients (x, weight, bias) of ``batch_norm_forward``; ``mask``: which ones are needed."""
    if mode == "synchronized":
        return _synchronized_backward(bn, grad_y, x, statistics, mask)
    train = mode == "local"
    running = (None, None) if train else statistics
    saved = statistics if train else (None, None)
    return _BATCH_NORM_BACKWARD(grad_y, x, bn.weight, *running, *saved, train, bn.eps, list(mask))


def _reduced_dims(x):
    return [0] + list(range(2, x.dim()))


def _synchronized_forward(bn, x, momentum):
    """Batch statistics over every process (SyncBatchNorm's): each process's count, mean and biased
    variance are gathered and combined; running statistics take the unbiased variance."""
    dims = _reduced_dims(x)
    var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
    local = torch.stack([torch.full_like(mean, x.numel() // x.shape[1]), mean, var])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(bn.process_group))]
    dist.all_gather(gathered, local, group=bn.process_group)
    counts, means, variances = torch.stack(gathered).unbind(dim=1)
    total = counts.sum(dim=0)
    mean = (counts * means).sum(dim=0) / total
    var = (counts * (variances + (means - mean).square())).sum(dim=0) / total
    if bn.track_running_stats:
        bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        bn.running_var.mul_(1 - momentum).add_(var * total / (total - 1).clamp_min(1), alpha=momentum)
    y = torch.native_batch_norm(x, bn.weight, bn.bias, mean, var, False, 0.0, bn.eps)[0]
    return y, "synchronized", (mean, var, torch.rsqrt(var + bn.eps), total)


def _synchronized_backward(bn, grad_y, x, statistics, mask):
    """SyncBatchNorm's backward: the input gradient subtracts the means, over every process, of the
    output gradient and of its product with the normalised input; weight and bias gradients are this
    process's (DistributedDataParallel averages them). In float32, with one temporary the size of ``x`` (the
    normalised input, made into the input gradient in place) and ``grad_y`` in float32 one sample at a time: on
    GPUs, where every binary layer's BatchNorm is synchronized, float32 copies of the whole batch would raise the
    peak memory of a step under AMP."""
    mean, _, invstd, total = statistics
    dims, shape = _reduced_dims(x), (1, -1) + (1,) * (x.dim() - 2)
    x_hat = x.to(torch.float32, copy=True).sub_(mean.reshape(shape)).mul_(invstd.reshape(shape))
    sample_dims = [d - 1 for d in dims[1:]]
    sums = torch.zeros(2, x.shape[1], dtype=torch.float32, device=x.device)  # of grad_y, of grad_y * x_hat
    for n in range(x.shape[0]):
        grad_n = grad_y[n].float()
        sums[0] += grad_n.sum(dim=sample_dims)
        sums[1] += (grad_n * x_hat[n]).sum(dim=sample_dims)
    grad_weight, grad_bias = sums[1].clone() if mask[1] else None, sums[0].clone() if mask[2] else None
    grad_x = None
    if mask[0]:
        dist.all_reduce(sums, group=bn.process_group)
        mean_grad, mean_grad_x_hat = (sums / total).reshape(2, *shape).unbind(0)
        grad_x = x_hat.mul_(mean_grad_x_hat).neg_().sub_(mean_grad)
        for n in range(x.shape[0]):
            grad_x[n] += grad_y[n]
        grad_x = grad_x.mul_((bn.weight * invstd).reshape(shape)).to(x.dtype)
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------- the binary convolution

_BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def filter_scale(weight, filter_dim):
    """``max |W|`` per output filter (at least the smallest normal float), shaped to broadcast against
    ``weight``; ``weight`` is read, never differentiated."""
    dims = [d for d in range(weight.dim()) if d != filter_dim]
    scale = weight.detach().abs().amax(dim=dims, keepdim=True)
    return scale.clamp_min(torch.finfo(scale.dtype).tiny)


def _scaled_output(out, scale, bias):
    """``out * scale + bias`` per output channel (``out``: ``B x C_out x ...``, a fresh tensor, scaled in
    place), as two roundings in ``out``'s dtype (under autocast the scale does not promote the
    activations to float32)."""
    shape = (1, -1) + (1,) * (out.dim() - 2)
    out = out.mul_(scale.reshape(shape).to(out.dtype))
    return out if bias is None else out.add_(bias.reshape(shape).to(out.dtype))


def _signs(y, dtype, out=None):
    """+1 where ``y >= 0`` (-0.0 included), -1 elsewhere, in ``dtype`` (into ``out``: ``y`` itself
    may be given), turning ``y``'s -0.0 into +0.0: the sign bit of ``y + 0`` given to 1. Float-only
    operations, several times faster on the CPU than comparing and selecting."""
    one = torch.ones((), dtype=y.dtype, device=y.device)
    signs = torch.copysign(one, y.add_(0.0), out=out) if out is not None else torch.copysign(one, y.add_(0.0))
    return signs.to(dtype)


class _BinaryConvolution(torch.autograd.Function):
    """``dot = conv(sign(bn(x)), U)`` of a binary layer, one-padded, with ``U = W / s`` (+-1 once
    binarized); the gradient reaching ``U`` is passed on to ``W`` divided by ``s``.

    Keeps for backward ``x`` itself (its ``parts``, as they came), ``U``, ``s`` and the BatchNorm's
    statistics; backward recomputes the BatchNorm output (the same kernel on the same input: the same
    values) and from it the signs and the straight-through mask. In float32 the outputs and gradients
    are those of ``binary_sign(layer.bn(x))`` convolved with ``W / s`` by autograd, bit for bit."""

    @staticmethod
    def forward(ctx, layer, weight, unit, scale, bn_weight, bn_bias, *parts):
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        ctx.layer, ctx.dtype, ctx.weight_dtype = layer, compute_dtype(x), weight.dtype
        ctx.sizes = [p.shape[1] for p in parts]
        with torch.autocast(x.device.type, enabled=False):
            y, ctx.mode, statistics = batch_norm_forward(layer.bn, x)
            dot = layer.binary_dot(_signs(y, ctx.dtype, out=y), unit.to(ctx.dtype))
        ctx.save_for_backward(unit, scale, bn_weight, bn_bias, *statistics, *parts)
        ctx.n_statistics = len(statistics)
        return dot

    @staticmethod
    def backward(ctx, grad_dot):
        unit, scale, _, _, *rest = ctx.saved_tensors
        statistics, parts = rest[:ctx.n_statistics], rest[ctx.n_statistics:]
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        layer, needs = ctx.layer, ctx.needs_input_grad
        grad_x = grad_bn_weight = grad_bn_bias = None
        with torch.autocast(x.device.type, enabled=False):
            y = batch_norm_recompute(layer.bn, x, ctx.mode, statistics)
            grad_signs, grad_unit = layer.binary_dot_backward(grad_dot.to(ctx.dtype), _signs(y, ctx.dtype),
                                                              unit.to(ctx.dtype), any(needs[4:]), needs[1])
            if grad_signs is not None:
                grad_y = _STRAIGHT_THROUGH(grad_signs, y, -1.0, 1.0)
                grad_x, grad_bn_weight, grad_bn_bias = batch_norm_backward(
                    layer.bn, grad_y, x, ctx.mode, statistics, (any(needs[6:]),) + needs[4:6])
        grad_parts = (None,) * len(parts) if grad_x is None else torch.split(grad_x, ctx.sizes, dim=1)
        grad_weight = None if grad_unit is None else grad_unit.to(ctx.weight_dtype).div_(scale)
        return (None, grad_weight, None, None, grad_bn_weight, grad_bn_bias, *grad_parts)


class _BinaryInput:
    """Mixin: owns ``bn`` over the input channels and the optional real-valued ``shortcut`` (a
    ``ParameterFreeShortcut`` or None), and runs the binary convolution. ``forward(x)``: ``x`` is a
    tensor, or a list of tensors whose channel-wise concatenation is the input (a decoder's join,
    never concatenated for backward). ``binarized_weight``: ``(W / s, s)`` set by ``BinOp`` while it
    has binarized the weights, else None (the layer computes them)."""

    accepts_channel_parts = True
    binarized_weight = None

    def _init_input(self, in_channels, dims, shortcut, stride=None, upsample=None):
        self.bn = _BATCHNORMS[dims](in_channels)
        self.shortcut = None
        if shortcut:
            self.shortcut = ParameterFreeShortcut(in_channels, self.out_channels, stride or (1,) * dims,
                                                  upsample or (1,) * dims)
        ring_size, ring_padding = self.one_padding()
        self._ring_size = ring_size if any(ring_size) else None
        self._geometry = self._convolution_arguments(self.padding)
        self._ring_geometry = self._convolution_arguments(ring_padding)

    def _convolution_arguments(self, padding):
        """``aten.convolution``'s arguments after input, weight and bias, at ``padding``."""
        output_padding = list(self.output_padding) if self.transposed else [0] * len(padding)
        return list(self.stride), list(padding), list(self.dilation), self.transposed, output_padding, 1

    def forward(self, x, output_size=None):
        if output_size is not None:
            raise ValueError("binary convolutions do not take output_size")
        parts = tuple(x) if isinstance(x, (list, tuple)) else (x,)
        unit, scale = self.binarized_weight or self.unit_weight()
        dot = _BinaryConvolution.apply(self, self.weight, unit, scale, self.bn.weight, self.bn.bias, *parts)
        out = _scaled_output(dot, scale, self.bias)
        if self.shortcut is None:
            return out
        return out + self.shortcut(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))

    def unit_weight(self):
        """``(W / s, s)`` with ``s = filter_scale(W)``: +-1 once the weights are binarized."""
        scale = filter_scale(self.weight, self.filter_dim)
        return self.weight.detach() / scale, scale

    def binary_dot(self, signs, unit):
        """The one-padded convolution of ``signs`` (+-1) with ``unit``: the zero-padded convolution plus
        the +1 border's term (the padding ring, one channel, convolved with the filters summed over
        input channels)."""
        dot = _CONVOLUTION(signs, unit, None, *self._geometry)
        if self._ring_size is None:
            return dot
        summed = unit.sum(dim=self.input_dim, keepdim=True)
        return dot.add_(_CONVOLUTION(padding_ring(signs, self._ring_size), summed, None, *self._ring_geometry))

    def binary_dot_backward(self, grad_dot, signs, unit, need_signs, need_unit):
        """Gradients of ``binary_dot`` with respect to ``signs`` and ``unit`` (None where not needed)."""
        grad_signs, grad_unit, _ = _CONVOLUTION_BACKWARD(grad_dot, signs, unit, None, *self._geometry,
                                                         [need_signs, need_unit, False])
        if self._ring_size is not None and need_unit:
            summed = unit.sum(dim=self.input_dim, keepdim=True)
            _, grad_summed, _ = _CONVOLUTION_BACKWARD(grad_dot.sum(dim=0, keepdim=True),
                                                      padding_ring(signs, self._ring_size), summed, None,
                                                      *self._ring_geometry, [False, True, False])
            grad_unit = grad_unit.add_(grad_summed)
        return grad_signs, grad_unit


class _BinConvNd(_BinaryInput):
    """A binary convolution: filters along dim 0 of the weight, input channels along dim 1."""

    filter_dim, input_dim = 0, 1

    def one_padding(self):
        """(width of the +1 ring around the input, padding of the ring's convolution) per dim."""
        return tuple(self.padding), (0,) * len(self.padding)


class BinConv2d(_BinConvNd, nn.Conv2d):
    """Binary ``nn.Conv2d``: input ``B x C_in x H x W`` -> ``B x C_out x H' x W'``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, shortcut=False):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self._init_input(in_channels, 2, shortcut, stride=self.stride)


class BinConv3d(_BinConvNd, nn.Conv3d):
    """Binary ``nn.Conv3d``: input ``B x C_in x T x H x W`` -> ``B x C_out x T' x H' x W'``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, shortcut=False):
        nn.Conv3d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self._init_input(in_channels, 3, shortcut, stride=self.stride)


class _BinConvTransposeNd(_BinaryInput):
    """A one-padded binary transposed convolution: filters along dim 1 of the weight, input channels
    along dim 0.

    An input tap ``i`` reaches output ``o = i * s - p + k``; the taps that fall outside the input
    are ``i = -q .. -1`` and ``M .. M + q - 1`` with ``q = (K - 1 - p) // s``. Those taps count as +1:
    a ``q``-wide ring of ones around the input with padding ``p + s * q`` has the output size of the
    plain transposed convolution, and its term is added to it.
    """

    filter_dim, input_dim = 1, 0

    def one_padding(self):
        """(width ``q`` of the +1 ring around the input, padding ``p + s * q`` of the ring's convolution)."""
        q = tuple((k - 1 - p) // s for k, p, s in zip(self.kernel_size, self.padding, self.stride))
        inner = tuple(p + s * n for p, s, n in zip(self.padding, self.stride, q))
        return q, inner


class BinConvTranspose2d(_BinConvTransposeNd, nn.ConvTranspose2d):
    """Binary ``nn.ConvTranspose2d``; weight ``C_in x C_out x kH x kW``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, shortcut=False):
        nn.ConvTranspose2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                                    bias=bias)
        self._init_input(in_channels, 2, shortcut, upsample=self.stride)


class BinConvTranspose3d(_BinConvTransposeNd, nn.ConvTranspose3d):
    """Binary ``nn.ConvTranspose3d``; weight ``C_in x C_out x kT x kH x kW``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, shortcut=False):
        nn.ConvTranspose3d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                                    bias=bias)
        self._init_input(in_channels, 3, shortcut, upsample=self.stride)


BINARY_LAYERS = (BinConv2d, BinConv3d, BinConvTranspose2d, BinConvTranspose3d)
TRANSPOSED_BINARY_LAYERS = (BinConvTranspose2d, BinConvTranspose3d)


def synchronize_binary_batch_norms(model, process_group=None):
    """Mark every binary layer's input BatchNorm as synchronized over ``process_group`` (None: all
    processes): in training the layer then normalises with the statistics of every process's batch
    (``_synchronized``), on any device, because it computes them itself. Modules and keys unchanged."""
    for module in model.modules():
        if isinstance(module, BINARY_LAYERS):
            module.bn.synchronized, module.bn.process_group = True, process_group
