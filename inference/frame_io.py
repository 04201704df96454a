"""Frames as files and tensors: natural-order listing, 8-bit RGB PNG reading and writing, the
conversions between ``H x W x 3`` uint8 RGB arrays and ``B x 3 x H x W`` float tensors in [0, 1],
and ``InferenceInputError``, the inference package's one exception type."""
import os

import cv2
import numpy as np
import torch

from dataset.image_io import IMAGE_EXTENSIONS, list_images, read_rgb  # noqa: F401 (re-exported)


class InferenceInputError(ValueError):
    """Bad input or output for inference (a missing or undecodable video, too few frames, an output
    path that cannot be written...); the message is one line saying what is wrong and what to do."""


def list_frame_files(folder):
    """Paths of the visible image files in ``folder`` in natural order; InferenceInputError if none."""
    if not os.path.isdir(folder):
        raise InferenceInputError(f"frame folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise InferenceInputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}")
    return files


def write_rgb(path, rgb):
    """Write an ``H x W x 3`` uint8 RGB array as an image file (format from the extension)."""
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise InferenceInputError(f"cannot write image {path}: is the folder writable?")


def rgb_to_tensor(rgb, device):
    """``H x W x 3`` uint8 RGB -> ``1 x 3 x H x W`` float32 in [0, 1] on ``device``."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
    return tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def tensor_to_rgb(frames):
    """``B x 3 x H x W`` float in [0, 1] -> list of ``B`` uint8 RGB arrays ``H x W x 3``, values
    clamped to [0, 1] and rounded to the nearest 8-bit level."""
    levels = frames.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return list(levels.permute(0, 2, 3, 1).cpu().numpy())
