"""Train binary FLAVR on several processes with DistributedDataParallel, launched by torchrun::

    torchrun --nproc_per_node=4 main_bin_ddp.py --dataset vimeo90K_septuplet --data_root ...

NCCL on GPUs (one per LOCAL_RANK), gloo on the CPU (``--cuda False``). Same options and training loop
as ``main_bin.py``; ``--batch_size`` is the batch of all processes together (each loads ``batch_size / N``), as
in one process, so N changes the speed, not the recipe. ``--checkpoint_dir`` must be one folder every node sees
(a shared file system): rank 0 writes the checkpoints and every rank reads the one ``--resume`` continues.
"""
import sys

from training import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], distributed=True, prog="main_bin_ddp.py"))
