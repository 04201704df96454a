"""Your own clips: a folder of videos (any container OpenCV reads: .mp4 .avi .mov .mkv ...) and/or
of frame folders (one subfolder of images per clip), or a single video file.

Samples are the windows of ``windows.py`` with factor = n_outputs + 1. Validation is held out BY
CLIP: of the clips sorted by name, ``round(val_fraction * n)`` (at least one when there are two or
more) evenly spaced ones form 'val' (and 'test'); the split is deterministic and does not depend on
the seed. A single clip is split in time instead: its last ``val_fraction`` of frames (at least one
window) are held out, and no window crosses the cut. Videos are read window by window (seek and
decode forward), never whole."""
import logging
import math
import os

from .clips import FrameFolderClip, VideoFileClip
from .errors import DatasetError, require_data_root
from .image_io import list_images, natural_key
from .video_io import VIDEO_EXTENSIONS, is_video_file
from .windows import ClipSpan, WindowDataset, WindowLayout

log = logging.getLogger(__name__)

NAME = "custom"


def find_clips(root):
    """Clips under ``root``: each video file and each subfolder holding images, sorted by name."""
    if is_video_file(root):
        return [VideoFileClip(root)]
    if os.path.isfile(root):
        raise DatasetError(f"custom data root is a file but not a video "
                           f"({' '.join(VIDEO_EXTENSIONS[:4])} ...): {root}")
    if not os.path.isdir(root):
        raise DatasetError(f"custom data root not found: {root} (give a folder of videos or frame folders, "
                           f"or one video file)")
    clips = []
    for name in sorted(os.listdir(root), key=natural_key):
        path = os.path.join(root, name)
        if is_video_file(path):
            clips.append(VideoFileClip(path))
        elif os.path.isdir(path) and not name.startswith(".") and list_images(path):
            clips.append(FrameFolderClip(path))
    if not clips:
        raise DatasetError(f"no videos ({' '.join(VIDEO_EXTENSIONS[:4])} ...) or frame folders in {root}")
    return clips


def heldout_positions(n_clips, val_fraction):
    """Positions of the clips held out for validation: evenly spaced, ``round(val_fraction * n)``
    of them, at least one (when there are two or more clips), never all."""
    if n_clips < 2 or val_fraction == 0:
        return set()
    n_val = min(max(1, round(val_fraction * n_clips)), n_clips - 1)
    return {int((j + 0.5) * n_clips / n_val) for j in range(n_val)}


def split_spans(clips, layout, val_fraction, heldout):
    """The spans of the training (``heldout=False``) or held-out part of ``clips``."""
    if len(clips) == 1 and val_fraction > 0:
        clip = clips[0]
        n_val = max(layout.length, math.ceil(val_fraction * len(clip)))
        cut = len(clip) - n_val
        if cut < layout.length:
            raise DatasetError(f"the only clip {clip.path} has {len(clip)} frames: too few to hold out "
                               f"{n_val} for validation; add a second clip or use val_fraction=0")
        log.warning("one clip only: holding out its last %d frames (from frame %d) for validation",
                    n_val, cut)
        return [ClipSpan(clip, cut, len(clip))] if heldout else [ClipSpan(clip, 0, cut)]
    positions = heldout_positions(len(clips), val_fraction)
    return [ClipSpan.whole(c) for i, c in enumerate(clips) if (i in positions) == heldout]


def build(split, data_root, options):
    """Windows of the training clips ('train') or of the held-out ones ('val' and 'test')."""
    root = os.path.normpath(require_data_root(NAME, data_root))
    layout = WindowLayout(options.n_inputs, options.factor)
    spans = split_spans(find_clips(root), layout, options.val_fraction, heldout=split != "train")
    if not spans:
        raise DatasetError(f"no clips held out for '{split}' under {root}: val_fraction="
                           f"{options.val_fraction}; use a val_fraction > 0")
    return WindowDataset(spans, layout, root=root, crop_hw=options.crop_for(test_default=None),
                         augment=options.augment, seed=options.seed)
