"""FLAVR's small helpers: evaluation metrics (FLAVR's protocol, docs/FLAVR.md; always in float32,
whatever autocast is doing), running meters, padding frames to the model's multiple of 8 (``PaddedModel`` runs a model
on frames of any size), and autocast when asked for."""
import contextlib
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

FRAME_MULTIPLE = 8  # the model halves frames 3 times: heights and widths are multiples of 8
PAD_MODES = ("replicate", "reflect")

# ---------------------------------------------------------------- metrics (docs/FLAVR.md protocol)

def _as_batch(frame):
    """``3 x H x W`` or ``B x 3 x H x W`` -> float ``B x 3 x H x W``."""
    if frame.dim() == 3:
        frame = frame.unsqueeze(0)
    if frame.dim() != 4:
        raise ValueError(f"expected a frame 3 x H x W or B x 3 x H x W, got shape {tuple(frame.shape)}")
    return frame.float()


def in_float32(function):
    """``function(pred, ...)`` run with autocast off on ``pred``'s device: a metric or a loss computed in
    float32 even when called inside an autocast region (bf16 SSIM can come out negative)."""
    @functools.wraps(function)
    def run(pred, *args, **kwargs):
        with torch.autocast(pred.device.type, enabled=False):
            return function(pred, *args, **kwargs)
    return run


@in_float32
def psnr_batch(pred, gt):
    """Per-frame PSNR in dB, ``-10 log10(mse + 1e-8)``; ``B x 3 x H x W`` in [0, 1] -> ``B``."""
    mse = ((_as_batch(pred) - _as_batch(gt)) ** 2).mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse + 1e-8)


def calc_psnr(pred, gt):
    """PSNR of one frame (``3 x H x W`` or ``1 x 3 x H x W``, values in [0, 1]) in dB."""
    return float(psnr_batch(pred, gt)[0])


def _gaussian_1d(size=11, sigma=1.5, device=None):
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


@functools.lru_cache(maxsize=8)
def _depth_mixing(channels, size=11, sigma=1.5):
    """The Gaussian along the channel axis after replicate padding by ``size // 2``, as a ``channels x channels``
    matrix (float32, CPU): output channel d is ``sum_k g[k] * x[clamp(d + k - size // 2, 0, channels - 1)]``."""
    g, radius = _gaussian_1d(size, sigma).double(), size // 2
    mixing = torch.zeros(channels, channels, dtype=torch.float64)
    for d in range(channels):
        for k in range(size):
            mixing[d, min(max(d + k - radius, 0), channels - 1)] += g[k]
    return mixing.float()


def _gaussian_filter_3d(frames, g):
    """``frames`` (``B x C x H x W``) filtered by the separable 3D Gaussian ``g`` over (C, H, W) after replicate
    padding on every axis, the same shape: along C a channel mixing (``_depth_mixing``), along H and W depthwise
    convolutions (a 3D convolution of one channel would unfold ``size`` copies of the volume: 10x slower on a CPU)."""
    size, channels = g.numel(), frames.shape[1]
    mixed = torch.einsum("dc,bchw->bdhw", _depth_mixing(channels, size).to(frames.device), frames)
    padded = F.pad(mixed, (size // 2,) * 4, mode="replicate")
    rows = F.conv2d(padded, g.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(rows, g.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


@in_float32
def ssim_batch(pred, gt):
    """Per-frame SSIM as in the frame-interpolation literature: each RGB frame is one volume
    ``3 x H x W``, filtered by an 11x11x11 Gaussian (sigma 1.5) after replicate padding by 5 on every
    axis, C1 = 0.01^2, C2 = 0.03^2, map averaged. ``B x 3 x H x W`` in [0, 1] -> ``B``."""
    pred, gt = _as_batch(pred).clamp(0, 1), _as_batch(gt)
    g = _gaussian_1d(device=pred.device)
    mu_x, mu_y = _gaussian_filter_3d(pred, g), _gaussian_filter_3d(gt, g)
    sigma_xx = _gaussian_filter_3d(pred * pred, g) - mu_x ** 2
    sigma_yy = _gaussian_filter_3d(gt * gt, g) - mu_y ** 2
    sigma_xy = _gaussian_filter_3d(pred * gt, g) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / (
        (mu_x ** 2 + mu_y ** 2 + c1) * (sigma_xx + sigma_yy + c2))
    return ssim_map.flatten(1).mean(dim=1)


def calc_ssim(pred, gt):
    """SSIM of one frame (``3 x H x W`` or ``1 x 3 x H x W``, values in [0, 1])."""
    return float(ssim_batch(pred, gt)[0])


class AverageMeter:
    """Running average of a scalar: ``update(value, n)``, then ``avg``."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = self.sum = self.avg = 0.0
        self.count = 0

    def update(self, value, n=1):
        self.val = float(value)
        self.sum += self.val * n
        self.count += n
        self.avg = self.sum / self.count

    def state(self):
        """``[sum, count]``, what ``from_state`` needs to continue the average (checkpoints)."""
        return [self.sum, self.count]

    @classmethod
    def from_state(cls, state):
        meter = cls()
        meter.sum, meter.count = float(state[0]), int(state[1])
        meter.avg = meter.sum / meter.count if meter.count else 0.0
        return meter


# ---------------------------------------------------------------- frames

def pad_to_multiple(frames, multiple=FRAME_MULTIPLE, mode="replicate"):
    """Pad frames ``B x 3 x H x W`` (a list, same size) on the bottom/right to multiples of
    ``multiple``; returns the padded list and ``(H, W)`` to crop the outputs back to."""
    h, w = frames[0].shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return list(frames), (h, w)
    return [F.pad(f, (0, pw, 0, ph), mode=mode) for f in frames], (h, w)


def check_pad_mode(mode):
    """Return ``mode`` if it is one of PAD_MODES, else raise ValueError."""
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode {mode!r} is not one of {', '.join(PAD_MODES)}")
    return mode


class PaddedModel(nn.Module):
    """Wraps an interpolation model: frames ``B x 3 x H x W`` of any size are padded on the bottom
    and right to multiples of 8 (``mode`` replicate or reflect), and the outputs are cropped back to
    ``H x W``: the picture is never resized. ``config`` is the wrapped model's."""

    def __init__(self, model, mode="replicate"):
        super().__init__()
        self.model = model
        self.mode = check_pad_mode(mode)
        self.config = getattr(model, "config", None)
        self.train(model.training)

    def forward(self, frames):
        padded, (height, width) = pad_to_multiple(frames, FRAME_MULTIPLE, self.mode)
        return [out[..., :height, :width] for out in self.model(padded)]


def autocast_or_nothing(device_type, dtype):
    """``torch.autocast(device_type, dtype)``, or a context that does nothing when ``dtype`` is None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


def compute_dtype(x):
    """The dtype in which autocast runs lower-precision ops (convolutions) on ``x``'s device, or
    ``x``'s own dtype where autocast is off."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
