"""Binary FLAVR: every 3x3x3 encoder-block conv and every decoder conv / transposed conv is an
XNOR binary layer (``model/binconv.py``); the stem, ``feature_fuse``, ``outconv`` and the gating
1x1x1 convs stay real-valued, and so do the 1x1x1 downsample convs unless ``bin_downsample``.

The compact layout (``bin_downsample=True, gate_reduction=16``) keeps the gating real but
factorised to rank ~C/16, so a packed unet_18 file is < 6 MB instead of 9.3 MB (see README)."""
import torch.nn as nn

from model.binconv import BinConv3d, BinConvTranspose3d
from model.unet3d import ConvPolicy, UNet3D


def binary_policy(bin_downsample=False):
    return ConvPolicy(block_conv=BinConv3d,
                      downsample_conv=BinConv3d if bin_downsample else nn.Conv3d,
                      decoder_conv=BinConv3d, decoder_upconv=BinConvTranspose3d)


class UNet_3D_3D(UNet3D):
    """Binary FLAVR, same constructor and I/O as ``model.FLAVR_arch.UNet_3D_3D``."""

    def __init__(self, block, n_inputs, n_outputs, batchnorm=False, joinType="concat",
                 upmode="transpose", bin_downsample=False, base_channels=64, gate_reduction=1):
        super().__init__(binary_policy(bin_downsample), block, n_inputs, n_outputs, batchnorm,
                         joinType, upmode, base_channels, gate_reduction)
