"""Binary FLAVR on the bit-packed kernels: conversion from a trained model, build, load.

The packed model (PackedFLAVR) holds binary FLAVR's own module tree (model/unet3d.py, same
state-dict keys, same input/output convention) in which every binary layer (input
BatchNorm -> sign -> binary conv) becomes a PackedBinaryConv:
  * the input BatchNorm and the sign become one per-channel test fma(x, scale, shift) >= 0
    that reproduces PyTorch's eval BatchNorm arithmetic bit for bit,
  * the weights are sign bits packed along the input channels,
  * alpha and the conv bias are the per-channel multiplier and bias of the kernel's
    epilogue, and a ReLU right after the conv runs in the kernel too,
  * a real-valued shortcut (model option `shortcuts`) is the same parameter-free module,
    added to the kernel's output in place.
Everything real-valued (stem, feature gating, shortcuts, joins, BatchNorms after convs,
outconv) keeps its PyTorch module, its state-dict key and its NCDHW layout, so it computes
exactly what the simulated binary model computes. The forward is written for inference:
gating, shortcuts and activations work in place, decoder concatenations are never
materialised (the next binary conv packs the parts), feature_fuse runs as one GEMM on
the decoder output (after the last sign: only float rounding changes, ~1e-7 relative), and
the warp head's upsampling, warping and blending as one pass (ops.warp_blend, on the CPU:
float rounding of the sampling positions, within 1e-4).
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine import ops
from engine.packed_format import PackedFileError, read_packed
from model import build_model, describe_config
from model.files import first_misfit
from model.binconv import BINARY_LAYERS, TRANSPOSED_BINARY_LAYERS
from model.motion_prior import FLOW_SCALE, output_times
from model.unet3d import HEAD_CHANNELS, DecoderConv, FeatureGating, UNet3D

TRANSPOSED_GEOMETRY = {"kernel_size": (3, 4, 4), "stride": (1, 2, 2), "padding": (1, 1, 1)}


class PackedBinaryConv(nn.Module):
    """BN -> sign -> binary Conv3d / ConvTranspose3d -> `dot * multiplier + bias` [-> ReLU].

    Input `B x C_in x T x H x W` float (or a list of tensors to concatenate along C);
    output a contiguous float `B x C_out x T' x H' x W'`. Conv: kernel 3 (one-padding 1)
    or 1, stride (1, s, s). Transposed: kernel (3,4,4), stride (1,2,2), padding (1,1,1),
    output `T x 2H x 2W`.
    Buffers: bits `C_out x taps x words` (int64 sign bits, 1 = -1), multiplier and bias
    `C_out`, sign_scale and sign_shift `C_in` (sign = +1 where fma(x, scale, shift) >= 0).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, transposed, device=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.transposed = kernel_size, tuple(stride), transposed
        self.negative_slope = None  # 0.0 once a following ReLU is fused
        self.shortcut = None  # the binary layer's ParameterFreeShortcut, if it has one
        taps = 48 if transposed else kernel_size ** 3
        self.register_buffer("bits", torch.zeros(out_channels, taps, ops.words_for(in_channels), dtype=torch.int64, device=device))
        for name, size in (("multiplier", out_channels), ("bias", out_channels), ("sign_scale", in_channels), ("sign_shift", in_channels)):
            self.register_buffer(name, torch.zeros(size, device=device))
        self.register_buffer("kernel_weight", torch.zeros(0, dtype=torch.int64, device=device), persistent=False)

    @classmethod
    def like(cls, layer):
        """An empty packed layer with the geometry of binary `layer` (checked)."""
        if isinstance(layer, TRANSPOSED_BINARY_LAYERS):
            geometry = {k: tuple(getattr(layer, k)) for k in TRANSPOSED_GEOMETRY}
            if geometry != TRANSPOSED_GEOMETRY:
                raise ValueError(f"packed transposed convs need {TRANSPOSED_GEOMETRY}, got {geometry}")
            packed = cls(layer.in_channels, layer.out_channels, 4, layer.stride, True, layer.weight.device)
            packed.shortcut = layer.shortcut
            return packed
        k = layer.kernel_size
        if k not in ((3, 3, 3), (1, 1, 1)) or tuple(layer.padding) != (k[0] // 2,) * 3 or layer.stride[0] != 1:
            raise ValueError(f"packed convs are 3x3x3 (padding 1) or 1x1x1 (padding 0) with temporal stride 1, "
                             f"got kernel {k}, padding {layer.padding}, stride {layer.stride}")
        packed = cls(layer.in_channels, layer.out_channels, k[0], layer.stride, False, layer.weight.device)
        packed.shortcut = layer.shortcut
        return packed

    @torch.no_grad()
    def copy_from(self, layer):
        """Take sign bits, alpha, bias and the input BatchNorm's sign test from a binarized binary layer."""
        weight = layer.weight.detach()
        oriented = weight.transpose(0, 1) if self.transposed else weight  # C_out x C_in x k...
        alpha = oriented.abs().flatten(1).amax(dim=1)
        if not torch.equal(oriented.abs(), alpha.view(-1, *[1] * (oriented.dim() - 1)).expand_as(oriented)):
            raise ValueError("the binary weights are not binarized (alpha * sign(W)): load the model with "
                             "model_loader.load_model or run BinOp.binarization() first")
        self.bits.copy_(ops.pack_weight_bits(oriented))
        self.multiplier.copy_(alpha)
        self.bias.copy_(layer.bias.detach() if layer.bias is not None else torch.zeros_like(alpha))
        bn = layer.bn
        if bn.running_mean is None:
            raise ValueError("the input BatchNorm tracks no running statistics; cannot fold it into a threshold")
        scale, shift = ops.batchnorm_sign_affine(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
        self.sign_scale.copy_(scale)
        self.sign_shift.copy_(shift)

    def refresh(self):
        """Rebuild the kernels' weight layout from `bits` (after loading or converting)."""
        layout = ops.conv_transpose_kernel_layout if self.transposed else ops.conv_kernel_layout
        self.kernel_weight = layout(self.bits)

    def forward(self, x):
        """x: a tensor, or a list of tensors whose channel-wise concatenation is the input."""
        packed = ops.pack_signs(x, self.sign_scale, self.sign_shift)
        if self.transposed:
            out = ops.binary_conv_transpose3d(packed, self.kernel_weight, self.in_channels, self.multiplier,
                                              self.bias, self.negative_slope)
        else:
            out = ops.binary_conv3d(packed, self.kernel_weight, self.in_channels, self.stride, self.multiplier,
                                    self.bias, self.negative_slope)
        if self.shortcut is not None:
            out.add_(self.shortcut(torch.cat(x, dim=1) if isinstance(x, list) else x))
        return out

    def extra_repr(self):
        kind = "transposed (3,4,4)" if self.transposed else f"kernel {self.kernel_size}"
        act = "" if self.negative_slope is None else f", negative_slope={self.negative_slope}"
        return f"{self.in_channels}, {self.out_channels}, {kind}, stride={self.stride}{act}"


def _gate(gating, x):
    """FeatureGating's factor sigmoid(conv1x1x1(mean of x over T, H, W)), `B x C x 1 x 1 x 1`."""
    return gating.attn_layer(gating.pool(x))


def _decoder_stage(sequence, x, negative_slope=0.2):
    """A decoder stage's nn.Sequential (binary conv, gating, optional BatchNorm/upsampling)
    followed by the decoder's LeakyReLU; x may be a list of tensors to concatenate."""
    modules = list(sequence)
    for index, module in enumerate(modules):
        if isinstance(module, FeatureGating):
            if index == len(modules) - 1:
                return ops.gate_leaky_relu_(x, _gate(module, x), negative_slope)
            x = x.mul_(_gate(module, x))
        elif isinstance(module, PackedBinaryConv):
            x = module(x)
        else:
            x = module(torch.cat(x, dim=1) if isinstance(x, list) else x)
    return F.leaky_relu_(x, negative_slope)


def _fuse_frames(conv, x):
    """feature_fuse's 1x1 Conv2d on cat(unbind(x, T)) as one GEMM per sample, no copy of x:
    x[b] is already a contiguous `(C*T) x (H*W)` matrix with rows in (c, t) order, so the
    weight's columns (in (t, c) order) are reordered instead.

    x `B x C x T x H x W`, conv weight `O x (T*C) x 1 x 1`, no bias -> `B x O x H x W`."""
    batch, channels, frames, height, width = x.shape
    weight = conv.weight.view(conv.out_channels, frames, channels).transpose(1, 2).reshape(conv.out_channels, -1)
    out = ops.empty_output((batch, conv.out_channels, height, width), x)
    for b in range(batch):
        torch.mm(weight, x[b].view(channels * frames, height * width), out=out[b].view(conv.out_channels, -1))
    return out


class PackedFLAVR(nn.Module):
    """Binary FLAVR with bit-packed binary convs: a list of `n_inputs` frames `B x 3 x H x W`
    in [0, 1] -> a list of `n_outputs` frames (H, W multiples of 8), inference only."""

    def __init__(self, net, config):
        super().__init__()
        self.config = dict(config)
        self.n_inputs, self.n_outputs, self.joinType = net.n_inputs, net.n_outputs, net.joinType
        self.head, self.motion_prior, self.network_scale = net.head, net.motion_prior, net.network_scale
        self.warp_interpolation, self.prior_dead_zone = net.warp_interpolation, net.prior_dead_zone
        self.encoder, self.decoder = net.encoder, net.decoder
        self.feature_fuse, self.outconv = net.feature_fuse, net.outconv

    _check_inputs = UNet3D._check_inputs  # binary FLAVR's input checks
    prior_motion = UNet3D.prior_motion  # the parameter-free motion prior and what the encoder sees
    network_input = UNet3D.network_input
    network_size, network_frame = UNet3D.network_size, UNet3D.network_frame
    full_resolution, with_flow_gains = UNet3D.full_resolution, UNet3D.with_flow_gains  # the head's channels -> frames
    output_frames = UNet3D.output_frames

    def frames_from_head(self, out, frames, mean, motion=None):
        """``UNet3D.frames_from_head``; the warp head's frames on the CPU each in one pass (``ops.warp_blend``:
        upsampling, the prior's flows, warping and blending; 2-3x faster than the seven passes, the same to float
        rounding)."""
        before, after = frames[len(frames) // 2 - 1], frames[len(frames) // 2]
        tensors = [out, before, after] + ([] if motion is None else [motion])
        if self.head != "warp" or not ops.warp_blend_runs(None, *tensors):
            return UNet3D.frames_from_head(self, out, frames, mean, motion)
        heads = torch.split(self.with_flow_gains(out, before.shape[-2:]), HEAD_CHANNELS["warp"], dim=1)
        return [ops.warp_blend(head, before, after, t, motion, FLOW_SCALE, self.warp_interpolation)
                for head, t in zip(heads, output_times(self.n_outputs))]

    def _block(self, block, x):
        shortcut = x if block.downsample is None else block.downsample(x)
        y = block.conv2(block.conv1(x))
        if isinstance(block.relu, nn.ReLU):
            return ops.gate_add_relu_(y, _gate(block.fg, y), shortcut)
        return block.relu(y.mul_(_gate(block.fg, y)).add_(shortcut))

    def _join(self, x, skip):
        if self.joinType == "concat":
            return [x, skip]
        return x.add_(skip) if self.joinType == "add" else x

    def _fuse(self, x):
        layers = self.feature_fuse.conv
        if len(layers) == 1:
            return _fuse_frames(layers[0], x)
        return self.feature_fuse(x)

    @torch.inference_mode()
    def forward(self, frames, motion=None, *, network_frames=None):
        """As ``UNet3D.forward``, ``motion`` and ``network_frames`` included."""
        try:
            return self._forward(frames, motion, network_frames)
        finally:
            ops.release_output_blocks()  # the large outputs' recycled blocks, kept only within a forward

    def _forward(self, frames, motion, network_frames):
        self._check_inputs(frames)
        motion = self.prior_motion(frames, motion)
        x = self.network_input(frames, motion, network_frames)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        skips = [self.encoder.stem(x - mean)]
        for layer in (self.encoder.layer1, self.encoder.layer2, self.encoder.layer3, self.encoder.layer4):
            h = skips[-1]
            for block in layer:
                h = self._block(block, h)
            skips.append(h)
        x = skips.pop()
        for stage in self.decoder:
            x = _decoder_stage(stage.conv if isinstance(stage, DecoderConv) else stage.upconv, x)
            if skips:
                x = self._join(x, skips.pop())
        fused = F.leaky_relu_(self._fuse(x), 0.2)
        return self.frames_from_head(self.outconv(fused), frames, mean, motion)


def _replace_binary_layers(model, fill):
    """Swap every binary layer of `model` (in place) for a PackedBinaryConv, fusing a ReLU
    that directly follows it. `fill`: copy the values (the model holds binarized weights);
    otherwise only the shapes (a meta skeleton)."""
    for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for index, layer in enumerate(list(sequence)):
            if not isinstance(layer, BINARY_LAYERS):
                continue
            packed = PackedBinaryConv.like(layer)
            if fill:
                packed.copy_from(layer)
            after = index + 1
            if after < len(sequence) and isinstance(sequence[after], nn.ReLU) and packed.shortcut is None:
                packed.negative_slope = 0.0
                sequence[after] = nn.Identity()
            sequence[index] = packed
    left = [name for name, m in model.named_modules() if isinstance(m, BINARY_LAYERS)]
    if left:
        raise ValueError(f"binary layers outside an nn.Sequential cannot be packed: {', '.join(left)}")


def _refresh(model):
    for module in model.modules():
        if isinstance(module, PackedBinaryConv):
            module.refresh()
    return model


def pack_binary_model(model):
    """A binary FLAVR (eval mode, weights binarized by BinOp, e.g. from model_loader.load_model)
    -> a new packed model on CPU. The input model is left untouched."""
    if getattr(model, "config", {}).get("arch") != "binary":
        raise ValueError("only binary FLAVR models (config arch 'binary') can be packed")
    binop = model.__dict__.pop("binop", None)  # BinOp holds the latent weights: do not copy it
    try:
        packed = copy.deepcopy(model).cpu().eval()
    finally:
        if binop is not None:
            model.binop = binop
    _replace_binary_layers(packed, fill=True)
    return _refresh(PackedFLAVR(packed, model.config))


def build_packed_model(config, state_dict, device="cpu"):
    """The packed model a configuration describes, with tensors from a packed file."""
    try:
        with torch.device("meta"):  # shapes only: no fp32 weights are allocated
            model = build_model(config, log_summary=False)
    except (ValueError, KeyError, TypeError) as error:
        raise PackedFileError(f"the packed file's model configuration is invalid ({error})") from None
    _replace_binary_layers(model, fill=False)
    model = PackedFLAVR(model, config)
    misfit = first_misfit(model.state_dict(), state_dict)  # on the meta device: nothing allocated yet
    if misfit:
        raise PackedFileError(f"the packed tensors do not fit {describe_config(config)} ({misfit}): the file's "
                              "configuration and its tensors disagree")
    model = model.to_empty(device="cpu")
    model.load_state_dict(state_dict, strict=True)
    return _refresh(model).eval().to(device)


def load_packed(path, device="cpu"):
    """Load a packed model file (.bfl) -> (model in eval mode on `device`, description)."""
    config, tensors, metadata = read_packed(path)
    model = build_packed_model(config, tensors, device)
    source = f", from {metadata['source']}" if metadata.get("source") else ""
    return model, f"{describe_config(config)}, packed 1-bit{source}"
