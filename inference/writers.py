"""Frame sinks for interpolated sequences, and the checks that keep them from overwriting files.

``VideoFileWriter`` encodes with FFmpeg (PyAV) into a hidden temporary file beside the target and
renames it only when the sequence is complete, so a failed run leaves no half-written video; it can
carry the input's audio and subtitles along (``remux.StreamCopier``). ``PngFolderWriter`` writes
zero-padded PNG names that sort in time order."""
import contextlib
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction

import av
from av.video.reformatter import Interpolation, VideoReformatter

from .colour import default_colour
from .frame_io import InferenceInputError, write_rgb
from .readers import as_fraction


@dataclass(frozen=True)
class VideoCodec:
    encoder: str     # FFmpeg encoder name
    pix_fmt: str     # pixel format it stores
    extension: str   # default file extension (container)
    rgb: bool        # stores RGB as is: no matrix, no range


CODECS = {  # --codec -> how it is written
    "h264": VideoCodec("libx264", "yuv420p", ".mp4", rgb=False),  # lossy (--crf), plays everywhere
    "ffv1": VideoCodec("ffv1", "bgr0", ".mkv", rgb=True),         # lossless: RGB frames decode bit-exact
}
DEFAULT_CRF = 18  # x264 quality: 0 lossless, 18 visually lossless, 23 x264's default, 51 worst
MAX_CRF = 51
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
ENCODE_SCALING = Interpolation.BICUBIC | Interpolation.ACCURATE_RND  # RGB -> Y'CbCr 4:2:0
MP4_EXTENSIONS = (".mp4", ".m4v", ".mov")  # written with the index first, so browsers play them while loading
PNG_NAME_DIGITS = 8


def default_output_path(input_path, factor, extension, folder=None):
    """``<input name without extension>_<factor>x<extension>`` in ``folder``, by default the input's
    folder (a frame folder's output goes beside the frame folder)."""
    name = os.path.basename(os.path.normpath(input_path))
    stem = name if os.path.isdir(input_path) else os.path.splitext(name)[0]
    if folder is None:
        folder = os.path.dirname(os.path.normpath(input_path))
    return os.path.join(folder, f"{stem}_{factor}x{extension}")


def _same_file(a, b):
    return b is not None and os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_output_file(path, input_path=None, overwrite=False):
    """Return ``path`` if it may be written, else raise InferenceInputError: its folder must exist,
    it must not be the input (``input_path``) and must not exist yet unless ``overwrite``."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InferenceInputError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InferenceInputError(f"cannot write {path}: folder {folder} is not writable")
    if _same_file(path, input_path):
        raise InferenceInputError(f"the output {path} is the input: choose another output path")
    if os.path.isdir(path):
        raise InferenceInputError(f"the output {path} is a folder: give a file name")
    if os.path.exists(path) and not overwrite:
        raise InferenceInputError(f"{path} already exists: choose another output or pass --overwrite")
    return path


def check_output_folder(folder, input_path=None, overwrite=False):
    """Return ``folder`` if frames may be written into it, else raise InferenceInputError: it must not
    be a file or the input, and must be new or empty unless ``overwrite``."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InferenceInputError(f"cannot write frames to {folder}: it is a file, not a folder")
    if _same_file(folder, input_path):
        raise InferenceInputError(f"the output folder {folder} is the input: choose another folder")
    if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
        raise InferenceInputError(f"output folder {folder} is not empty: choose a new folder or pass --overwrite")
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(folder) and not os.path.isdir(parent):
        raise InferenceInputError(f"cannot create {folder}: folder {parent} does not exist")
    return folder


