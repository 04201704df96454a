"""Process-group set-up: the only thing that differs between ``main_bin.py`` and ``main_bin_ddp.py``.

A ``Runtime`` tells the training loop where it runs (device, rank, world size) and gives it the few
collectives it needs; with one process they are no-ops, so the loop has no special cases.
"""
import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from cli import select_device

log = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Runtime:
    """Where this process trains: ``device``, global ``rank``, ``world_size``, ``local_rank``."""
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self):
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self):
        """Only the main process (rank 0) writes logs, checkpoints and TensorBoard events."""
        return self.rank == 0

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def all_finite(self, value):
        """True when the scalar tensor ``value`` is finite on every rank."""
        finite = torch.isfinite(value.detach().float()).to(self._collective_device())
        if self.distributed:
            finite = finite.to(torch.int32)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite)

    def mean(self, value):
        """The mean of a Python float over the ranks."""
        if not self.distributed:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(total)
        return float(total) / self.world_size

    def gather(self, obj):
        """Every rank's ``obj`` (picklable), as a list indexed by rank."""
        if not self.distributed:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_buffers(self, model):
        """Copy rank 0's buffers (BatchNorm statistics) to every rank; DDP only does so at the next
        forward, so without this the ranks would validate and end with different statistics."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def wrap(self, model):
        """DistributedDataParallel around ``model`` (SyncBatchNorm first on GPUs); itself otherwise."""
        if not self.distributed:
            return model
        if self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index])
        return nn.parallel.DistributedDataParallel(model)

    def _collective_device(self):
        return self.device if self.distributed and dist.get_backend() == "nccl" else torch.device("cpu")


def single_process_runtime(cuda=None):
    """One process on CUDA (when available or ``cuda=True``) or the CPU."""
    device = select_device(cuda)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return Runtime(device=device)


def torchrun_runtime(cuda=None, timeout_minutes=30):
    """Join the process group that ``torchrun`` describes in the environment: NCCL with the
    LOCAL_RANK GPU when CUDA is used, gloo on the CPU otherwise."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(f"{', '.join(missing)} not set: launch with torchrun --nproc_per_node=N "
                         "main_bin_ddp.py ... (or train in one process with main_bin.py)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    device = select_device(cuda)
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPUs: "
                             "lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=rank, world_size=world_size, timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timeout)
    log.debug("rank %d of %d on %s", rank, world_size, device)
    return Runtime(device=device, rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown(runtime):
    """Leave the process group, if this process joined one."""
    if runtime is not None and dist.is_initialized():
        dist.destroy_process_group()
