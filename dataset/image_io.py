"""Image files: list a folder's frames in natural order and decode them with OpenCV as RGB."""
import os
import re

import cv2

from .errors import DatasetError, require_dir

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def natural_key(name):
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_subfolders(folder):
    """Visible subfolder names of ``folder`` in natural order."""
    require_dir(folder, "folder")
    names = [n for n in os.listdir(folder)
             if not n.startswith(".") and os.path.isdir(os.path.join(folder, n))]
    return sorted(names, key=natural_key)


def list_images(folder):
    """Paths of the visible image files in ``folder``, in natural order of their names."""
    require_dir(folder, "frame folder")
    names = [n for n in os.listdir(folder)
             if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def read_rgb(path):
    """Decode an image file to an ``H x W x 3`` uint8 RGB array; DatasetError if it cannot be read."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        reason = "missing" if not os.path.exists(path) else "unreadable"
        raise DatasetError(f"{reason} image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
