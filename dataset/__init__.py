"""Data loaders for every data set, behind one registry.

``get_dataset(name, split, data_root)`` builds a data set whose samples are ``(inputs, targets)``:
lists of ``n_inputs`` and ``n_outputs`` float tensors ``3 x H x W``, RGB in [0, 1], in time order;
``dataset.sample_id(index)`` names a sample. ``get_loader`` wraps one in a DataLoader whose batches
hold the same frames as 8-bit tensors (``B x 3 x H x W`` uint8: a quarter of the bytes through the
workers' shared memory), which ``frames_to(device, frames)`` turns into float in [0, 1] on the device.
Training loaders sample each epoch in an order that does not depend on the number of processes
(``ShardedEpochSampler``) and keep their workers between epochs; ``set_epoch`` picks the epoch that
both the shuffling and the augmentation draw from (the data set's epoch is in shared memory, where
the workers read it). With ``host_prior`` (and ``reference_flows``) a loader's collate also computes
what OpenCV computes on the host for each batch (the DIS prior, ``--flow_supervision dis``'s reference
flows), in its workers (in the main process without workers), so a GPU step does not wait for it."""
import logging

import cv2
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler, default_collate

from model.motion_prior import HOST_PRIORS, QUADRATIC_PRIORS, find_motion, reference_flows

from . import custom, davis, demo, gopro, middlebury, synthetic, ucf101, vimeo90k_septuplet
from .base import EpochOfPasses
from .errors import DatasetError
from .options import SPLITS, make_options

__all__ = ["DATASETS", "FRAME_CACHE_SOURCES", "SPLITS", "DatasetError", "HostFlowsCollate", "frames_to",
           "get_dataset", "get_loader", "set_epoch", "unreadable_samples"]

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
FRAME_CACHE_SOURCES = {  # data sets of frame folders that can be read from a frame cache: their clips' parents
    "gopro": gopro.clip_parent_folders,
    "davis": davis.clip_parent_folders,
}


def get_dataset(name, split, data_root=None, *, n_inputs=4, n_outputs=1, input_frames="1357",
                crop_size=None, augment=None, val_fraction=0.1, seed=0, motion_crops=1, frame_cache=None):
    """Build data set ``name`` for ``split`` ('train', 'val' or 'test'); DatasetError on bad input.

    ``crop_size`` (int or (h, w), multiples of 8): training crop, default 256 (demo 128); at test
    time the FLAVR crop of the data set (GoPro 512, UCF101 224, DAVIS 480x840, others full frames).
    The synthetic set renders its clips at ``crop_size``, default 64 for every split.
    A crop larger than the frame is clamped to it and cut to a multiple of 8 (Middlebury keeps odd
    sizes). ``augment`` defaults to True for 'train' only. ``input_frames`` is Vimeo's choice of
    inputs; ``val_fraction`` the clips the custom set holds out; ``seed`` seeds the augmentation.
    ``motion_crops`` > 1: each augmented crop is the one of that many random crops of its window that
    the two-frame average restores worst (more motion per training step). ``frame_cache``: a folder
    that ``cache_frames.py`` filled for this data set (``FRAME_CACHE_SOURCES``), read instead of the frames."""
    if name not in DATASETS:
        raise DatasetError(f"unknown data set '{name}': choose one of {', '.join(DATASETS)}")
    if frame_cache and name not in FRAME_CACHE_SOURCES:
        raise DatasetError(f"a frame cache is for the data sets {', '.join(FRAME_CACHE_SOURCES)}, not '{name}': "
                           "leave out --frame_cache")
    options = make_options(split, n_inputs=n_inputs, n_outputs=n_outputs, input_frames=input_frames,
                           crop_size=crop_size, augment=augment, val_fraction=val_fraction, seed=seed,
                           motion_crops=motion_crops, frame_cache=frame_cache)
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


