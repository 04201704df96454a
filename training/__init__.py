"""Training of binary FLAVR: one loop (``trainer.py``) behind ``main_bin.py`` (one process) and
``main_bin_ddp.py`` (torchrun, DistributedDataParallel). ``state.py``: what a checkpoint holds to
resume exactly; ``experiment.py``: the experiment folder; ``weight_schedule.py``: real weights ->
soft signs -> binary weights; ``options.py``: the command-line options; ``distributed.py``: the
process-group set-up, the only part that differs."""
from training.trainer import main

__all__ = ["main"]
