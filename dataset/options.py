"""Validated loader options shared by every data set builder."""
from dataclasses import dataclass

from myutils import FRAME_MULTIPLE

from .errors import DatasetError

SPLITS = ("train", "val", "test")
TRAIN_CROP = (256, 256)  # FLAVR's training crop


@dataclass(frozen=True)
class DatasetOptions:
    """What ``get_dataset`` was asked for, checked; ``crop_size`` is (height, width) or None."""
    split: str
    n_inputs: int
    n_outputs: int
    input_frames: str
    crop_size: tuple
    augment: bool
    val_fraction: float
    seed: int
    motion_crops: int = 1
    frame_cache: str = None

    @property
    def factor(self):
        """Interpolation factor: ``n_outputs`` new frames between two inputs make ``factor`` = n + 1."""
        return self.n_outputs + 1

    def crop_for(self, test_default, train_default=TRAIN_CROP):
        """The user's crop, else ``train_default`` for training and ``test_default`` otherwise."""
        if self.crop_size is not None:
            return self.crop_size
        return train_default if self.split == "train" else test_default

    def require_frame_counts(self, name, n_inputs=(4,), n_outputs=(1,)):
        """DatasetError unless n_inputs and n_outputs are among those data set ``name`` supports."""
        if self.n_inputs not in n_inputs or self.n_outputs not in n_outputs:
            raise DatasetError(f"data set '{name}' supports n_inputs in {list(n_inputs)} and n_outputs in "
                               f"{list(n_outputs)}, got n_inputs={self.n_inputs}, n_outputs={self.n_outputs}")


def _crop_pair(crop_size):
    if crop_size is None:
        return None
    pair = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 and v % FRAME_MULTIPLE == 0 for v in pair):
        raise DatasetError(f"crop_size must be an int or (height, width) of positive multiples of 8 "
                           f"(the model needs sizes divisible by 8), got {crop_size!r}")
    return pair


def make_options(split, *, n_inputs, n_outputs, input_frames, crop_size, augment, val_fraction, seed,
                 motion_crops=1, frame_cache=None):
    """Check the arguments of ``get_dataset`` and bundle them; DatasetError on a bad value."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    if not isinstance(n_inputs, int) or n_inputs < 2 or n_inputs % 2:
        raise DatasetError(f"n_inputs must be an even number >= 2 (the targets lie between the middle "
                           f"two inputs), got {n_inputs!r}")
    if not isinstance(n_outputs, int) or n_outputs < 1:
        raise DatasetError(f"n_outputs must be an integer >= 1, got {n_outputs!r}")
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(motion_crops, int) or motion_crops < 1:
        raise DatasetError(f"motion_crops must be an integer >= 1 (1: uniform crops), got {motion_crops!r}")
    return DatasetOptions(split=split, n_inputs=n_inputs, n_outputs=n_outputs, input_frames=str(input_frames),
                          crop_size=_crop_pair(crop_size),
                          augment=(split == "train") if augment is None else bool(augment),
                          val_fraction=float(val_fraction), seed=seed, motion_crops=motion_crops,
                          frame_cache=frame_cache)


def require_test_split(name, split):
    """A data set that is only a test set reads it for 'val' and 'test'; 'train' is a DatasetError."""
    if split == "train":
        raise DatasetError(f"data set '{name}' is a test set: use split 'val' or 'test', not 'train'")
