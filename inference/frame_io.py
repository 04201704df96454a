"""Frames as files and tensors: natural-order listing, 8-bit RGB PNG reading and writing, and the
conversions between ``H x W x 3`` uint8 RGB arrays and ``B x 3 x H x W`` float tensors in [0, 1]."""
import os
import re

import cv2
import numpy as np
import torch

from .errors import InferenceInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def natural_key(name):
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(folder):
    """Paths of the visible image files in ``folder`` in natural order; InferenceInputError if none."""
    if not os.path.isdir(folder):
        raise InferenceInputError(f"frame folder not found: {folder}")
    names = [n for n in os.listdir(folder) if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)]
    if not names:
        raise InferenceInputError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}")
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def read_rgb(path):
    """Decode an image file to an ``H x W x 3`` uint8 RGB array; InferenceInputError if it cannot."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        reason = "missing" if not os.path.exists(path) else "unreadable"
        raise InferenceInputError(f"{reason} image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
