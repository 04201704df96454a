"""Sliding windows over clips: the GoPro rule that the DAVIS, custom and demo sets share too.

A window holds ``(n_inputs - 1) * factor + 1`` consecutive frames and windows start every
``factor`` frames (every ``step`` frames where a data set asks: the demo's training windows start at
every frame); inputs are the frames at 0, factor, 2 factor, ...; targets are the ``factor - 1``
frames strictly between the middle two inputs (between factor and 2 factor for 4)."""
import logging
import os
from dataclasses import dataclass

from .base import InterpolationDataset
from .clips import FrameFolderClip
from .frame_cache import CachedClip
from .errors import DatasetError, require_dir
from .image_io import list_subfolders

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowLayout:
    """Frame offsets inside one window for ``n_inputs`` (even) inputs and an interpolation ``factor``."""
    n_inputs: int
    factor: int

    @property
    def length(self):
        return (self.n_inputs - 1) * self.factor + 1

    @property
    def input_offsets(self):
        return tuple(i * self.factor for i in range(self.n_inputs))

    @property
    def target_offsets(self):
        before = (self.n_inputs // 2 - 1) * self.factor
        return tuple(range(before + 1, before + self.factor))

    def starts(self, first, stop, step=None):
        """Start frames of the windows that fit in frames ``first .. stop - 1``, one every ``step``
        frames (default ``factor``)."""
        return range(first, stop - self.length + 1, step or self.factor)


@dataclass(frozen=True)
class ClipSpan:
    """The frames ``first .. stop - 1`` of a clip (a whole clip, or part of one held out)."""
    clip: object
    first: int
    stop: int

    @classmethod
    def whole(cls, clip):
        return cls(clip, 0, len(clip))


def frame_folder_spans(folder, what, frame_cache=None):
    """One whole-clip span per subfolder of ``folder`` (read from its cache in ``frame_cache`` when given,
    ``frame_cache.py``); DatasetError naming an empty one."""
    names = list_subfolders(require_dir(folder, what))
    if not names:
        raise DatasetError(f"no clip folders in {what}: {folder}")
    spans = []
    for name in names:
        path = os.path.join(folder, name)
        clip = CachedClip(path, frame_cache) if frame_cache else FrameFolderClip(path)
        if len(clip) == 0:
            raise DatasetError(f"no image files in clip folder: {clip.path}")
        spans.append(ClipSpan.whole(clip))
    return spans


class WindowDataset(InterpolationDataset):
    """Windows over clip spans, ``sample_id`` = ``"<clip>/<first frame of the window, 6 digits>"``.

    A window starts every ``step`` frames (default ``layout.factor``). Spans too short for one
    window are skipped (logged); no window at all is a DatasetError."""

    def __init__(self, spans, layout, *, root, crop_hw, augment, seed, step=None):
        super().__init__(root=root, crop_hw=crop_hw, augment=augment, seed=seed)
        self.layout = layout
        self.spans = spans
        self.windows = []
        for span_index, span in enumerate(spans):
            starts = layout.starts(span.first, span.stop, step)
            if not starts:
                log.warning("skipping %s: %d frames, a window needs %d", span.clip.path,
                            span.stop - span.first, layout.length)
            self.windows += [(span_index, start) for start in starts]
        if not self.windows:
            raise DatasetError(f"no clip under {root} has the {layout.length} frames one window needs "
                               f"({layout.n_inputs} inputs, factor {layout.factor})")
        self.check_first_sample()

    def __len__(self):
        return len(self.windows)

    def sample_id(self, index):
        span_index, start = self.windows[index]
        return f"{self.spans[span_index].clip.name}/{start:06d}"

    def load_frames(self, index):
        span_index, start = self.windows[index]
        inputs = [start + offset for offset in self.layout.input_offsets]
        targets = [start + offset for offset in self.layout.target_offsets]
        frames = self.spans[span_index].clip.read(inputs + targets)
        return frames[:len(inputs)], frames[len(inputs):]