class VideoFileWriter:
    """Encode ``H x W x 3`` uint8 RGB frames into ``path`` with ``codec`` (a key of CODECS).

    ``write(rgb, pts, duration)`` takes times in ``time_base`` (default ``1 / fps``: frame i at
    i / fps, lasting one frame); ``fps`` is the average rate tagged on the stream. ``colour``
    (``colour.Colour``, default by frame height) picks the RGB -> Y'CbCr matrix and range and is
    tagged on the stream. ``crf`` and ``preset`` tune x264. ``copier`` (a ``remux.StreamCopier``)
    adds the input's other streams. The encoder opens on the first frame (its size fixes the
    video's); ``close()`` moves the finished file into place, ``discard()`` deletes it. Use as a
    context manager."""

    def __init__(self, path, fps, codec="h264", *, time_base=None, crf=DEFAULT_CRF, preset="medium", colour=None,
                 copier=None):
        if codec not in CODECS:
            raise InferenceInputError(f"unknown codec {codec!r}: choose one of {', '.join(CODECS)}")
        self.path, self.codec, self.colour, self.copier = path, CODECS[codec], colour, copier
        self.rate = as_fraction(fps)
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.rate
        self.options = {"crf": str(crf), "preset": preset} if self.codec.encoder == "libx264" else {}
        self.frames_written = 0
        self._container = self._stream = self._partial = None
        self._reformatter = VideoReformatter()
        self._durations = {}  # pts -> duration of the frames inside the encoder
        self._start = self._end = self._first_dts = None  # first pts, end of the last frame, first dts
        self._held = None  # the last encoded packet, muxed once the next one (or the end) is known

    @contextlib.contextmanager
    def _ffmpeg_errors(self):
        """FFmpeg's errors as one InferenceInputError line naming the output."""
        try:
            yield
        except av.FFmpegError as error:
            raise InferenceInputError(f"FFmpeg cannot write {self.path} with {self.codec.encoder} "
                                      f"({error.strerror or error}): try --codec ffv1 or --output_frames") from None

    def _open(self, height, width):
        if not self.codec.rgb and (height % 2 or width % 2):
            raise InferenceInputError(f"{self.codec.pix_fmt} needs an even width and height, the frames are "
                                      f"{width}x{height}: use --codec ffv1 or --output_frames")
        folder, name = os.path.split(os.path.abspath(self.path))
        extension = os.path.splitext(name)[1] or self.codec.extension
        handle, self._partial = tempfile.mkstemp(prefix=f".{name}.", suffix=extension, dir=folder)
        os.close(handle)
        streamable = {"movflags": "+faststart"} if extension.lower() in MP4_EXTENSIONS else None
        try:
            self._container = av.open(self._partial, "w", options=streamable)
        except ValueError:
            self.discard()
            raise InferenceInputError(f"cannot write {self.path}: FFmpeg knows no container for {extension!r} "
                                      f"(use {self.codec.extension})") from None
        stream = self._container.add_stream(self.codec.encoder, rate=self.rate, options=self.options)
        stream.width, stream.height, stream.pix_fmt = width, height, self.codec.pix_fmt
        stream.time_base = stream.codec_context.time_base = self.time_base
        self.colour = self.colour or default_colour(height)
        self.colour.tag(stream.codec_context, rgb=self.codec.rgb)
        self._stream = stream
        if self.copier is not None:
            self.copier.add_to(self._container)

    def _to_frame(self, rgb, pts):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        convert = {} if self.codec.rgb else {"interpolation": ENCODE_SCALING, **self.colour.from_rgb()}
        frame = self._reformatter.reformat(frame, format=self.codec.pix_fmt, **convert)
        frame.pts, frame.time_base = pts, self.time_base
        return frame

    def write(self, rgb, pts=None, duration=None):
        """Encode one frame shown at ``pts`` for ``duration`` (in ``time_base``; default: frame count, 1)."""
        pts = self.frames_written if pts is None else pts
        with self._ffmpeg_errors():
            if self._container is None:
                self._open(*rgb.shape[:2])
            duration = 1 if duration is None else duration
            self._durations[pts] = duration
            self._start = pts if self._start is None else self._start
            self._end = pts + duration
            if self.copier is not None:
                self.copier.mux_until(self._container, pts * self.time_base)
            self._mux(self._stream.encode(self._to_frame(rgb, pts)))
        self.frames_written += 1

    def _mux(self, packets):
        for packet in packets:
            packet.duration = self._durations.pop(packet.pts, packet.duration)
            self._first_dts = packet.dts if self._first_dts is None else self._first_dts
            if self._held is not None:
                self._container.mux(self._held)
            self._held = packet

    def _mux_last(self):
        """Mux the held packet. MP4 takes a track's length from the durations in decode order, so
        the last packet gets what completes the track to the end of the last frame."""
        if self._held.dts is not None:
            elapsed = self._held.dts - self._first_dts  # decode time before it; the track starts at _start
            self._held.duration = max(1, self._end - self._start - elapsed)
        self._container.mux(self._held)
        self._held = None

    def close(self):
        """Finish the video (flush the encoder, the copied streams) and move it to ``path``."""
        if self._container is None:
            return
        with self._ffmpeg_errors():
            self._mux(self._stream.encode(None))
            if self._held is not None:
                self._mux_last()
            if self.copier is not None:
                self.copier.mux_rest(self._container)
                self.copier.close()
            self._container.close()
        self._container = None
        os.replace(self._partial, self.path)
        self._partial = None

    def discard(self):
        """Stop and delete the unfinished video."""
        if self.copier is not None:
            self.copier.close()
        if self._container is not None:
            with contextlib.suppress(av.FFmpegError, OSError, ValueError):
                self._container.close()
            self._container = None
        if self._partial is not None and os.path.exists(self._partial):
            os.remove(self._partial)
        self._partial = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.discard()


class PngFolderWriter:
    """Write frames as ``<folder>/frame_00000000.png``, ``frame_00000001.png``... (created if needed)."""

    def __init__(self, folder):
        self.folder = folder
        self.frames_written = 0

    def write(self, rgb, pts=None, duration=None):
        """Write the next frame (``pts`` and ``duration`` are ignored: files have no timing)."""
        if self.frames_written == 0:
            os.makedirs(self.folder, exist_ok=True)
        write_rgb(os.path.join(self.folder, f"frame_{self.frames_written:0{PNG_NAME_DIGITS}d}.png"), rgb)
        self.frames_written += 1

    def close(self):
        """Nothing to finish: each frame is a complete file."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        return None
