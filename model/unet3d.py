"""FLAVR's 3D U-Net, built once and parameterised by a convolution policy.

``ConvPolicy`` says which class builds each convolution role. The full-precision model
(``model/FLAVR_arch.py``) and the binary model (``model/binFLAVR_arch.py``) are this network with
different policies, so their state-dict keys coincide wherever a weight has the same role.
Module names follow FLAVR exactly (``encoder.layer1.0.conv1.0.weight``, ``decoder.1.upconv.0.weight``,
``feature_fuse.conv.0.weight``, ``outconv.1.weight``...), so FLAVR's release checkpoints load
with ``strict=True``.

Two options beyond FLAVR (FLAVR's release: ``head="frames"``, ``activation="relu"``):

* ``head`` says what the last layer (``outconv``) predicts for each output frame at time t:
  ``frames``: the frame minus the inputs' mean (FLAVR); ``residual``: a correction to the linear
  blend of the two middle inputs; ``warp``: two flows (pixels), a blend mask and a correction, so
  the frame is ``m * warp(I_a, f_a) + (1 - m) * warp(I_b, f_b) + r`` (backward warping,
  ``warp_interpolation`` "bilinear" or "bicubic"; bicubic keeps the detail bilinear resampling blurs).
  The ``residual`` and ``warp`` heads are zero-initialised: a new model starts exactly at the blend.
* ``motion_prior="matching"`` (``warp`` head only) adds a parameter-free motion estimate to the
  head's flows: symmetric block matching between the two middle frames over an image pyramid
  (``matching_flow``). A new model then starts at motion-compensated blending rather than at the
  plain blend, and the network learns a correction to the matched flows. ``"aligned"`` also shows
  the network the two middle frames warped to the middle time by those flows (the outer two as
  they are), so what is left to correct is visible in its input. ``"dis"`` takes the motion from
  OpenCV's DIS optical flow instead (``dis_flow``); ``"dis_aligned"`` is ``"dis"`` with aligned inputs;
  ``"dis_fused"`` takes per pixel DIS's forward or backward flow, whichever aligns the frames (``dis_fused_flow``);
  ``"dis_fused_still"`` also weighs no motion where both are short (``dis_fused_still_flow``);
  ``"dis_quadratic"`` is ``"dis_fused_still"`` for a point that accelerates: both middle frames are sampled where
  quadratic motion through the outer inputs puts it (``quadratic_motion``; its motion is ``B x 4 x H x W``).
* ``prior_dead_zone=d`` (pixels) takes the prior's half motion below d as none, whole from 2d
  (``still_motion``): sub-pixel flow in flat or unchanged regions is mostly noise, and warping by it
  only resamples what standing still would copy.
* ``activation="rprelu"`` replaces the ReLUs of the encoder blocks by ReActNet's learnable RPReLU.
* ``network_scale=s`` (``residual`` and ``warp`` heads) runs the U-Net on the frames downscaled s times
  (antialiased bilinear, sides rounded to multiples of 8) and upsamples its head bilinearly to the
  frames' size (flows rescaled to full-resolution pixels); the motion prior and the warping stay at
  full resolution. s = 2 costs a quarter of the network's time: the prior carries the motion, the
  network corrects smooth quantities (flows, mask) that need no full resolution.
"""
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.motion_prior import (ALIGNED_PRIORS, MOTION_PRIORS, WARP_INTERPOLATIONS, backward_warp, find_motion,
                                linear_blend, output_times, prior_flows, still_motion, warp_blend, warp_flows)
from myutils import FRAME_MULTIPLE, compute_dtype

BLOCK_LAYERS = {"unet_18": (2, 2, 2, 2), "unet_34": (3, 4, 6, 3)}
STAGE_WIDTHS = (1, 2, 4, 8)  # encoder stage channels = base_channels * width (FLAVR: 64 ... 512)
JOIN_TYPES = ("concat", "add", "none")
UP_MODES = ("transpose", "upsample")


