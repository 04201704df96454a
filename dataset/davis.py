"""DAVIS (a FLAVR test set): ``ROOT/<sequence>/<frames sorted by name>``; windows as in
``windows.py`` (2x: inputs s, s+2, s+4, s+6, target s+3, a window every 2 frames).
Frames are centre-cropped to 480x840 as in FLAVR."""
from .errors import require_data_root, require_dir
from .options import require_test_split
from .windows import WindowDataset, WindowLayout, frame_folder_spans

NAME = "davis"
TEST_CROP = (480, 840)


def clip_parent_folders(data_root):
    """The folder whose subfolders are DAVIS sequences (``cache_frames.py`` caches them)."""
    return [require_dir(require_data_root(NAME, data_root), "DAVIS folder")]


def build(split, data_root, options):
    """DAVIS windows of every sequence folder (test set: split 'val' or 'test')."""
    require_test_split(NAME, split)
    root = require_data_root(NAME, data_root)
    return WindowDataset(frame_folder_spans(root, "DAVIS folder", options.frame_cache),
                         WindowLayout(options.n_inputs, options.factor), root=root,
                         crop_hw=options.crop_for(test_default=TEST_CROP), augment=options.augment,
                         seed=options.seed)
