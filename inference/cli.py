"""What every command-line script shares: logging set-up, the --cuda flag, and turning bad input into
one clear line on stderr with exit code 2 (no traceback)."""
import logging
import os
import sys

from myutils import str2bool

BAD_INPUT_EXIT_CODE = 2
BAD_INPUT_ERRORS = (ValueError, OSError)  # DatasetError, ModelFileError, InferenceInputError are ValueErrors


def setup_logging():
    """INFO messages on stderr, one line each; FFmpeg's own error chatter silenced (our messages say
    what is wrong): PyAV's by default, OpenCV's (the training loaders) unless OPENCV_FFMPEG_LOGLEVEL
    is set."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL; read when FFmpeg first opens


def add_cuda_argument(parser):
    """``--cuda True|False`` (a bare ``--cuda`` means True); default None: CUDA when available."""
    parser.add_argument("--cuda", type=str2bool, nargs="?", const=True, default=None,
                        help="True: GPU, False: CPU (default: GPU when available)")


def run_script(main, argv=None):
    """Call ``main(argv)``; bad input becomes ``<script>: error: <message>`` and exit code 2."""
    try:
        main(argv)
    except BAD_INPUT_ERRORS as error:
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        return BAD_INPUT_EXIT_CODE
    except KeyboardInterrupt:
        print(f"{os.path.basename(sys.argv[0])}: interrupted", file=sys.stderr)
        return 130
    return 0
