"""Run a model that needs sizes divisible by 8 on frames of any size: pad, predict, crop back."""
import torch.nn as nn

from myutils import pad_to_multiple

PAD_MODES = ("replicate", "reflect")
MODEL_MULTIPLE = 8  # FLAVR's encoder downsamples by 8


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
        padded, (height, width) = pad_to_multiple(frames, MODEL_MULTIPLE, self.mode)
        return [out[..., :height, :width] for out in self.model(padded)]
