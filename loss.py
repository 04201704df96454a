"""Weighted sum of reconstruction losses from a string such as ``"1*L1+0.1*SSIM"``.

Terms: L1, MSE, Charbonnier, Huber, SSIM (``1 - SSIM``, the FLAVR-protocol SSIM of ``myutils``).
Each term compares predicted and target frames ``B x 3 x H x W`` in [0, 1], averaged over frames,
in float32 whatever autocast is doing. ``flow_supervision_loss`` is ``--flow_supervision``'s term: the
warp head's flows against reference flows (``model.motion_prior.reference_flows``), in pixels.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from myutils import ssim_batch


def charbonnier(pred, target, eps=1e-3):
    return torch.sqrt((pred - target) ** 2 + eps ** 2).mean()


def ssim_loss(pred, target):
    return 1.0 - ssim_batch(pred.clamp(0, 1), target).mean()


def flow_supervision_loss(flows, references, holds):
    """Charbonnier distance in pixels between the warp head's ``flows`` and ``references`` (lists of
    ``B x 4 x H x W``: x, y to the frame before, then after), averaged over the flows where the reference
    ``holds`` (lists of ``B x 2 x H x W``, 1 or 0), in float32; 0 where none holds."""
    flow, reference = torch.cat(list(flows)).float(), torch.cat(list(references)).float()
    weight = torch.cat(list(holds)).float().repeat_interleave(2, dim=1)
    with torch.autocast(flow.device.type, enabled=False):
        distance = torch.sqrt((flow - reference) ** 2 + 1e-6)
        return (distance * weight).sum() / weight.sum().clamp(min=1)


LOSS_TERMS = {
    "L1": F.l1_loss,
    "MSE": F.mse_loss,
    "Charbonnier": charbonnier,
    "Huber": F.smooth_l1_loss,
    "SSIM": ssim_loss,
}


def parse_loss_string(spec):
    """``"1*L1+0.1*SSIM"`` -> ``[(1.0, "L1"), (0.1, "SSIM")]``; a bad spec is a ValueError."""
    terms = []
    for part in spec.replace(" ", "").split("+"):
        weight, sep, name = part.partition("*")
        if not sep:
            weight, name = "1", part
        try:
            weight = float(weight)
        except ValueError:
            raise ValueError(f"loss term {part!r}: the weight {weight!r} is not a number "
                             "(write e.g. 1*L1+0.1*SSIM)") from None
        if name not in LOSS_TERMS:
            raise ValueError(f"loss term {part!r}: unknown loss {name!r}; known: {', '.join(LOSS_TERMS)}")
        terms.append((weight, name))
    return terms


class Loss(nn.Module):
    """``loss(preds, targets) -> (total, {name: value})`` over lists of frames ``B x 3 x H x W``."""

    def __init__(self, spec="1*L1"):
        super().__init__()
        self.spec = spec
        self.terms = parse_loss_string(spec)

    def forward(self, preds, targets):
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predicted frames but {len(targets)} targets")
        pred, target = torch.cat(list(preds)), torch.cat(list(targets))
        with torch.autocast(pred.device.type, enabled=False):
            values = {name: LOSS_TERMS[name](pred.float(), target.float()) for _, name in self.terms}
        total = sum(weight * values[name] for weight, name in self.terms)
        return total, {name: v.detach() for name, v in values.items()}
