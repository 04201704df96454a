"""Full-precision FLAVR vs simulated binary FLAVR vs the packed 1-bit engine, side by side.

    python benchmarks/bench_packed.py --threads 2                # 256x256 and 512x512
    python benchmarks/bench_packed.py --threads 2 --large        # + 1280x720
    python benchmarks/bench_packed.py --load_model model_best.pth --profile
    python benchmarks/bench_packed.py --sizes 720x1280 --models compact  # fp32 + one packed model
    python benchmarks/bench_packed.py --isa avx2 --models compact        # as on an AVX2-only CPU

Every (model, size) runs in a fresh process with the same thread count: median seconds per
forward of 4 input frames, speed-up over full precision, peak resident memory of that
process, and the model file sizes. The packed model is loaded from a real .bfl file
exported from the binary model (random weights unless --load_model gives a checkpoint).
Without --load_model the compact layout (binary shortcuts, gates factorised 1/16) is
packed and timed too: the same binary convs, a < 6 MB file; and so is the compact layout
with the warp head (new binary models' default), with and without a real shortcut around
every binary conv, to show what those cost in the engine.
--profile prints where the (first) packed engine's time goes (per operator). --isa avx2 caps
PyTorch, oneDNN (so the fp32 baseline too) and the engine at AVX2, as on a CPU without AVX-512.
"""
import argparse
import io
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_popcount_peak import add_isa_argument, cpu_description, isa_description, run_with_isa  # noqa: E402
from engine import load_packed, ops, pack_binary_model, write_packed  # noqa: E402
from model import build_model  # noqa: E402
from model_loader import load_model  # noqa: E402
from myutils import FRAME_MULTIPLE  # noqa: E402
from util import BinOp  # noqa: E402

KINDS = {"fp32": "FLAVR fp32 (PyTorch)", "simulated": "binary, simulated (PyTorch)", "packed": "binary, packed 1-bit",
         "compact": "compact binary, packed 1-bit", "warp": "compact + warp head, packed",
         "prior": "compact + warp head + matching prior, packed", "shortcuts": "+ real shortcuts, packed"}
COMPACT_LAYOUT = {"bin_downsample": True, "gate_reduction": 16}
RECIPE_LAYOUTS = {"warp": {**COMPACT_LAYOUT, "head": "warp"},
                  "prior": {**COMPACT_LAYOUT, "head": "warp", "motion_prior": "matching"},  # new binary models' default
                  "shortcuts": {**COMPACT_LAYOUT, "head": "warp", "shortcuts": True}}


def frame_size(text):
    height, width = (int(v) for v in text.lower().split("x"))
    if height % FRAME_MULTIPLE or width % FRAME_MULTIPLE:
        raise argparse.ArgumentTypeError(f"{text}: height and width must be multiples of {FRAME_MULTIPLE}")
    return height, width


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every model")
    parser.add_argument("--sizes", type=frame_size, nargs="+", default=[(256, 256), (512, 512)], metavar="HxW")
    parser.add_argument("--large", action="store_true", help="also 720x1280 (1280x720 video frames)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per model and size (after one warm-up)")
    parser.add_argument("--load_model", help="binary checkpoint (.pth) to benchmark (default: random unet_18 2x)")
    parser.add_argument("--kernel", help=f"packed kernel variant (default: auto; sets {ops.KERNEL_ENV})")
    parser.add_argument("--profile", action="store_true", help="per-operator profile of the packed engine")
    parser.add_argument("--models", nargs="+", choices=[k for k in KINDS if k != "fp32"], default=None,
                        help="models to time besides FLAVR fp32 (default: all)")
    add_isa_argument(parser)
    return parser.parse_args(argv)


def binary_model(load_from, layout=None):
    """The binary FLAVR to benchmark, binarized (random unet_18 2x in FLAVR's layout, or with the
    ``layout`` options, unless a checkpoint is given)."""
    if load_from:
        model, _ = load_model(load_from, "cpu")
        if model.config["arch"] != "binary":
            raise SystemExit(f"{load_from}: not a binary FLAVR checkpoint")
        return model
    torch.manual_seed(0)
    model = build_model({"arch": "binary", **(layout or {})}, log_summary=False).eval()
    model.binop = BinOp(model)
    model.binop.binarization()
    return model


def build(kind, workdir, config):
    if kind in ("packed", "compact", *RECIPE_LAYOUTS):
        return load_packed(os.path.join(workdir, f"{kind}.bfl"))[0]
    if kind == "simulated":
        return binary_model(os.environ.get("BENCH_LOAD_MODEL"))
    return build_model({**config, "arch": "flavr"}, log_summary=False).eval()


