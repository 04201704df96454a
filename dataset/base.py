"""The base class of every loader: subclasses say which frames make a sample, this class crops,
augments and converts them to tensors."""
from torch.utils.data import Dataset

from myutils import FRAME_MULTIPLE

from .augment import centre_corner, crop_frames, draw_augment_params, flip_and_jitter, motion_seeking_corner, \
    resolve_crop, sample_generator, to_tensor
from .errors import DatasetError


class InterpolationDataset(Dataset):
    """Samples ``(inputs, targets)``: lists of ``n_inputs`` and ``n_outputs`` float tensors
    ``3 x H x W``, RGB in [0, 1], in time order (both lists reversed together by augmentation).

    Subclasses implement ``__len__``, ``sample_id(index) -> str`` and ``load_frames(index) ->
    (inputs, targets)`` as ``H x W x 3`` uint8 RGB arrays. ``crop_hw`` (height, width) or None (the
    whole frame) is clamped to the frame and cut to a multiple of ``multiple_of``; with ``augment``
    the crop corner is random and flips, colour jitter and time reversal are applied, drawn once per
    sample from (seed, epoch, index); without it the crop is centred. ``motion_crops`` (set by
    ``get_dataset``, default 1) > 1 makes an augmented crop the most moving of that many random ones
    (``motion_seeking_corner``); 1 keeps every draw as it was."""

    motion_crops = 1

    def __init__(self, *, root, crop_hw, augment, seed, multiple_of=FRAME_MULTIPLE):
        self.root = root
        self.crop_hw = crop_hw
        self.augment = augment
        self.seed = seed
        self.multiple_of = multiple_of
        self.epoch = 0

    def __len__(self):
        raise NotImplementedError

    def sample_id(self, index):
        """A name for sample ``index``, e.g. ``"00001/0001"``, for saving predictions."""
        raise NotImplementedError

    def load_frames(self, index):
        """Sample ``index`` as two lists of ``H x W x 3`` uint8 RGB arrays (inputs, targets)."""
        raise NotImplementedError

    def set_epoch(self, epoch):
        """Choose the epoch whose augmentations ``__getitem__`` draws."""
        self.epoch = epoch

    def check_first_sample(self):
        """Raise DatasetError now, at construction, if the data set is empty or its first sample
        cannot be decoded."""
        if len(self) == 0:
            raise DatasetError(f"no samples found under {self.root}")
        self.load_frames(0)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        inputs, targets = self.load_frames(index)
        frames = inputs + targets
        image_hw = frames[0].shape[:2]
        if any(frame.shape != frames[0].shape for frame in frames):
            raise DatasetError(f"frames of different sizes in sample {self.sample_id(index)} "
                               f"under {self.root}")
        crop_hw = resolve_crop(image_hw, self.crop_hw, self.multiple_of)
        if not self.augment:
            stacked = to_tensor(crop_frames(frames, centre_corner(image_hw, crop_hw), crop_hw))
            return list(stacked[:len(inputs)]), list(stacked[len(inputs):])
        generator = sample_generator(self.seed, self.epoch, index)
        params = draw_augment_params(generator, image_hw, crop_hw)
        corner = (params.top, params.left)
        if self.motion_crops > 1:
            corner = motion_seeking_corner(generator, inputs, targets, corner, crop_hw, self.motion_crops)
        stacked = to_tensor(flip_and_jitter(crop_frames(frames, corner, crop_hw), params))
        inputs, targets = list(stacked[:len(inputs)]), list(stacked[len(inputs):])
        if params.reverse:
            inputs, targets = inputs[::-1], targets[::-1]
        return inputs, targets


class EpochOfPasses(Dataset):
    """``passes`` passes over ``dataset`` as one epoch, so an epoch can be longer than the data:
    sample ``v`` is ``dataset[v % len(dataset)]`` drawn with the augmentations of pass
    ``v // len(dataset)`` (augmentation epoch ``epoch * passes + pass``, so every pass crops anew)."""

    def __init__(self, dataset, passes):
        self.dataset, self.passes, self.epoch = dataset, passes, 0

    def __len__(self):
        return self.passes * len(self.dataset)

    def sample_id(self, index):
        return self.dataset.sample_id(index % len(self.dataset))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        pass_index, sample = divmod(index, len(self.dataset))
        self.dataset.set_epoch(self.epoch * self.passes + pass_index)
        return self.dataset[sample]
