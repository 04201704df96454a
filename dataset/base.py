"""The base class of every loader: subclasses say which frames make a sample, this class crops,
augments and converts them to tensors."""
import logging

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from myutils import FRAME_MULTIPLE

from .augment import centre_corner, crop_frames, draw_augment_params, flip_and_jitter, motion_seeking_corner, \
    resolve_crop, sample_generator, to_tensor
from .errors import DatasetError

log = logging.getLogger(__name__)


class SharedEpoch:
    """The epoch a data set draws from, in shared memory: set in the main process (``set_epoch``), read
    by every DataLoader worker, including workers kept between epochs (each holds its own copy of the
    data set, made when it started)."""

    def __init__(self):
        self.value = torch.zeros((), dtype=torch.int64).share_memory_()

    def set(self, epoch):
        self.value.fill_(epoch)

    def get(self):
        return int(self.value)


class InterpolationDataset(Dataset):
    """Samples ``(inputs, targets)``: lists of ``n_inputs`` and ``n_outputs`` float tensors
    ``3 x H x W``, RGB in [0, 1], in time order (both lists reversed together by augmentation); with
    ``frames_as_uint8`` (set by ``get_loader``), the same frames as uint8 tensors (0-255; augmented
    frames rounded to 8 bits), which is how loaders' batches travel.

    Subclasses implement ``__len__``, ``sample_id(index) -> str`` and ``load_frames(index) ->
    (inputs, targets)`` as ``H x W x 3`` uint8 RGB arrays (``self.epoch`` is the epoch being drawn).
    ``crop_hw`` (height, width) or None (the whole frame) is clamped to the frame and cut to a multiple
    of ``multiple_of``; with ``augment`` the crop corner is random and flips, colour jitter and time
    reversal are applied, drawn once per sample from (seed, epoch, index); without it the crop is
    centred. ``motion_crops`` (set by ``get_dataset``, default 1) > 1 makes an augmented crop the most
    moving of that many random ones (``motion_seeking_corner``); 1 keeps every draw as it was."""

    motion_crops = 1
    frames_as_uint8 = False

    def __init__(self, *, root, crop_hw, augment, seed, multiple_of=FRAME_MULTIPLE):
        self.root = root
        self.crop_hw = crop_hw
        self.augment = augment
        self.seed = seed
        self.multiple_of = multiple_of
        self.shared_epoch = SharedEpoch()
        self.epoch = 0  # the epoch of the sample being drawn (in this process)
        self.unreadable = None  # per-process counts of replaced samples, once enable_skipping_unreadable

    def __len__(self):
        raise NotImplementedError

    def sample_id(self, index):
        """A name for sample ``index``, e.g. ``"00001/0001"``, for saving predictions."""
        raise NotImplementedError

    def load_frames(self, index):
        """Sample ``index`` as two lists of ``H x W x 3`` uint8 RGB arrays (inputs, targets)."""
        raise NotImplementedError

    def set_epoch(self, epoch):
        """Choose the epoch whose augmentations ``__getitem__`` draws (in every worker too)."""
        self.shared_epoch.set(epoch)

    def check_first_sample(self):
        """Raise DatasetError now, at construction, if the data set is empty or its first sample
        cannot be decoded."""
        if len(self) == 0:
            raise DatasetError(f"no samples found under {self.root}")
        self.load_frames(0)

    def enable_skipping_unreadable(self, enabled, workers=0):
        """With ``enabled``, a sample whose frames cannot be read is logged, counted (by every one of
        ``workers`` DataLoader workers, or the main process: ``unreadable_count``) and replaced by the next
        readable one instead of raising DatasetError."""
        self.unreadable = torch.zeros(workers + 1, dtype=torch.int64).share_memory_() if enabled else None

    def unreadable_count(self):
        """Samples replaced so far because they could not be read (0 unless skipping is enabled)."""
        return 0 if self.unreadable is None else int(self.unreadable.sum())

    def readable_frames(self, index):
        """``load_frames(index)``, or with skipping enabled that of the next readable sample after it."""
        for attempt in range(len(self) if self.unreadable is not None else 1):
            candidate = (index + attempt) % len(self)
            try:
                return self.load_frames(candidate)
            except DatasetError as error:
                if self.unreadable is None:
                    raise
                worker = get_worker_info()
                self.unreadable[0 if worker is None else worker.id + 1] += 1
                log.warning("skipped sample %s: %s", self.sample_id(candidate), error)
        raise DatasetError(f"no readable sample under {self.root}")

    def __getitem__(self, index):
        return self.sample(index, self.shared_epoch.get())

    def sample(self, index, epoch):
        """Sample ``index`` with the augmentation of ``epoch``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        self.epoch = epoch
        inputs, targets = self.readable_frames(index)
        frames = inputs + targets
        image_hw = frames[0].shape[:2]
        if any(frame.shape != frames[0].shape for frame in frames):
            raise DatasetError(f"frames of different sizes in sample {self.sample_id(index)} "
                               f"under {self.root}")
        crop_hw = resolve_crop(image_hw, self.crop_hw, self.multiple_of)
        if not self.augment:
            stacked = self._tensor(crop_frames(frames, centre_corner(image_hw, crop_hw), crop_hw))
            return list(stacked[:len(inputs)]), list(stacked[len(inputs):])
        generator = sample_generator(self.seed, epoch, index)
        params = draw_augment_params(generator, image_hw, crop_hw)
        corner = (params.top, params.left)
        if self.motion_crops > 1:
            corner = motion_seeking_corner(generator, inputs, targets, corner, crop_hw, self.motion_crops)
        augmented = flip_and_jitter(crop_frames(frames, corner, crop_hw) / np.float32(255.0), params)
        stacked = self._tensor(augmented)
        inputs, targets = list(stacked[:len(inputs)]), list(stacked[len(inputs):])
        if params.reverse:
            inputs, targets = inputs[::-1], targets[::-1]
        return inputs, targets

    def _tensor(self, frames):
        """``T x h x w x 3`` frames (uint8, or float32 in [0, 1]) -> ``T x 3 x h x w``: uint8 with
        ``frames_as_uint8`` (floats rounded to 8 bits), else float32 in [0, 1]."""
        if self.frames_as_uint8:
            if frames.dtype != np.uint8:
                frames = np.rint(frames * np.float32(255.0)).astype(np.uint8)
            return to_tensor(frames)
        if frames.dtype == np.uint8:
            frames = frames.astype(np.float32) / np.float32(255.0)
        return to_tensor(frames)


class EpochOfPasses(Dataset):
    """``passes`` passes over ``dataset`` as one epoch, so an epoch can be longer than the data:
    sample ``v`` is ``dataset[v % len(dataset)]`` drawn with the augmentations of pass
    ``v // len(dataset)`` (augmentation epoch ``epoch * passes + pass``, so every pass crops anew)."""

    def __init__(self, dataset, passes):
        self.dataset, self.passes, self.shared_epoch = dataset, passes, SharedEpoch()

    def __len__(self):
        return self.passes * len(self.dataset)

    def sample_id(self, index):
        return self.dataset.sample_id(index % len(self.dataset))

    def set_epoch(self, epoch):
        self.shared_epoch.set(epoch)

    def unreadable_count(self):
        return self.dataset.unreadable_count()

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        pass_index, sample = divmod(index, len(self.dataset))
        return self.dataset.sample(sample, self.shared_epoch.get() * self.passes + pass_index)