@dataclass(frozen=True)
class ConvPolicy:
    """Which class builds each convolution role (each takes ``in, out, kernel, stride, padding,
    bias=``), and the shape of the real-valued gating convs (``UNet3D`` sets ``gate_reduction``)."""
    block_conv: type       # 3x3x3 convs of the encoder's basic blocks
    downsample_conv: type  # 1x1x1 shortcut convs where channels or stride change
    decoder_conv: type     # 3x3x3 decoder convs
    decoder_upconv: type   # (3,4,4) stride (1,2,2) transposed decoder convs
    gate_reduction: int = 1  # gating convs: 1 = FLAVR's C x C; r > 1 = rank gate_rank(C, r) factors
    activation: str = "relu"  # the encoder blocks' activations: a key of ACTIVATIONS


class RPReLU(nn.Module):
    """ReActNet's RPReLU, per channel c: ``y = PReLU_c(x - gamma_c) + zeta_c`` on ``B x C x ...``.

    ``gamma`` (``shift_in``) and ``zeta`` (``shift_out``) start at 0 and the slope at 0.25, so the
    shape of the activation (where it bends, how much negative signal passes) is learnt."""

    def __init__(self, channels, slope=0.25):
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), slope))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return F.prelu(x - self.shift_in.view(shape), self.slope) + self.shift_out.view(shape)


ACTIVATIONS = {"relu": lambda channels: nn.ReLU(inplace=True), "rprelu": RPReLU}


HEAD_CHANNELS = {"frames": 3, "residual": 3, "warp": 8}  # outconv channels per output frame


def gate_rank(channels, reduction):
    """Rank of a factorised gate: ``channels // reduction``, but at least 8 (or ``channels``)."""
    return max(channels // reduction, min(channels, 8))


class FeatureGating(nn.Module):
    """Gating ``x * sigmoid(W @ avgpool(x) + b)``, x ``B x C x T x H x W``, W real-valued.

    ``reduction`` 1: W is FLAVR's 1x1x1 C x C conv (key ``attn_layer.0``). ``reduction`` r > 1:
    W = B @ A is a rank-k factorisation, k = ``gate_rank(C, r)``: a bias-free 1x1x1 conv
    C -> k (``attn_layer.0``) then a 1x1x1 conv k -> C with the bias (``attn_layer.1``), about
    2C^2/r instead of C^2 weights; ``builder.transfer_weights`` fills it from a C x C gate by
    truncated SVD.
    """

    def __init__(self, channels, reduction=1):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        if reduction == 1:
            convs = [nn.Conv3d(channels, channels, 1, bias=True)]
        else:
            rank = gate_rank(channels, reduction)
            convs = [nn.Conv3d(channels, rank, 1, bias=False), nn.Conv3d(rank, channels, 1, bias=True)]
        self.attn_layer = nn.Sequential(*convs, nn.Sigmoid())

    def forward(self, x):
        return x * self.attn_layer(self.pool(x))


def _maybe_bn(channels, batchnorm):
    return [nn.BatchNorm3d(channels)] if batchnorm else []


class BasicBlock(nn.Module):
    """R3D basic block with feature gating; spatial stride ``stride``, temporal stride 1."""

    def __init__(self, policy, in_ch, out_ch, stride, bias, batchnorm):
        super().__init__()
        st = (1, stride, stride)
        activation = ACTIVATIONS[policy.activation]
        self.conv1 = nn.Sequential(policy.block_conv(in_ch, out_ch, 3, st, 1, bias=bias),
                                   *_maybe_bn(out_ch, batchnorm), activation(out_ch))
        self.conv2 = nn.Sequential(policy.block_conv(out_ch, out_ch, 3, 1, 1, bias=bias),
                                   *_maybe_bn(out_ch, batchnorm))
        self.fg = FeatureGating(out_ch, policy.gate_reduction)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(policy.downsample_conv(in_ch, out_ch, 1, st, 0, bias=False),
                                            *_maybe_bn(out_ch, batchnorm))
        self.relu = activation(out_ch)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.fg(self.conv2(self.conv1(x)))
        return self.relu(out + shortcut)


class Encoder(nn.Module):
    """Video ResNet: ``B x 3 x T x H x W`` -> (x0, x1, x2, x3, x4) at H/2, H/2, H/4, H/8, H/8."""

    def __init__(self, policy, block, bias, batchnorm, base_channels=64):
        super().__init__()
        in_ch = base_channels
        self.stem = nn.Sequential(nn.Conv3d(3, in_ch, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=bias),
                                  *_maybe_bn(in_ch, batchnorm), nn.ReLU(inplace=True))
        encoder_channels = [base_channels * w for w in STAGE_WIDTHS]
        for index, (n_blocks, out_ch) in enumerate(zip(BLOCK_LAYERS[block], encoder_channels)):
            stride = 2 if index in (1, 2) else 1
            blocks = []
            for b in range(n_blocks):
                blocks.append(BasicBlock(policy, in_ch, out_ch, stride if b == 0 else 1, bias, batchnorm))
                in_ch = out_ch
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))

    def forward(self, x):
        x0 = self.stem(x)
        x1 = self.layer1(x0)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return x0, x1, x2, x3, x4


