"""Binary FLAVR: every 3x3x3 encoder-block conv and every decoder conv / transposed conv is an
XNOR binary layer (``model/binconv.py``); the stem, ``feature_fuse``, ``outconv`` and the gating
1x1x1 convs stay real-valued, and so do the 1x1x1 downsample convs unless ``bin_downsample``.

The compact layout (``bin_downsample=True, gate_reduction=16``) keeps the gating real but
factorised to rank ~C/16, so a packed unet_18 file is < 6 MB instead of 9.3 MB (see README)."""
import functools

import torch.nn as nn

from model.binconv import BinConv3d, BinConvTranspose3d
from model.unet3d import ConvPolicy, UNet3D


def binary_policy(bin_downsample=False, shortcuts=False):
    """Binary layers for every role but the real shortcut convs (unless ``bin_downsample``);
    ``shortcuts``: each binary layer adds its parameter-free real-valued shortcut."""
    conv = functools.partial(BinConv3d, shortcut=shortcuts)
    return ConvPolicy(block_conv=conv, downsample_conv=conv if bin_downsample else nn.Conv3d,
                      decoder_conv=conv, decoder_upconv=functools.partial(BinConvTranspose3d, shortcut=shortcuts))


class UNet_3D_3D(UNet3D):
    """Binary FLAVR, same constructor and I/O as ``model.FLAVR_arch.UNet_3D_3D``, plus
    ``bin_downsample`` and ``shortcuts`` (a real-valued shortcut around every binary conv)."""

    def __init__(self, block, n_inputs, n_outputs, batchnorm=False, joinType="concat",
                 upmode="transpose", bin_downsample=False, base_channels=64, gate_reduction=1,
                 head="frames", activation="relu", shortcuts=False, motion_prior="none",
                 network_scale=1, warp_interpolation="bilinear", prior_dead_zone=0.0):
        super().__init__(binary_policy(bin_downsample, shortcuts), block, n_inputs, n_outputs, batchnorm,
                         joinType, upmode, base_channels, gate_reduction, head, activation,
                         motion_prior, network_scale, warp_interpolation, prior_dead_zone)
