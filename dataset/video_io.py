"""Video files through OpenCV: frame counts, bounded window reads by seeking, whole small clips."""
import logging
import os
from collections import OrderedDict

import cv2
import numpy as np

from .errors import DatasetError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ts", ".mts", ".3gp", ".ogv", ".y4m")
MAX_OPEN_VIDEOS = 4  # open captures kept per process, so windows of one video need no re-open

_captures = OrderedDict()  # path -> [VideoCapture, index of the next frame read() returns]
_captures_pid = None


def is_video_file(path):
    """True for a visible file whose extension is a known video container."""
    name = os.path.basename(path)
    return os.path.isfile(path) and not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS)


def open_video(path):
    """An opened ``cv2.VideoCapture``; DatasetError if OpenCV cannot open ``path``."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise DatasetError(f"OpenCV cannot open video: {path}")
    return capture


def count_frames(path):
    """Number of decodable frames: the container's count when its last frame reads and nothing
    follows it, else an exact count by grabbing every frame (slow, logged)."""
    capture = open_video(path)
    try:
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if reported > 0 and capture.set(cv2.CAP_PROP_POS_FRAMES, reported - 1):
            if capture.grab() and not capture.grab():
                return reported
        log.warning("frame count of %s is unreliable; counting frames one by one", path)
        capture.release()
        capture = open_video(path)
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def _cached_capture(path):
    """This process's open capture of ``path`` and the index of its next frame (evicts the oldest)."""
    global _captures_pid
    if _captures_pid != os.getpid():  # a forked worker must not share its parent's decoders
        _captures.clear()
        _captures_pid = os.getpid()
    if path not in _captures:
        if len(_captures) >= MAX_OPEN_VIDEOS:
            _captures.popitem(last=False)[1][0].release()
        _captures[path] = [open_video(path), 0]
    _captures.move_to_end(path)
    return _captures[path]


def _decode_forward(capture, path, first, last):
    """Yield ``(index, BGR frame)`` for frames ``first..last`` read in order from ``capture``;
    DatasetError at the first frame that does not decode."""
    for index in range(first, last + 1):
        ok, bgr = capture.read()
        if not ok:
            raise DatasetError(f"cannot decode frame {index} of video {path}")
        yield index, bgr


def read_video_frames(path, indices):
    """Decode the frames ``indices`` of a video, as ``H x W x 3`` uint8 RGB arrays in that order.

    Seeks to ``min(indices)`` (CAP_PROP_POS_FRAMES) unless the open capture is already there, then
    decodes forward to ``max(indices)``: memory holds only the requested frames."""
    entry = _cached_capture(path)
    capture, position = entry
    first, last = min(indices), max(indices)
    if position != first and not capture.set(cv2.CAP_PROP_POS_FRAMES, first):
        raise DatasetError(f"cannot seek to frame {first} of video {path}")
    wanted, frames = set(indices), {}
    try:
        for index, bgr in _decode_forward(capture, path, first, last):
            if index in wanted:
                frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except DatasetError:
        _captures.pop(path)[0].release()
        raise
    entry[1] = last + 1
    return [frames[i] for i in indices]


def decode_video(path):
    """Every frame of a (small) video as a ``T x H x W x 3`` uint8 RGB array, decoded straight into
    it (no second copy)."""
    n_frames = count_frames(path)
    capture = open_video(path)
    frames = None
    try:
        for index, bgr in _decode_forward(capture, path, 0, n_frames - 1):
            if frames is None:
                frames = np.empty((n_frames, *bgr.shape), np.uint8)
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=frames[index])
    finally:
        capture.release()
    if frames is None:
        raise DatasetError(f"no decodable frames in video: {path}")
    return frames
