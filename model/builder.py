"""One model builder for every script: a configuration dict -> FLAVR (full precision) or binary FLAVR.

The configuration travels inside every checkpoint, so any script can rebuild the exact model.
"""
import logging
from dataclasses import dataclass, field

import torch

from model import FLAVR_arch, binFLAVR_arch
from model.summary import model_summary

log = logging.getLogger(__name__)

ARCHS = ("binary", "flavr")
DEFAULT_CONFIG = {
    "arch": "binary",          # "binary": XNOR binary FLAVR; "flavr": full-precision FLAVR
    "block": "unet_18",        # unet_18 | unet_34
    "n_inputs": 4,
    "n_outputs": 1,            # factor - 1: 1 for 2x, 3 for 4x, 7 for 8x
    "batchnorm": False,
    "joinType": "concat",
    "upmode": "transpose",
    "bin_downsample": False,   # binary 1x1x1 shortcut convs (binary arch only)
    "base_channels": 64,       # FLAVR's width; smaller gives narrow variants (quick tests)
    "gate_reduction": 1,       # 1: FLAVR's C x C gating convs; 16: rank-C/16 gates (compact layout)
    "head": "frames",          # frames (FLAVR) | residual (blend + correction) | warp (flows, mask, correction)
    "shortcuts": False,        # real-valued shortcut around every binary conv (binary arch only)
    "activation": "relu",      # encoder block activations: relu (FLAVR) or rprelu (ReActNet)
    "motion_prior": "none",    # none (FLAVR) | matching (warp head: block-matched flows the head corrects) | aligned
                               # | dis | dis_aligned | dis_fused | dis_fused_still (model/motion_prior.py)
    "network_scale": 1,        # the U-Net runs on frames downscaled this many times, its head upsampled (warp/residual head)
    "warp_interpolation": "bilinear",  # how the warp head resamples the frames it warps: bilinear | bicubic
    "prior_dead_zone": 0.0,    # the prior's half motion below this many pixels is taken as none (whole from twice it)
}


