"""Cropping and training augmentation, drawn once per sample and applied to all its frames.

Parameters come from a ``torch.Generator`` seeded by (seed, epoch, index), never from global RNG,
so a sample's augmentation depends only on those three numbers: not on worker count or order."""
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .errors import DatasetError

JITTER = 0.05  # colour jitter strength for brightness, contrast, saturation and hue
GREY_WEIGHTS = np.array([0.2989, 0.587, 0.114], np.float32)  # torchvision's RGB -> grey


@dataclass(frozen=True)
class AugmentParams:
    """One sample's augmentation: crop corner (pixels), flips, jitter factors, time reversal."""
    top: int
    left: int
    hflip: bool
    vflip: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    reverse: bool


def sample_generator(seed, epoch, index):
    """A ``torch.Generator`` seeded from the triple (seed, epoch, index) through a SeedSequence."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def random_corner(generator, image_hw, crop_hw):
    """A crop corner (top, left) drawn uniformly over the valid positions."""
    return (int(torch.randint(0, image_hw[0] - crop_hw[0] + 1, (), generator=generator)),
            int(torch.randint(0, image_hw[1] - crop_hw[1] + 1, (), generator=generator)))


def draw_augment_params(generator, image_hw, crop_hw):
    """Draw a sample's parameters: crop corner uniform over valid positions, flips and time
    reversal with p=0.5, jitter factors uniform in [1 - JITTER, 1 + JITTER] (hue in +-JITTER)."""
    def uniform(low, high):
        return low + (high - low) * torch.rand((), generator=generator).item()

    def coin():
        return torch.rand((), generator=generator).item() < 0.5

    top, left = random_corner(generator, image_hw, crop_hw)
    return AugmentParams(top=top, left=left, hflip=coin(), vflip=coin(),
                         brightness=uniform(1 - JITTER, 1 + JITTER),
                         contrast=uniform(1 - JITTER, 1 + JITTER),
                         saturation=uniform(1 - JITTER, 1 + JITTER),
                         hue=uniform(-JITTER, JITTER), reverse=coin())


def motion_seeking_corner(generator, inputs, targets, corner, crop_hw, candidates):
    """The crop corner, among ``corner`` and ``candidates - 1`` more drawn uniformly from ``generator``,
    whose crop the two-frame average restores worst: the largest mean absolute difference (grey levels,
    0-255) between the targets and the average of the middle two of ``inputs`` (``H x W x 3`` uint8).
    Window choice is untouched; only where in the window the crop lies moves towards motion."""
    corners = [corner] + [random_corner(generator, inputs[0].shape[:2], crop_hw) for _ in range(candidates - 1)]
    before, after = inputs[len(inputs) // 2 - 1], inputs[len(inputs) // 2]

    def blend_error(top, left):
        window = np.s_[top:top + crop_hw[0], left:left + crop_hw[1]]
        average = (before[window].astype(np.float32) + after[window]) / 2
        return float(np.mean([np.abs(target[window] - average) @ GREY_WEIGHTS for target in targets]))

    return max(corners, key=lambda c: blend_error(*c))


def resolve_crop(image_hw, crop_hw, multiple_of):
    """Crop size actually used: ``crop_hw`` (None = whole frame) clamped to the image, then cut down
    to a multiple of ``multiple_of`` (8 for the model; 1 keeps odd sizes)."""
    height, width = image_hw if crop_hw is None else (min(crop_hw[0], image_hw[0]),
                                                       min(crop_hw[1], image_hw[1]))
    height, width = height - height % multiple_of, width - width % multiple_of
    if height == 0 or width == 0:
        raise DatasetError(f"frames of {image_hw[0]}x{image_hw[1]} pixels are smaller than "
                           f"{multiple_of}x{multiple_of}, the smallest size the model takes")
    return height, width


def centre_corner(image_hw, crop_hw):
    """Top-left corner (top, left) of a centred crop."""
    return (image_hw[0] - crop_hw[0]) // 2, (image_hw[1] - crop_hw[1]) // 2


def crop_frames(frames, corner, crop_hw):
    """Crop ``H x W x 3`` uint8 arrays at ``corner``: ``T x h x w x 3`` uint8."""
    top, left = corner
    return np.stack([frame[top:top + crop_hw[0], left:left + crop_hw[1]] for frame in frames])


def to_tensor(frames):
    """``T x h x w x 3`` array -> ``T x 3 x h x w`` tensor of the same dtype."""
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))


def _shift_hue(frame, shift):
    """Rotate the hue of an ``h x w x 3`` float32 RGB frame by ``shift`` turns (OpenCV HSV: H in degrees)."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 360.0 * shift) % 360.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flip_and_jitter(frames, params):
    """Apply one sample's flips and colour jitter (brightness, contrast, saturation, hue, in that
    order, as torchvision defines them) to every frame of ``T x h x w x 3`` float32 in [0, 1]."""
    if params.hflip:
        frames = frames[:, :, ::-1]
    if params.vflip:
        frames = frames[:, ::-1]
    frames = np.clip(frames * params.brightness, 0.0, 1.0)
    grey = frames @ GREY_WEIGHTS
    mean = grey.mean(axis=(1, 2), keepdims=True)[..., None]
    frames = np.clip(params.contrast * frames + (1 - params.contrast) * mean, 0.0, 1.0)
    grey = (frames @ GREY_WEIGHTS)[..., None]
    frames = np.clip(params.saturation * frames + (1 - params.saturation) * grey, 0.0, 1.0)
    return np.stack([_shift_hue(frame, params.hue) for frame in frames])
