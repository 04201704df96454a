"""Scene cuts: how different two frames are (``scene_difference``) and the threshold above which
two frames belong to different shots. ``interpolate.py``'s sliding window does not interpolate across
a cut, and ``evaluation.evaluate_video`` does not score one."""
import cv2
import numpy as np

DEFAULT_SCENE_THRESHOLD = 0.15  # scene_difference above which two kept frames straddle a cut
SCENE_WIDTH = 64                # frames are compared as thumbnails this many pixels wide
BT601_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _luma_thumbnail(rgb):
    """``H x W x 3`` uint8 RGB -> its BT.601 luma in [0, 1], INTER_AREA-resized to SCENE_WIDTH px wide."""
    luma = rgb.astype(np.float32) @ BT601_LUMA / 255.0
    height = max(1, round(rgb.shape[0] * SCENE_WIDTH / rgb.shape[1]))
    return cv2.resize(luma, (SCENE_WIDTH, height), interpolation=cv2.INTER_AREA)


def scene_difference(a, b):
    """Mean absolute difference of two ``H x W x 3`` uint8 RGB frames' luma thumbnails, in [0, 1]."""
    return float(np.abs(_luma_thumbnail(a) - _luma_thumbnail(b)).mean())
