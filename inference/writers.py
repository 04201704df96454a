"""Frame sinks for interpolated sequences, and the checks that keep them from overwriting files.

``VideoFileWriter`` encodes with OpenCV into a hidden temporary file beside the target and renames it
only when the sequence is complete, so a failed run leaves no half-written video. ``PngFolderWriter``
writes zero-padded PNG names that sort in time order."""
import os
import tempfile

import cv2

from .errors import InferenceInputError
from .frame_io import write_rgb

CODECS = {  # name -> (OpenCV fourcc, file extension); both checked to work with opencv-python-headless
    "mp4v": ("mp4v", ".mp4"),   # MPEG-4 Part 2, lossy, plays almost everywhere
    "ffv1": ("FFV1", ".avi"),   # FFV1, lossless: frames decode bit-exact
}
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
    """Encode ``H x W x 3`` uint8 RGB frames into ``path`` at ``fps`` with codec ``codec`` (a key of
    CODECS). The encoder opens on the first frame (its size fixes the video's); ``close()`` moves the
    finished file into place, ``discard()`` deletes it. Use as a context manager."""

    def __init__(self, path, fps, codec="mp4v"):
        if codec not in CODECS:
            raise InferenceInputError(f"unknown codec {codec!r}: choose one of {', '.join(CODECS)}")
        self.path, self.fps, self.codec = path, float(fps), codec
        self.frames_written = 0
        self._encoder = None
        self._partial = None

    def _open(self, height, width):
        fourcc, extension = CODECS[self.codec]
        folder = os.path.dirname(os.path.abspath(self.path))
        handle, self._partial = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=extension,
                                                 dir=folder)
        os.close(handle)
        self._encoder = cv2.VideoWriter(self._partial, cv2.VideoWriter_fourcc(*fourcc), self.fps, (width, height))
        if not self._encoder.isOpened():
            self.discard()
            raise InferenceInputError(f"OpenCV cannot encode {self.codec} video into {self.path}: "
                                      "try --codec ffv1 or --output_frames")

    def write(self, rgb):
        if self._encoder is None:
            self._open(*rgb.shape[:2])
        self._encoder.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self):
        """Finish the video and move it to ``path``."""
        if self._encoder is None:
            return
        self._encoder.release()
        self._encoder = None
        os.replace(self._partial, self.path)
        self._partial = None

    def discard(self):
        """Stop and delete the unfinished video."""
        if self._encoder is not None:
            self._encoder.release()
            self._encoder = None
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

    def write(self, rgb):
        if self.frames_written == 0:
            os.makedirs(self.folder, exist_ok=True)
        write_rgb(os.path.join(self.folder, f"frame_{self.frames_written:0{PNG_NAME_DIGITS}d}.png"), rgb)
        self.frames_written += 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        return None
