"""Middlebury ``other`` set: ``ROOT/other-data/<seq>/frame07.png .. frame14.png`` and ground truth
``ROOT/other-gt-interp/<seq>/frame10i11.png``. Only sequences with ground truth are read (the
evaluation sequences, whose ground truth is hidden, are skipped).

Inputs frame09..frame12 and target frame10i11; a sequence with only frame10/frame11 is fed as
[10, 10, 11, 11] like FLAVR. Frames keep their odd sizes (no multiple-of-8 cut): the evaluation
pads them for the model. With ``n_inputs=2`` the inputs are frame10 and frame11."""
import os

from .base import InterpolationDataset
from .errors import DatasetError, require_data_root, require_dir, require_file
from .image_io import list_subfolders, read_rgb
from .options import require_test_split

NAME = "middlebury"
TARGET_NAME = "frame10i11.png"
FULL_INPUTS = {4: (9, 10, 11, 12), 2: (10, 11)}
PAIR_INPUTS = {4: (10, 10, 11, 11), 2: (10, 11)}


class Middlebury(InterpolationDataset):
    """One sample per sequence with ground truth; ``sample_id`` is its name, e.g. ``"Beanbags"``."""

    def __init__(self, root, *, n_inputs, crop_hw, augment, seed):
        super().__init__(root=root, crop_hw=crop_hw, augment=augment, seed=seed, multiple_of=1)
        data_dir = require_dir(os.path.join(root, "other-data"), "Middlebury other-data folder")
        gt_dir = require_dir(os.path.join(root, "other-gt-interp"), "Middlebury other-gt-interp folder")
        self.sequences = [s for s in list_subfolders(gt_dir)
                          if os.path.isfile(os.path.join(gt_dir, s, TARGET_NAME))]
        if not self.sequences:
            raise DatasetError(f"no sequence folder with {TARGET_NAME} in {gt_dir}")
        self.input_paths = [self._input_paths(data_dir, s, n_inputs) for s in self.sequences]
        self.target_paths = [os.path.join(gt_dir, s, TARGET_NAME) for s in self.sequences]
        self.check_first_sample()

    @staticmethod
    def _input_paths(data_dir, sequence, n_inputs):
        require_dir(os.path.join(data_dir, sequence), "Middlebury sequence folder (it has ground truth)")
        return input_frame_paths(os.path.join(data_dir, sequence), n_inputs)

    def __len__(self):
        return len(self.sequences)

    def sample_id(self, index):
        return self.sequences[index]

    def load_frames(self, index):
        return [read_rgb(p) for p in self.input_paths[index]], [read_rgb(self.target_paths[index])]


def input_frame_paths(sequence_dir, n_inputs=4):
    """The model's input frames of a Middlebury sequence folder: frame09..frame12 (``n_inputs`` 4) or
    frame10, frame11 (2); a sequence with only frame10 and frame11 gives [10, 10, 11, 11] (FLAVR).
    DatasetError when frame10 or frame11 is missing."""
    def path(number):
        return os.path.join(sequence_dir, f"frame{number:02d}.png")

    has_all = all(os.path.isfile(path(n)) for n in FULL_INPUTS[n_inputs])
    numbers = FULL_INPUTS[n_inputs] if has_all else PAIR_INPUTS[n_inputs]
    return [require_file(path(n), "Middlebury frame") for n in numbers]


def build(split, data_root, options):
    """Middlebury sequences with ground truth (split 'val' or 'test'), uncropped unless ``crop_size``."""
    require_test_split(NAME, split)
    options.require_frame_counts(NAME, n_inputs=tuple(FULL_INPUTS), n_outputs=(1,))
    return Middlebury(require_data_root(NAME, data_root), n_inputs=options.n_inputs,
                      crop_hw=options.crop_for(test_default=None), augment=options.augment, seed=options.seed)