def _run_on_parts(sequence, x):
    """Run ``sequence`` on ``x``, a tensor or a list of tensors joined along channels: binary layers
    take the list itself (``accepts_channel_parts``: their backward keeps the parts, never the
    concatenation), others the concatenation."""
    if isinstance(x, list) and not getattr(sequence[0], "accepts_channel_parts", False):
        x = torch.cat(x, dim=1)
    return sequence(x)


class DecoderConv(nn.Module):
    """3x3x3 conv + gating (key ``conv``), resolution kept; input a tensor or channel parts (a list)."""

    def __init__(self, policy, in_ch, out_ch, batchnorm):
        super().__init__()
        self.conv = nn.Sequential(policy.decoder_conv(in_ch, out_ch, 3, 1, 1, bias=True),
                                  FeatureGating(out_ch, policy.gate_reduction), *_maybe_bn(out_ch, batchnorm))

    def forward(self, x):
        return _run_on_parts(self.conv, x)


class DecoderUpConv(nn.Module):
    """x(1,2,2) upsampling + gating (key ``upconv``): a transposed conv, or trilinear + 1x1x1; input a
    tensor or channel parts (a list)."""

    def __init__(self, policy, in_ch, out_ch, upmode, batchnorm):
        super().__init__()
        if upmode == "transpose":
            up = [policy.decoder_upconv(in_ch, out_ch, (3, 4, 4), (1, 2, 2), (1, 1, 1), bias=True)]
        else:
            up = [nn.Upsample(scale_factor=(1, 2, 2), mode="trilinear", align_corners=False),
                  policy.decoder_conv(in_ch, out_ch, 1, 1, 0, bias=True)]
        self.upconv = nn.Sequential(*up, FeatureGating(out_ch, policy.gate_reduction), *_maybe_bn(out_ch, batchnorm))

    def forward(self, x):
        return _run_on_parts(self.upconv, x)


