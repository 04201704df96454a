"""Data loaders for every data set, behind one registry.

``get_dataset(name, split, data_root)`` builds a data set whose samples are ``(inputs, targets)``:
lists of ``n_inputs`` and ``n_outputs`` float tensors ``3 x H x W``, RGB in [0, 1], in time order;
``dataset.sample_id(index)`` names a sample. ``get_loader`` wraps one in a DataLoader with a
DistributedSampler (one replica unless ``distributed``), and ``set_epoch`` picks the epoch that
both the shuffling and the augmentation draw from."""
import logging

import cv2
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from . import custom, davis, demo, gopro, middlebury, synthetic, ucf101, vimeo90k_septuplet
from .base import EpochOfPasses
from .errors import DatasetError
from .options import SPLITS, make_options

__all__ = ["DATASETS", "SPLITS", "DatasetError", "get_dataset", "get_loader", "set_epoch"]

log = logging.getLogger(__name__)

DATASETS = {
    "vimeo90K_septuplet": vimeo90k_septuplet.build,
    "gopro": gopro.build,
    "ucf101": ucf101.build,
    "davis": davis.build,
    "middlebury": middlebury.build,
    "custom": custom.build,
    **demo.BUILDERS,  # demo (carphone held out), demo_holdout_bikes, demo_holdout_bigbuckbunny
    "synthetic": synthetic.build,
}


def get_dataset(name, split, data_root=None, *, n_inputs=4, n_outputs=1, input_frames="1357",
                crop_size=None, augment=None, val_fraction=0.1, seed=0, motion_crops=1):
    """Build data set ``name`` for ``split`` ('train', 'val' or 'test'); DatasetError on bad input.

    ``crop_size`` (int or (h, w), multiples of 8): training crop, default 256 (demo 128); at test
    time the FLAVR crop of the data set (GoPro 512, UCF101 224, DAVIS 480x840, others full frames).
    The synthetic set renders its clips at ``crop_size``, default 64 for every split.
    A crop larger than the frame is clamped to it and cut to a multiple of 8 (Middlebury keeps odd
    sizes). ``augment`` defaults to True for 'train' only. ``input_frames`` is Vimeo's choice of
    inputs; ``val_fraction`` the clips the custom set holds out; ``seed`` seeds the augmentation.
    ``motion_crops`` > 1: each augmented crop is the one of that many random crops of its window that
    the two-frame average restores worst (more motion per training step)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown data set '{name}': choose one of {', '.join(DATASETS)}")
    options = make_options(split, n_inputs=n_inputs, n_outputs=n_outputs, input_frames=input_frames,
                           crop_size=crop_size, augment=augment, val_fraction=val_fraction, seed=seed,
                           motion_crops=motion_crops)
    dataset = DATASETS[name](split, data_root, options)
    dataset.motion_crops = options.motion_crops
    log.info("%s %s: %d samples from %s", name, split, len(dataset), dataset.root)
    return dataset


def _replicas(distributed):
    """(num_replicas, rank) from torch.distributed when ``distributed``, else (1, 0)."""
    if not distributed:
        return 1, 0
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("distributed=True needs torch.distributed.init_process_group() first")
    return dist.get_world_size(), dist.get_rank()


class EvaluationShardSampler(Sampler):
    """Rank ``rank``'s share of an evaluation set, in order and without the repeated samples that
    DistributedSampler pads its shards with (they would count twice in reduced metrics)."""

    def __init__(self, dataset, num_replicas, rank):
        self.indices = list(range(rank, len(dataset), num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        """Evaluation order does not depend on the epoch."""


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can start an epoch part-way: after ``set_epoch(epoch, skip)`` it
    yields this shard's order for ``epoch`` without its first ``skip`` indices (a run resumed
    mid-epoch sees exactly the batches it had not trained on, none of them loaded twice)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self):
        return max(0, self.num_samples - self.skip)


def _init_worker(worker_id):
    """The DataLoader workers already run in parallel: OpenCV runs in each worker's own thread.
    0, not 1: in a forked worker, setNumThreads(1) can hang on the parent's pthreads pool (once the
    parent has run a parallel OpenCV call, e.g. the demo's resizes; opencv/opencv#5150)."""
    cv2.setNumThreads(0)


def _passes_for(dataset, samples, per_pass, **sampler_options):
    """(``EpochOfPasses`` of ``dataset``, its sampler) with the fewest passes that give each process at
    least ``samples`` samples an epoch (``per_pass``: what one pass gives it)."""
    passes = -(-samples // per_pass)
    while True:
        repeated = EpochOfPasses(dataset, passes)
        sampler = ResumableSampler(repeated, **sampler_options)
        if len(sampler) >= samples:
            return repeated, sampler
        passes += 1


def get_loader(name, split, data_root=None, *, batch_size=1, num_workers=0, shuffle=None,
               distributed=False, seed=0, drop_last=None, min_batches=None, **dataset_kwargs):
    """A DataLoader over ``get_dataset(name, split, data_root, seed=seed, **dataset_kwargs)``.

    Every loader samples through a DistributedSampler (this process's shard when ``distributed``),
    shuffled by default for 'train' only, in an order fixed by (seed, epoch); unshuffled evaluation
    splits are sharded without padding (``EvaluationShardSampler``). ``drop_last`` defaults
    to True for 'train' unless that would leave no batch at all. ``min_batches`` ('train'): an epoch
    of fewer batches per process becomes several passes over the data (``EpochOfPasses``), shuffled
    together, so that it has at least that many. Call ``set_epoch`` every epoch."""
    dataset = get_dataset(name, split, data_root, seed=seed, **dataset_kwargs)
    num_replicas, rank = _replicas(distributed)
    shuffle = (split == "train") if shuffle is None else shuffle
    if split == "train" or shuffle:
        sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        if split == "train" and min_batches and len(sampler) // batch_size < min_batches:
            dataset, sampler = _passes_for(dataset, min_batches * batch_size, len(sampler), num_replicas=num_replicas,
                                           rank=rank, shuffle=shuffle, seed=seed)
    else:
        sampler = EvaluationShardSampler(dataset, num_replicas, rank)
    if drop_last is None:
        drop_last = split == "train" and len(sampler) >= batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_init_worker if num_workers > 0 else None)


def set_epoch(loader, epoch, skip_batches=0):
    """Set the epoch of the loader's sampler (shuffle order) and data set (augmentation draws);
    ``skip_batches`` (training loaders): start after the epoch's first batches (a mid-epoch resume).

    Call it before iterating; workers are restarted every epoch (no persistent workers), so they
    see the new epoch."""
    if skip_batches:
        loader.sampler.set_epoch(epoch, skip=skip_batches * loader.batch_size)
    else:
        loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
