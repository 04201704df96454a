"""Training of binary FLAVR: one loop (``trainer.py``) behind ``main_bin.py`` (one process) and
``main_bin_ddp.py`` (torchrun, DistributedDataParallel); only the process-group set-up differs."""
from training.cli import main

__all__ = ["main"]