def peak_rss_mb():
    """This process's peak resident memory (Linux: VmHWM, which unlike ru_maxrss is not
    inherited across exec from the process that spawned it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def measure(kind, size, threads, repeats, workdir, config, profile):
    """Runs in a fresh process: median/min seconds per forward and peak resident memory."""
    torch.set_num_threads(threads)
    model = build(kind, workdir, config)
    frames = [torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    loaded = peak_rss_mb()
    times = []
    with torch.inference_mode():
        model(frames)
        for _ in range(repeats):
            start = time.perf_counter()
            model(frames)
            times.append(time.perf_counter() - start)
        table = None
        if profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                model(frames)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16)
    return {"median": statistics.median(times), "min": min(times), "peak_mb": peak_rss_mb(), "loaded_mb": loaded,
            "profile": table}


def saved_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def export(model, path):
    """Write ``model`` (binarized) as a packed file; returns its size in bytes."""
    return write_packed(path, model.config, pack_binary_model(model).state_dict(), {"source": "benchmark"})


def prepare(workdir, load_from, models=None):
    """Exports the packed file(s) of `models` (default: all); returns the model configuration
    and the file sizes in bytes."""
    model = binary_model(load_from)
    sizes = {"packed": export(model, os.path.join(workdir, "packed.bfl"))} if not models or "packed" in models else {}
    if not load_from:
        for kind, layout in {"compact": COMPACT_LAYOUT, **RECIPE_LAYOUTS}.items():
            if not models or kind in models:
                sizes[kind] = export(binary_model(None, layout), os.path.join(workdir, f"{kind}.bfl"))
    model.binop.restore()  # checkpoints hold the latent weights
    fp32 = build_model({**model.config, "arch": "flavr"}, log_summary=False)
    file_bytes = {"fp32": saved_bytes(fp32), "simulated": saved_bytes(model), **sizes}
    return dict(model.config), {k: b for k, b in file_bytes.items() if not models or k in ("fp32", *models)}


def main(argv=None):
    args = parse_args(argv)
    if args.isa and args.kernel and args.kernel.startswith("avx512"):
        raise SystemExit(f"error: --kernel {args.kernel} needs AVX-512, which --isa {args.isa} excludes; drop one")
    run_with_isa(args.isa)
    if args.kernel:
        os.environ[ops.KERNEL_ENV] = args.kernel
    if args.load_model:
        os.environ["BENCH_LOAD_MODEL"] = args.load_model
    sizes = args.sizes + ([(720, 1280)] if args.large else [])
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as workdir:
        config, file_bytes = prepare(workdir, args.load_model, args.models)
        kernel = os.environ.get(ops.KERNEL_ENV) or f"auto ({ops.auto_variant() or ops.TORCH_VARIANT})"
        print(f"CPU: {cpu_description()[0]}; {args.threads} threads, 4 input frames, batch 1, kernel {kernel}, "
              f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, "
              f"load average {os.getloadavg()[0]:.1f}{isa_description()}")
        print(f"{'size':>10s}  {'model':28s}{'median s':>10s}{'min s':>9s}{'vs fp32':>9s}{'peak RSS MB':>13s}"
              f"{'after load':>12s}")
        profiles, profiled = [], next((k for k in file_bytes if k not in ("fp32", "simulated")), None)
        for size in sizes:
            results = {}
            for kind in file_bytes:
                with context.Pool(1) as pool:
                    results[kind] = pool.apply(measure, (kind, size, args.threads, args.repeats, workdir, config,
                                                         args.profile and kind == profiled))
                r = results[kind]
                ratio = results["fp32"]["median"] / r["median"]
                label = f"{size[0]}x{size[1]}" if kind == "fp32" else ""
                print(f"{label:>10s}  {KINDS[kind]:28s}{r['median']:10.3f}{r['min']:9.3f}{ratio:8.2f}x"
                      f"{r['peak_mb']:13.0f}{r['loaded_mb']:12.0f}", flush=True)
                if r["profile"]:
                    profiles.append((size, r["profile"]))
    print("model files: " + ", ".join(f"{KINDS[k]} {b / 1e6:.2f} MB" for k, b in file_bytes.items()))
    for size, table in profiles:
        print(f"\npacked engine profile at {size[0]}x{size[1]} (one forward):\n{table}")


if __name__ == "__main__":
    main()
