"""Train binary FLAVR on several processes with DistributedDataParallel, launched by torchrun::

    torchrun --nproc_per_node=4 main_bin_ddp.py --dataset vimeo90K_septuplet --data_root ...

NCCL on GPUs (one per LOCAL_RANK), gloo on the CPU (``--cuda False``). Same options and training loop
as ``main_bin.py``; ``--batch_size`` is per process.
"""
import sys

from training import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], distributed=True, prog="main_bin_ddp.py"))