class _FramesToChannelsConv(torch.autograd.Function):
    """``conv2d(cat(unbind(x, dim=2), dim=1), weight)`` for ``x`` ``B x C x T x H x W`` and a 1x1 weight
    ``C_out x C*T x 1 x 1``, saving ``x`` itself (which the preceding activation saves anyway) instead
    of its frames-as-channels copy, rebuilt in backward: the same operations, so the same values.
    Under autocast the convolution runs in autocast's dtype."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.dtype = compute_dtype(x)
        ctx.save_for_backward(x, weight)
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(torch.cat(torch.unbind(x, dim=2), dim=1).to(ctx.dtype), weight.to(ctx.dtype))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stacked = torch.cat(torch.unbind(x, dim=2), dim=1).to(ctx.dtype)
        grad_stacked, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad.to(ctx.dtype), stacked, weight.to(ctx.dtype), None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
        grad_x = None
        if grad_stacked is not None:
            grad_x = torch.stack(torch.split(grad_stacked, x.shape[1], dim=1), dim=2).to(x.dtype)
        return grad_x, None if grad_weight is None else grad_weight.to(weight.dtype)


class FuseConv(nn.Module):
    """1x1 Conv2d without bias (key ``conv``) over the frames stacked as channels:
    ``B x C x T x H x W`` -> ``B x C_out x H x W``."""

    def __init__(self, in_ch, out_ch, batchnorm):
        super().__init__()
        layers = [nn.Conv2d(in_ch, out_ch, 1, bias=False)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_ch))
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        out = _FramesToChannelsConv.apply(x, self.conv[0].weight)
        return out if len(self.conv) == 1 else self.conv[1](out)


class UNet3D(nn.Module):
    """FLAVR: a list of ``n_inputs`` frames ``B x 3 x H x W`` in [0, 1] -> a list of ``n_outputs``
    frames ``B x 3 x H x W`` between the middle two inputs. H and W must be multiples of 8.
    ``base_channels`` (FLAVR: 64) scales every width; smaller values give narrow variants for
    quick experiments and tests. ``gate_reduction`` r > 1 factorises every gate to rank ~C/r
    (see ``FeatureGating``); 1 is FLAVR's gating. ``head``: "frames" (FLAVR), "residual" or "warp"
    (see the module docstring). ``activation``: "relu" (FLAVR) or "rprelu" in the encoder blocks.
    ``motion_prior``: "none" (FLAVR), "matching", "aligned", "dis", "dis_aligned", "dis_fused", "dis_fused_still" or
    "dis_quadratic" (warp head only, see ``find_motion``).
    ``network_scale``: the U-Net's input is the frames downscaled this many times; ``warp_interpolation``
    and ``prior_dead_zone``: how the warp head resamples and which motion its prior ignores (module docstring)."""

    def __init__(self, policy, block="unet_18", n_inputs=4, n_outputs=1, batchnorm=False,
                 joinType="concat", upmode="transpose", base_channels=64, gate_reduction=1,
                 head="frames", activation="relu", motion_prior="none", network_scale=1,
                 warp_interpolation="bilinear", prior_dead_zone=0.0):
        super().__init__()
        _check_choice("block", block, tuple(BLOCK_LAYERS))
        _check_choice("joinType", joinType, JOIN_TYPES)
        _check_choice("upmode", upmode, UP_MODES)
        _check_choice("activation", activation, tuple(ACTIVATIONS))
        _check_choice("head", head, tuple(HEAD_CHANNELS))
        _check_choice("motion_prior", motion_prior, MOTION_PRIORS)
        _check_choice("warp_interpolation", warp_interpolation, WARP_INTERPOLATIONS)
        if not prior_dead_zone >= 0:
            raise ValueError(f"prior_dead_zone must be 0 or more pixels, got {prior_dead_zone!r}")
        if motion_prior != "none" and head != "warp":
            raise ValueError(f"motion_prior={motion_prior!r} needs head='warp' (got head={head!r})")
        if not isinstance(network_scale, int) or network_scale < 1:
            raise ValueError(f"network_scale must be an integer >= 1, got {network_scale!r}")
        if network_scale > 1 and head == "frames":
            raise ValueError("network_scale > 1 needs head='warp' or 'residual' (the frames head would output "
                             "the downscaled frames)")
        if not isinstance(gate_reduction, int) or gate_reduction < 1:
            raise ValueError(f"gate_reduction must be an integer >= 1, got {gate_reduction!r}")
        policy = replace(policy, gate_reduction=gate_reduction, activation=activation)
        self.n_inputs, self.n_outputs, self.joinType = n_inputs, n_outputs, joinType
        self.head, self.motion_prior, self.network_scale = head, motion_prior, network_scale
        self.warp_interpolation, self.prior_dead_zone = warp_interpolation, float(prior_dead_zone)
        growth = 2 if joinType == "concat" else 1
        self.encoder = Encoder(policy, block, n_outputs > 1, batchnorm, base_channels)
        nf = [base_channels * w for w in reversed(STAGE_WIDTHS)]  # 512, 256, 128, 64
        self.decoder = nn.Sequential(
            DecoderConv(policy, nf[0], nf[1], batchnorm),
            DecoderUpConv(policy, nf[1] * growth, nf[2], upmode, batchnorm),
            DecoderUpConv(policy, nf[2] * growth, nf[3], upmode, batchnorm),
            DecoderConv(policy, nf[3] * growth, nf[3], batchnorm),
            DecoderUpConv(policy, nf[3] * growth, nf[3], upmode, batchnorm),
        )
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.feature_fuse = FuseConv(nf[3] * n_inputs, nf[3], batchnorm)
        self.outconv = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(nf[3], HEAD_CHANNELS[head] * n_outputs, 7, bias=True))
        _init_weights(self)
        if head != "frames":  # start exactly at the blend
            nn.init.zeros_(self.outconv[1].weight)
            nn.init.zeros_(self.outconv[1].bias)

    def _join(self, x, skip):
        """The next decoder stage's input: ``[x, skip]`` (channel parts, concatenated by the stage) for
        "concat", ``x + skip`` for "add", ``x`` for "none"."""
        if self.joinType == "concat":
            return [x, skip]
        if self.joinType == "add":
            return x + skip
        return x

    def forward(self, frames, motion=None, with_flows=False, *, network_frames=None):
        """``frames``: ``n_inputs`` tensors ``B x 3 x H x W`` in [0, 1] -> ``n_outputs`` such frames.
        ``motion`` (``B x 2 x H x W`` pixels, ``B x 4 x H x W`` for a quadratic prior; optional): the prior's motion
        (``find_motion``) found elsewhere, e.g.
        on a larger crop in training (``--prior_context``); by default ``prior_motion(frames)``.
        ``with_flows`` (warp head): (frames, the flows they were warped with: ``output_flows``).
        ``network_frames`` (optional): ``network_frame`` of each of ``frames`` (``n_inputs`` tensors ``B x 3 x h x w``),
        made once per frame by a caller that shows a frame to several windows (ignored by the aligned priors)."""
        self._check_inputs(frames)
        motion = self.prior_motion(frames, motion)
        x = self.network_input(frames, motion, network_frames)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        x0, x1, x2, x3, x4 = self.encoder(x - mean)
        dx = self._join(self.lrelu(self.decoder[0](x4)), x3)
        dx = self._join(self.lrelu(self.decoder[1](dx)), x2)
        dx = self._join(self.lrelu(self.decoder[2](dx)), x1)
        dx = self._join(self.lrelu(self.decoder[3](dx)), x0)
        dx = self.lrelu(self.decoder[4](dx))
        fused = self.lrelu(self.feature_fuse(dx))
        out = self.outconv(fused)
        if not with_flows:
            return self.frames_from_head(out, frames, mean, motion)
        out = self.full_resolution(out, frames)
        return self.output_frames(out, frames, mean, motion), self.output_flows(out, motion)

    def prior_motion(self, frames, given=None):
        """The motion its prior finds in the frames (``find_motion``: the half motion between the two middle frames,
        with a quadratic prior's shift), or ``given``, when the model has a motion prior, less what
        ``prior_dead_zone`` takes as none; else None."""
        if self.motion_prior == "none":
            return None
        if given is None:
            given = find_motion(self.motion_prior, frames)
        return still_motion(given, self.prior_dead_zone)

    def network_input(self, frames, motion, network_frames=None):
        """What the encoder sees (``B x 3 x T x h x w``): the input frames, or for ``motion_prior``
        "aligned" and "dis_aligned" the inputs with the two middle frames warped to the middle time by ``motion``; at
        ``network_size`` (the frames' size unless ``network_scale`` > 1): ``network_frames`` (T tensors
        ``B x 3 x h x w``, ``network_frame``'s) stacked where given."""
        if self.motion_prior not in ALIGNED_PRIORS:
            if network_frames is None:
                return torch.stack([self.network_frame(frame) for frame in frames], dim=2)
            if tuple(network_frames[0].shape[-2:]) != self.network_size(*frames[0].shape[-2:]):
                raise ValueError(f"network frames of {tuple(network_frames[0].shape[-2:])} for frames of "
                                 f"{tuple(frames[0].shape[-2:])}: give network_frame of each frame")
            return torch.stack(network_frames, dim=2)
        middle = len(frames) // 2
        aligned = list(frames)
        aligned[middle - 1] = backward_warp(frames[middle - 1], -motion, self.warp_interpolation)
        aligned[middle] = backward_warp(frames[middle], motion, self.warp_interpolation)
        return torch.stack([self.network_frame(frame) for frame in aligned], dim=2)

    def network_size(self, height, width):
        """The U-Net's frame size for frames of ``height`` x ``width``: each side over ``network_scale``,
        rounded to a multiple of ``FRAME_MULTIPLE`` (at least one)."""
        def side(length):
            return max(FRAME_MULTIPLE, round(length / self.network_scale / FRAME_MULTIPLE) * FRAME_MULTIPLE)
        return side(height), side(width)

    def network_frame(self, frame):
        """A frame ``B x 3 x H x W`` as the U-Net sees it, ``B x 3 x h x w`` at ``network_size`` (antialiased
        bilinear; the frame itself at scale 1). ``network_input`` stacks the T of a window (each resized before
        stacking: no full-size copy)."""
        size = self.network_size(*frame.shape[-2:])
        if size == tuple(frame.shape[-2:]):
            return frame
        return F.interpolate(frame, size=size, mode="bilinear", align_corners=False, antialias=True)

    def frames_from_head(self, out, frames, mean, motion=None):
        """The output frames from the head's ``out`` at the network's size (``B x channels*n_outputs x h x w``):
        ``output_frames`` of ``full_resolution``. (The packed engine runs the warp head's in one pass.)"""
        return self.output_frames(self.full_resolution(out, frames), frames, mean, motion)

    def full_resolution(self, out, frames):
        """The head's output ``B x channels*n_outputs x h x w`` at the frames' size ``H x W``: ``with_flow_gains``,
        then upsampled bilinearly."""
        size = tuple(frames[0].shape[-2:])
        if tuple(out.shape[-2:]) == size:
            return out
        return F.interpolate(self.with_flow_gains(out, size), size=size, mode="bilinear", align_corners=False)

    def with_flow_gains(self, out, size):
        """The head's output ``B x channels*n_outputs x h x w`` with the warp head's flows (channels 0-3 of each 8)
        multiplied by W/w (x) and H/h (y), for frames of ``size`` (H, W): in their pixels (before upsampling, which
        is linear: the same up to rounding, on a 16th of the pixels at 1/4 scale)."""
        if self.head != "warp" or tuple(out.shape[-2:]) == tuple(size):
            return out
        per_frame = out.new_ones(HEAD_CHANNELS["warp"])  # filled on the device: no host-to-device copy
        per_frame[0:4:2], per_frame[1:4:2] = size[1] / out.shape[-1], size[0] / out.shape[-2]
        return out * per_frame.repeat(self.n_outputs).view(1, -1, 1, 1)

    def output_frames(self, out, frames, mean, motion=None):
        """The output frames from the head's ``out`` (``B x channels*n_outputs x H x W``), the input
        frames, their mean (``B x 3 x 1 x 1 x 1``) and the prior's ``motion`` (``prior_motion``), as
        the ``head`` option says."""
        heads = torch.split(out, HEAD_CHANNELS[self.head], dim=1)
        if self.head == "residual":
            return [c + base for c, base in zip(heads, linear_blend(frames, self.n_outputs))]
        if self.head == "warp":
            before, after = frames[len(frames) // 2 - 1], frames[len(frames) // 2]
            both = torch.cat([before, after])  # warped together, once for every output frame
            return [warp_blend(h, before, after, t, None if motion is None else prior_flows(motion, t),
                               self.warp_interpolation, both) for h, t in zip(heads, output_times(self.n_outputs))]
        mean = mean.squeeze(2)
        return [c + mean for c in heads]

    def output_flows(self, out, motion=None):
        """The warp head's flows per output frame (``B x 4 x H x W`` pixels, ``warp_flows``: to the frame
        before, then after, the prior's included) from its full-resolution ``out``."""
        if self.head != "warp":
            raise ValueError(f"the {self.head} head has no flows: only the warp head warps")
        heads = torch.split(out, HEAD_CHANNELS["warp"], dim=1)
        return [warp_flows(h, None if motion is None else prior_flows(motion, t))
                for h, t in zip(heads, output_times(self.n_outputs))]

    def _check_inputs(self, frames):
        """Check the number of input frames and that their size is a multiple of ``FRAME_MULTIPLE``."""
        if len(frames) != self.n_inputs:
            raise ValueError(f"the model takes {self.n_inputs} input frames, got {len(frames)}")
        h, w = frames[0].shape[-2:]
        if h % FRAME_MULTIPLE or w % FRAME_MULTIPLE:
            raise ValueError(f"frame size {h}x{w} is not a multiple of {FRAME_MULTIPLE}: pad the frames "
                             "(e.g. myutils.pad_to_multiple) and crop the outputs back")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _init_weights(model):
    """FLAVR's initialisation: Kaiming normal (fan_out, relu) for Conv3d weights, zero biases; nothing for a
    model built on the meta device (shapes only, its tensors loaded later: a second of imports saved)."""
    if any(p.is_meta for p in model.parameters()):
        return
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
