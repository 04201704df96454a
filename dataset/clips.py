"""Clip sources: an ordered run of frames that can hand out any subset of them as RGB arrays."""
import os

from .errors import DatasetError
from .image_io import list_images, read_rgb
from .video_io import count_frames, read_video_frames


class FrameFolderClip:
    """A folder of image files, one frame each, ordered by name."""

    def __init__(self, folder, name=None):
        self.name = name or os.path.basename(os.path.normpath(folder))
        self.path = folder
        self.frame_paths = list_images(folder)

    def __len__(self):
        return len(self.frame_paths)

    def read(self, indices):
        """Frames ``indices`` as ``H x W x 3`` uint8 RGB arrays."""
        return [read_rgb(self.frame_paths[i]) for i in indices]


class VideoFileClip:
    """A video file read window by window (seek, then decode forward): never held whole in memory."""

    def __init__(self, path, name=None):
        self.name = name or os.path.splitext(os.path.basename(path))[0]
        self.path = path
        self.n_frames = count_frames(path)

    def __len__(self):
        return self.n_frames

    def read(self, indices):
        """Frames ``indices`` as ``H x W x 3`` uint8 RGB arrays."""
        return read_video_frames(self.path, indices)


class ArrayClip:
    """Frames already decoded into a ``T x H x W x 3`` uint8 RGB array (small clips only)."""

    def __init__(self, frames, name, path):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DatasetError(f"expected T x H x W x 3 frames from {path}, got shape {frames.shape}")
        self.name = name
        self.path = path
        self.frames = frames

    def __len__(self):
        return len(self.frames)

    def read(self, indices):
        """Frames ``indices`` as ``H x W x 3`` uint8 RGB arrays."""
        return [self.frames[i] for i in indices]