class ShardedEpochSampler(Sampler):
    """This process's share of a training epoch, in an order that does not depend on how many
    processes share it.

    The epoch's order is one permutation of the data set, seeded by (seed, epoch) as
    DistributedSampler draws it (or the data set's own order unshuffled). After
    ``set_epoch(epoch, skip)`` its first ``skip`` samples are left out (a run resumed mid-epoch has
    trained on them). Process ``rank`` of ``num_replicas`` takes every ``num_replicas``-th sample of
    the rest from the ``rank``-th on, all processes the same number: so step k of any number of
    processes, each loading batches of B / num_replicas, trains on the same B samples, those at
    k B ... (k + 1) B - 1 of the order."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0):
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed = shuffle, seed
        self.epoch = self.skip = 0

    def set_epoch(self, epoch, skip=0):
        self.epoch, self.skip = epoch, skip

    def order(self):
        """The whole epoch's order (every process's), before ``skip``."""
        if not self.shuffle:
            return list(range(len(self.dataset)))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def __iter__(self):
        rest = self.order()[self.skip:]
        share = len(rest) // self.num_replicas
        return iter(rest[self.rank:share * self.num_replicas:self.num_replicas])

    def __len__(self):
        return max(0, len(self.dataset) - self.skip) // self.num_replicas


def _init_worker(worker_id):
    """The DataLoader workers already run in parallel: OpenCV runs in each worker's own thread.
    0, not 1: in a forked worker, setNumThreads(1) can hang on the parent's pthreads pool (once the
    parent has run a parallel OpenCV call, e.g. the demo's resizes; opencv/opencv#5150)."""
    cv2.setNumThreads(0)