def model_config(**overrides):
    """``DEFAULT_CONFIG`` updated by ``overrides``; unknown keys or archs are a ValueError."""
    unknown = set(overrides) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown model options {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    config = {**DEFAULT_CONFIG, **overrides}
    if config["arch"] not in ARCHS:
        raise ValueError(f"arch={config['arch']!r} is not one of {', '.join(ARCHS)}")
    return config


def build_model(config, log_summary=True):
    """Build the model a configuration (see ``DEFAULT_CONFIG``) describes, on CPU."""
    config = model_config(**config)
    common = dict(block=config["block"], n_inputs=config["n_inputs"], n_outputs=config["n_outputs"],
                  batchnorm=config["batchnorm"], joinType=config["joinType"], upmode=config["upmode"],
                  base_channels=config["base_channels"], gate_reduction=config["gate_reduction"],
                  head=config["head"], activation=config["activation"],
                  motion_prior=config["motion_prior"], network_scale=config["network_scale"],
                  warp_interpolation=config["warp_interpolation"], prior_dead_zone=config["prior_dead_zone"])
    if config["arch"] == "binary":
        model = binFLAVR_arch.UNet_3D_3D(**common, bin_downsample=config["bin_downsample"],
                                         shortcuts=config["shortcuts"])
    else:
        model = FLAVR_arch.UNet_3D_3D(**common)
    model.config = config
    if log_summary:
        log.info("%s", model_summary(model, describe_config(config)))
    return model


def describe_config(config):
    """``binary unet_18 2x (4 inputs)``, plus the layout options that differ from FLAVR's."""
    details = [f"{config['n_inputs']} inputs"]
    if config.get("gate_reduction", 1) > 1:
        details.append(f"gates factorised 1/{config['gate_reduction']}")
    if config["arch"] == "binary" and config.get("bin_downsample"):
        details.append("binary shortcuts")
    if config["arch"] == "binary" and config.get("shortcuts"):
        details.append("real shortcuts")
    if config.get("head", "frames") != "frames":
        details.append(f"{config['head']} head")
    if config.get("motion_prior", "none") != "none":
        details.append(f"{config['motion_prior']} motion prior")
    if config.get("network_scale", 1) != 1:
        details.append(f"network at 1/{config['network_scale']} scale")
    if config.get("warp_interpolation", "bilinear") != "bilinear":
        details.append(f"{config['warp_interpolation']} warping")
    if config.get("prior_dead_zone", 0) > 0:
        details.append(f"prior motion under {config['prior_dead_zone']:g} px ignored")
    if config.get("activation", "relu") != "relu":
        details.append(config["activation"])
    if config.get("base_channels", 64) != 64:
        details.append(f"width {config['base_channels']}")
    return f"{config['arch']} {config['block']} {config['n_outputs'] + 1}x ({', '.join(details)})"


def strip_module_prefix(state_dict):
    """Drop the ``module.`` prefix that DataParallel / DDP checkpoints carry."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


@dataclass
class TransferReport:
    """What ``transfer_weights`` copied and what it could not."""
    copied: list = field(default_factory=list)
    missing: list = field(default_factory=list)      # in the model, not in the checkpoint
    unused: list = field(default_factory=list)       # in the checkpoint, not in the model
    mismatched: list = field(default_factory=list)   # same key, other shape
    factorised: list = field(default_factory=list)   # C x C gates copied as rank-k factors (SVD)

    def summary(self):
        lines = [f"initialised {len(self.copied)} tensors from the checkpoint"]
        if self.factorised:
            lines.append(f"{len(self.factorised)} full gating convs copied as their best low-rank "
                         "factorisation (truncated SVD)")
        for label, keys in (("not in the checkpoint (kept their initialisation)", self.missing),
                            ("in the checkpoint but not in this model (ignored)", self.unused),
                            ("shape differs (kept their initialisation)", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
                lines.append(f"{len(keys)} {label}: {shown}")
        return "\n".join(lines)


def _factorise_gates(source, target, report):
    """Replace each C x C gating conv of ``source`` whose role is factorised in ``target``
    (``attn_layer.0``: k x C, ``attn_layer.1``: C x k) by its best rank-k factors: with
    W = U S V^T, A = sqrt(S_k) V_k^T and B = U_k sqrt(S_k); the bias moves to ``attn_layer.1``."""
    source = dict(source)
    suffix = "attn_layer.0.weight"
    for key in [k for k in target if k.endswith(suffix)]:
        prefix, factor = key[:-len(suffix)], target[key]
        rank, channels = factor.shape[:2]
        full, bias = source.get(key), source.get(prefix + "attn_layer.0.bias")
        if (prefix + "attn_layer.1.weight" not in target or full is None or bias is None
                or tuple(full.shape) != (channels, channels, 1, 1, 1)):
            continue
        u, s, vh = torch.linalg.svd(full.flatten(1).double())
        root = s[:rank].sqrt()
        source[key] = (root[:, None] * vh[:rank]).view_as(factor).to(factor.dtype)
        source[prefix + "attn_layer.1.weight"] = (u[:, :rank] * root).view(channels, rank, 1, 1, 1).to(factor.dtype)
        source[prefix + "attn_layer.1.bias"] = source.pop(prefix + "attn_layer.0.bias")
        report.factorised.append(prefix + "attn_layer")
    return source


def transfer_weights(model, state_dict):
    """Copy every tensor whose key and shape exist in both (full precision <-> binary, release
    checkpoints with ``module.`` keys included) and report what was and was not loaded. FLAVR's
    C x C gates initialise factorised gates (``gate_reduction`` > 1) by truncated SVD."""
    target = model.state_dict()
    report = TransferReport()
    source = _factorise_gates(strip_module_prefix(state_dict), target, report)
    for key, value in target.items():
        if key not in source:
            report.missing.append(key)
        elif tuple(source[key].shape) != tuple(value.shape):
            report.mismatched.append(key)
        else:
            value.copy_(source[key])
            report.copied.append(key)
    report.unused = [k for k in source if k not in target]
    return report
