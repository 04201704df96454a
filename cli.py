"""The command-line helpers of all five scripts: True/False flags, ``--cuda``, ``--engine``, device choice,
logging, progress bars (plain lines where the output is not a terminal), and bad input as one line on
stderr with an exit code instead of a traceback.

Exit codes: 0 done; 2 bad input (options, data, model files: the message says what to do);
3 training diverged (NaN/inf; the last good checkpoint is kept); 4 the experiment folder could
not be written (full disk, permissions; the previous checkpoint is kept); 5 the GPU ran out of memory;
130 interrupted.
"""
import argparse
import gc
import logging
import os
import sys
import time

import torch
from tqdm import tqdm

from model.files import ENGINES, is_packed_file

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_WRITE_FAILED, EXIT_OUT_OF_MEMORY, EXIT_INTERRUPTED = 2, 3, 4, 5, 130
PLAIN_PROGRESS_LINES, PLAIN_PROGRESS_SECONDS = 10, 10.0  # plain progress: a line per 10% of the work, 10 s apart
TORCH_FLOOR = (2, 4)  # requirements.txt's torch>=: autocast's device-generic API (get_autocast_dtype, ...)
BAD_INPUT_ERRORS = (ValueError, OSError)  # DatasetError, ModelFileError, InferenceInputError are ValueErrors


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2), not the usage."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def true_or_false(value):
    """argparse type of ``--flag True`` / ``--flag False`` (also 1/0, yes/no)."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def add_cuda_argument(parser):
    """``--cuda True|False`` (a bare ``--cuda`` means True); default None: CUDA when available."""
    parser.add_argument("--cuda", type=true_or_false, nargs="?", const=True, default=None, metavar="True|False",
                        help="True: GPU, False: CPU (default: GPU when available, the CPU for a packed model)")


def add_engine_argument(parser):
    """``--engine auto|packed|simulated``: how a binary checkpoint runs (``model_loader.load_model``)."""
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="binary checkpoints: packed (the bit-packed XNOR engine, converted on load: the "
                        "same outputs within 1e-4, several times faster; CPU only: without --cuda a packed model "
                        "runs on the CPU) or simulated (float convolutions of +-1 values); auto: packed "
                        "on the CPU, simulated on a GPU (default)")


def select_device(cuda=None, model_path=None, engine=None):
    """``cuda=None``: CUDA when present; True: CUDA or a ValueError; False: CPU. A model that runs on the
    packed engine (``model_path`` a ``.bfl`` file, or ``engine="packed"``), which is CPU-only, gets the
    CPU when ``cuda`` is None and a ValueError when it is True. On CUDA, float32 stays float32
    (``exact_float32_on_cuda``)."""
    packed_file = model_path is not None and is_packed_file(model_path)
    if cuda and packed_file:
        raise ValueError(f"{model_path} is a packed model, which runs on the CPU only (the bit-packed XNOR "
                         "engine): use --cuda False, or the checkpoint (.pth) it was exported from on the GPU")
    if cuda and engine == "packed":
        raise ValueError("--engine packed runs on the CPU only (the bit-packed XNOR engine): use --cuda False, "
                         "or --engine auto (simulated on the GPU)")
    packed = packed_file or engine == "packed"
    if cuda is None:
        cuda = torch.cuda.is_available() and not packed
    if cuda and not torch.cuda.is_available():
        raise ValueError("--cuda True but no CUDA device is available: use --cuda False")
    if cuda:
        exact_float32_on_cuda()
    return torch.device("cuda" if cuda else "cpu")


def exact_float32_on_cuda():
    """Float32 convolutions and matrix products on CUDA in float32, not TF32 (PyTorch's default for
    cuDNN convolutions on Ampere and newer GPUs rounds their inputs to 10-bit mantissas, which flips
    signs of a binary model's activations at their thresholds: outputs would differ from the CPU's and
    the packed engine's). Mixed precision (``--amp``, ``--half``) is the fast path on a GPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def setup_logging():
    """INFO messages on stderr, one line each; FFmpeg's own error chatter silenced (our messages say
    what is wrong): PyAV's by default, OpenCV's (the training loaders) unless OPENCV_FFMPEG_LOGLEVEL
    is set."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL; read when FFmpeg first opens


def report_error(message):
    """``<script>: error: <message>`` on stderr."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)


def check_torch_version(version=torch.__version__):
    """ValueError (one line) when ``version`` is older than ``TORCH_FLOOR``."""
    found = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    if found < TORCH_FLOOR:
        floor = ".".join(map(str, TORCH_FLOOR))
        raise ValueError(f"PyTorch {version} is older than {floor}, which this code needs: "
                         f"pip install 'torch>={floor}' (or pip install -r requirements.txt)")


def run_script(main, argv=None):
    """Call ``main(argv)``; bad input (an old PyTorch included) becomes one line on stderr and exit code 2,
    a GPU out of memory one line and exit code 5. What the script imported (torch's ~190k objects) is frozen out of
    garbage collection first: it lives as long as the process, and each full collection walked it (4% of
    interpolate.py's time; data workers forked later share it without copy-on-write)."""
    try:
        check_torch_version()
        gc.freeze()
        main(argv)
    except BAD_INPUT_ERRORS as error:
        report_error(error)
        return EXIT_BAD_INPUT
    except torch.cuda.OutOfMemoryError as error:
        report_error(f"the GPU ran out of memory ({first_sentences(error)}): process fewer frames at once "
                     "(--batch, --test_batch_size), use --half (interpolate.py), or --cuda False")
        return EXIT_OUT_OF_MEMORY
    except KeyboardInterrupt:
        print(f"{os.path.basename(sys.argv[0])}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def first_sentences(error, count=2):
    """The first ``count`` sentences of ``error``'s first line (CUDA's out-of-memory message runs on)."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ". ".join(line.split(". ")[:count]).rstrip(".")


def progress_bar(iterable=None, *, disable=False, file=None, **options):
    """A tqdm progress bar (same arguments) where ``file`` (default stderr) is a terminal; elsewhere (a
    log file, a pipe) a ``PlainProgress``, which writes plain lines instead of carriage-return frames.
    ``TQDM_DISABLE=1`` in the environment turns both off, as it does tqdm."""
    stream = file or sys.stderr
    disable = disable or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")  # tqdm's own switch
    if disable or stream.isatty():
        return tqdm(iterable, disable=disable, file=stream, **options)
    return PlainProgress(iterable, stream, **options)


class PlainProgress:
    """tqdm's interface (iteration, ``update``, ``set_postfix``, ``close``, a context manager) as plain
    lines on ``stream``: ``desc: 40% (20/50 frame, 12 s, loss=0.0123)``, when the work passes another
    1 / PLAIN_PROGRESS_LINES of ``total`` and PLAIN_PROGRESS_SECONDS after the last line (without a
    total: every PLAIN_PROGRESS_SECONDS), and at the end unless ``leave=False`` or already written."""

    def __init__(self, iterable, stream, desc="", total=None, initial=0, unit="it", leave=True, **_):
        self.iterable, self.stream, self.desc, self.unit, self.leave = iterable, stream, desc, unit, leave
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.closed, self.written = initial, "", False, None
        self.start = self.last_line = time.monotonic()
        self.last_part = self._part()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{name}={value}" for name, value in values.items())

    def _part(self):
        """Which 1 / PLAIN_PROGRESS_LINES of the total the work has reached (0 without a total)."""
        return self.n * PLAIN_PROGRESS_LINES // self.total if self.total else 0

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last_line >= PLAIN_PROGRESS_SECONDS and (not self.total or self._part() > self.last_part):
            self._line(now)
            self.last_line, self.last_part = now, self._part()

    def close(self):
        if not self.closed and self.leave and self.written != self.n:
            self._line(time.monotonic())
        self.closed = True

    def _line(self, now):
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        share = f"{self.n / self.total:.0%} " if self.total else ""
        details = ", ".join([count, f"{now - self.start:.0f} s"] + ([self.postfix] if self.postfix else []))
        self.stream.write(f"{self.desc + ': ' if self.desc else ''}{share}({details})\n")
        self.written = self.n
        self.stream.flush()
