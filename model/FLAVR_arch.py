"""The full-precision FLAVR model, exactly as released (loads FLAVR's checkpoints strictly)."""
import torch.nn as nn

from model.unet3d import ConvPolicy, UNet3D

FULL_PRECISION = ConvPolicy(block_conv=nn.Conv3d, downsample_conv=nn.Conv3d,
                            decoder_conv=nn.Conv3d, decoder_upconv=nn.ConvTranspose3d)


class UNet_3D_3D(UNet3D):
    """FLAVR: ``n_inputs`` frames ``B x 3 x H x W`` in [0, 1] -> ``n_outputs`` interpolated frames."""

    def __init__(self, block, n_inputs, n_outputs, batchnorm=False, joinType="concat",
                 upmode="transpose", base_channels=64, gate_reduction=1, head="frames", activation="relu",
                 motion_prior="none", network_scale=1, warp_interpolation="bilinear", prior_dead_zone=0.0):
        super().__init__(FULL_PRECISION, block, n_inputs, n_outputs, batchnorm, joinType, upmode,
                         base_channels, gate_reduction, head, activation, motion_prior, network_scale,
                         warp_interpolation, prior_dead_zone)
