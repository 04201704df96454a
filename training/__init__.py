"""Training of binary FLAVR: one loop (``trainer.py``) behind ``main_bin.py`` (one process) and
``main_bin_ddp.py`` (torchrun, DistributedDataParallel); ``options.py`` holds the command-line
options and ``distributed.py`` the process-group set-up, the only part that differs."""
from training.trainer import main

__all__ = ["main"]