class HostFlowsCollate:
    """A DataLoader's collate that also computes OpenCV's flows (in the worker) that training would
    otherwise compute on the host in its step: batches ``(inputs, targets, motion)``, and with
    ``reference_flows`` ``(inputs, targets, motion, references)``.

    ``motion``: the host ``prior``'s (``HOST_PRIORS``) motion (``find_motion``: the half motion ``B x 2 x H x W``
    float32 px between the middle inputs, ``B x 4 x H x W`` for a quadratic prior), or None without a prior;
    ``references``: per target, ``reference_flows``'s
    ``(flows, holds)`` (what ``--flow_supervision dis`` teaches; ``holds`` as bool, 18 bytes a pixel a
    target in all: GoPro 8x at 256x256, 8 MB a sample through shared memory), of the frames without a
    ``reference_margin``-pixel border (``--prior_context``: the prior sees the whole crop, the network and
    its flows the inner one). Both from ``frames_to``'s float frames: the same 8-bit grey images go to
    OpenCV, so the same numbers as in the step."""

    def __init__(self, prior=None, reference_flows=False, reference_margin=0):
        if prior is not None and prior not in HOST_PRIORS:
            raise ValueError(f"{prior!r} is not a host prior ({', '.join(HOST_PRIORS)})")
        self.prior, self.reference_flows, self.reference_margin = prior, reference_flows, reference_margin

    def __call__(self, samples):
        inputs, targets = default_collate(samples)
        middle = len(inputs) // 2  # a quadratic prior sees every input, the others the middle two
        seen = inputs if self.prior in QUADRATIC_PRIORS else inputs[middle - 1:middle + 1]
        frames = frames_to(torch.device("cpu"), seen)
        before, after = frames[len(frames) // 2 - 1], frames[len(frames) // 2]
        motion = find_motion(self.prior, frames) if self.prior is not None else None
        if not self.reference_flows:
            return inputs, targets, motion
        margin = self.reference_margin
        inner = (Ellipsis, slice(margin, -margin), slice(margin, -margin)) if margin else (Ellipsis,)
        references = [reference_flows(target[inner], before[inner], after[inner])
                      for target in frames_to(torch.device("cpu"), targets)]
        return inputs, targets, motion, [(flows, holds.bool()) for flows, holds in references]  # masks as bytes


def _passes_for(dataset, steps, batch_size, **sampler_options):
    """(``EpochOfPasses`` of ``dataset``, its sampler) with the fewest passes that give every process at
    least ``steps`` batches of ``batch_size`` an epoch."""
    passes = 1
    while True:
        repeated = EpochOfPasses(dataset, passes)
        sampler = ShardedEpochSampler(repeated, **sampler_options)
        if len(sampler) // batch_size >= steps:
            return repeated, sampler
        passes += 1


def get_loader(name, split, data_root=None, *, batch_size=1, num_workers=0, shuffle=None,
               distributed=False, seed=0, drop_last=None, min_batches=None, skip_unreadable=False,
               host_prior=None, reference_flows=False, reference_margin=0, pin_memory=False, **dataset_kwargs):
    """A DataLoader over ``get_dataset(name, split, data_root, seed=seed, **dataset_kwargs)``, whose
    batches are 8-bit (``frames_to`` makes them float on a device).

    ``batch_size`` is this process's. Training (and shuffled) loaders sample through a
    ``ShardedEpochSampler`` (this process's share when ``distributed``), shuffled by default for
    'train' only, in an order fixed by (seed, epoch); unshuffled evaluation splits are sharded
    without padding (``EvaluationShardSampler``). ``drop_last`` defaults to True for 'train' unless
    that would leave no batch at all. ``min_batches`` ('train'): an epoch of fewer batches per process
    becomes several passes over the data (``EpochOfPasses``), shuffled together, so that it has at
    least that many. Workers are kept between epochs. ``skip_unreadable``: a sample whose frames cannot
    be read is replaced by the next readable one and counted (``unreadable_samples``) instead of
    stopping the run. ``host_prior`` (one of ``HOST_PRIORS``, or None) and ``reference_flows``: batches
    also hold the motion prior and the reference flows of ``--flow_supervision dis`` (inside a
    ``reference_margin``), computed by the workers (``HostFlowsCollate``). ``pin_memory``: page-locked
    batches, for a model on a GPU. Call ``set_epoch`` every epoch."""
    dataset = get_dataset(name, split, data_root, seed=seed, **dataset_kwargs)
    dataset.frames_as_uint8 = True
    dataset.enable_skipping_unreadable(skip_unreadable, num_workers)
    num_replicas, rank = _replicas(distributed)
    shuffle = (split == "train") if shuffle is None else shuffle
    if split == "train" or shuffle:
        options = dict(num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        sampler = ShardedEpochSampler(dataset, **options)
        if split == "train" and min_batches and len(sampler) // batch_size < min_batches:
            dataset, sampler = _passes_for(dataset, min_batches, batch_size, **options)
    else:
        sampler = EvaluationShardSampler(dataset, num_replicas, rank)
    if drop_last is None:
        drop_last = split == "train" and len(sampler) >= batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      worker_init_fn=_init_worker if num_workers > 0 else None,
                      collate_fn=HostFlowsCollate(host_prior, reference_flows, reference_margin)
                      if host_prior is not None or reference_flows else None)


def unreadable_samples(loader):
    """How many samples ``loader``'s data set replaced because they could not be read (every worker's)."""
    return loader.dataset.unreadable_count()


def frames_to(device, frames):
    """A loader's frames (a list of ``B x 3 x H x W``, uint8 or float) as float in [0, 1] on ``device``:
    8-bit frames travel as bytes and are converted there."""
    return [frame.to(device, non_blocking=True).float().div_(255.0) if frame.dtype == torch.uint8
            else frame.to(device, non_blocking=True) for frame in frames]


def set_epoch(loader, epoch, skip_batches=0):
    """Set the epoch of the loader's sampler (shuffle order) and data set (augmentation draws);
    ``skip_batches`` (training loaders): start after the epoch's first batches of all processes
    together (a mid-epoch resume, with any number of processes). Call it before iterating."""
    sampler = loader.sampler
    if skip_batches:
        sampler.set_epoch(epoch, skip=skip_batches * loader.batch_size * sampler.num_replicas)
    else:
        sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
