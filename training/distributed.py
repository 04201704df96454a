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
from model.binconv import synchronize_binary_batch_norms

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
        if not self.distributed:
            return
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def min_over_processes(self, value):
        """The smallest of every rank's integer ``value``."""
        return self._reduced(value, torch.int64, dist.ReduceOp.MIN)

    def sum(self, value):
        """The sum of every rank's integer ``value``."""
        return self._reduced(value, torch.int64, dist.ReduceOp.SUM)

    def _reduced(self, value, dtype, op):
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=dtype, device=self._collective_device())
        dist.all_reduce(tensor, op=op)
        return tensor.item()

    def sums(self, values):
        """The element-wise sums of every rank's list of floats ``values`` (the same length on every rank)."""
        if not self.distributed:
            return list(values)
        totals = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(totals)
        return totals.tolist()

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
        """DistributedDataParallel around ``model``, its BatchNorms synchronized first: every BatchNorm on
        GPUs (SyncBatchNorm); on the CPU those of the binary layers, which compute the synchronized
        statistics themselves (``model.binconv``; PyTorch's SyncBatchNorm runs on GPUs only). So N
        processes with batches of B / N normalise as one process with B. Itself without a process group."""
        if not self.distributed:
            return model
        if self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index])
        synchronize_binary_batch_norms(model)
        others = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                  and not getattr(m, "synchronized", False)]
        if others:
            log.warning("%d BatchNorms outside the binary layers normalise each process's batch on its own "
                        "(PyTorch synchronizes BatchNorm on GPUs only)", len(others))
        return nn.parallel.DistributedDataParallel(model)

    def _collective_device(self):
        return self.device if self.distributed and dist.get_backend() == "nccl" else torch.device("cpu")


def single_process_runtime(cuda=None):
    """One process on CUDA (when available or ``cuda=True``) or the CPU."""
    device = select_device(cuda)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return Runtime(device=device)


def cuda_index(local_rank, device_count, visible_devices=None, torchrun=True):
    """The GPU (index among the ``device_count`` this process sees) of the process with ``local_rank``: its own on a
    node whose GPUs every process sees (``torchrun``), the one it sees where another launcher gave each process its
    own (``CUDA_VISIBLE_DEVICES``, ``visible_devices``, naming one: Slurm's ``srun --gpus-per-task``); ValueError for
    more processes than GPUs."""
    if not torchrun and device_count == 1 and visible_devices and "," not in visible_devices:
        return 0
    if local_rank >= device_count:
        raise ValueError(f"LOCAL_RANK {local_rank} but this node has {device_count} GPU(s): lower --nproc_per_node")
    return local_rank


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
        device = torch.device("cuda", cuda_index(local_rank, torch.cuda.device_count(),
                                                 os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                 torchrun="TORCHELASTIC_RUN_ID" in os.environ))
        torch.cuda.set_device(device)  # no init_process_group(device_id=...): reported to hang NCCL on torch 2.6-2.7.0
        dist.init_process_group("nccl", rank=rank, world_size=world_size, timeout=timeout)
    else:
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timeout)
    log.debug("rank %d of %d on %s", rank, world_size, device)
    return Runtime(device=device, rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown(runtime, clean=True):
    """Leave the process group, if this process joined one, after a ``clean`` run. After an error the process exits
    without leaving it: destroying an NCCL group while other ranks wait in a collective can hang this one too, and
    torchrun stops the other ranks only once one has exited."""
    if clean and runtime is not None and dist.is_initialized():
        dist.destroy_process_group()
