"""End-to-end speed of interpolate.py on the 1280x720 sample clip (bigbuckbunny.mp4, with its AAC
audio): decoding, the model and encoding in turn (--sequential) and at the same time (threaded,
the default), beside the model alone on frames decoded beforehand.

    python benchmarks/bench_interpolate.py                      # first 24 frames, random packed model
    python benchmarks/bench_interpolate.py --frames 8 --threads 1
    python benchmarks/bench_interpolate.py --load_model model.bfl

Prints, per variant, output frames per second (the best of --repeats rounds), its share of the
model-alone speed, and the time each stage was busy as a fraction of the wall time (decode, model,
encode; threaded stages overlap, so they can sum to more than 1). On a busy machine the model's own
speed drifts between runs: the model's busy fraction within one run is the steadier measure of
what the I/O costs. Without --load_model the model is a random compact binary FLAVR
(binary shortcuts, gates factorised 1/16) packed into a .bfl file, as export_packed.py writes it.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is first imported: no progress bars
import av  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import interpolate  # noqa: E402
from engine import pack_binary_model, write_packed  # noqa: E402
from evaluation import DEFAULT_SCENE_THRESHOLD  # noqa: E402
from inference import SlidingWindowInterpolator, VideoReader  # noqa: E402
from inference.readers import sample_clip_path  # noqa: E402
from model import build_model  # noqa: E402
from model.files import load_model  # noqa: E402
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
    return parser.parse_args(argv)


def packed_model(path):
    """Write a random compact binary FLAVR, binarized and packed, to ``path``."""
    torch.manual_seed(0)
    model = build_model(COMPACT_LAYOUT, log_summary=False).eval()
    model.binop = BinOp(model)
    model.binop.binarization()
    write_packed(path, model.config, pack_binary_model(model).state_dict(), {"source": "benchmark"})
    return path


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


def cpu_name():
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else "unknown CPU"


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        model_path = args.load_model or packed_model(os.path.join(workdir, "random.bfl"))
        clip = first_frames(args.input_video or sample_clip_path(), os.path.join(workdir, "clip.mp4"), args.frames)
        print(f"{cpu_name()}, {args.threads} torch threads, load average {os.getloadavg()[0]:.1f}; first "
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
