"""GoPro: ``ROOT/{train,test}/<video>/<frames sorted by name>``; windows as in ``windows.py``
with factor = n_outputs + 1 (8x: 25-frame windows every 8 frames). 'val' reads the test set.
Test frames are centre-cropped to 512x512 as in FLAVR."""
import os

from .errors import DatasetError, require_data_root
from .windows import WindowDataset, WindowLayout, frame_folder_spans

NAME = "gopro"
TEST_CROP = (512, 512)


def clip_parent_folders(data_root):
    """The folders whose subfolders are GoPro clips (``cache_frames.py`` caches them all)."""
    root = require_data_root(NAME, data_root)
    folders = [os.path.join(root, split) for split in ("train", "test") if os.path.isdir(os.path.join(root, split))]
    if not folders:
        raise DatasetError(f"no GoPro train or test folder in {root} (is the data root right?)")
    return folders


def build(split, data_root, options):
    """GoPro windows of the ``train`` or ``test`` folder."""
    root = require_data_root(NAME, data_root)
    folder = os.path.join(root, "train" if split == "train" else "test")
    return WindowDataset(frame_folder_spans(folder, f"GoPro {os.path.basename(folder)} folder", options.frame_cache),
                         WindowLayout(options.n_inputs, options.factor), root=folder,
                         crop_hw=options.crop_for(test_default=TEST_CROP), augment=options.augment,
                         seed=options.seed)
