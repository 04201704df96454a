"""UCF101 (QVI's 5-frame version, a FLAVR test set): ``ROOT/<id>/frame0.png .. frame3.png`` inputs
and ``framet.png`` the target between frame1 and frame2. Centre-cropped to 224x224 as in FLAVR.
With ``n_inputs=2`` the inputs are frame1 and frame2."""
import os

from .base import InterpolationDataset
from .errors import DatasetError, require_data_root, require_dir, require_file
from .image_io import list_subfolders, read_rgb
from .options import require_test_split

NAME = "ucf101"
TEST_CROP = (224, 224)
INPUT_NAMES = {4: ("frame0", "frame1", "frame2", "frame3"), 2: ("frame1", "frame2")}
TARGET_NAME = "framet"


class UCF101(InterpolationDataset):
    """One sample per triplet folder; ``sample_id`` is the folder name."""

    def __init__(self, root, *, n_inputs, crop_hw, augment, seed):
        super().__init__(root=root, crop_hw=crop_hw, augment=augment, seed=seed)
        self.input_names = INPUT_NAMES[n_inputs]
        self.sample_ids = list_subfolders(require_dir(root, "UCF101 folder"))
        if not self.sample_ids:
            raise DatasetError(f"no sample folders in UCF101 folder: {root}")
        for sample_id in self.sample_ids:
            for name in self.input_names + (TARGET_NAME,):
                require_file(self._frame_path(sample_id, name), "UCF101 frame")
        self.check_first_sample()

    def _frame_path(self, sample_id, name):
        return os.path.join(self.root, sample_id, f"{name}.png")

    def __len__(self):
        return len(self.sample_ids)

    def sample_id(self, index):
        return self.sample_ids[index]

    def load_frames(self, index):
        sample_id = self.sample_ids[index]
        inputs = [read_rgb(self._frame_path(sample_id, name)) for name in self.input_names]
        return inputs, [read_rgb(self._frame_path(sample_id, TARGET_NAME))]


def build(split, data_root, options):
    """UCF101 test triplets (split 'val' or 'test')."""
    require_test_split(NAME, split)
    options.require_frame_counts(NAME, n_inputs=tuple(INPUT_NAMES), n_outputs=(1,))
    return UCF101(require_data_root(NAME, data_root), n_inputs=options.n_inputs,
                  crop_hw=options.crop_for(test_default=TEST_CROP), augment=options.augment,
                  seed=options.seed)
