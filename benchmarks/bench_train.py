"""Training memory and speed: full-precision FLAVR, binary FLAVR in FLAVR's layout, and the default
binary model, side by side in one run.

    python benchmarks/bench_train.py --threads 2                      # width 32, batch 4, 64x64: fp32 and bf16
    python benchmarks/bench_train.py --width 64 --size 256 --batch 2 --steps 2 --amp none bf16 --fit 24 40 80
    python benchmarks/bench_train.py --device cuda --width 64 --size 256 --batch 8 --amp bf16 fp16 --fit 24 40 80

Every (model, precision) is measured in a fresh process running ``Trainer.train_step``, the training
step ``main_bin.py`` runs (BinOp, forward, loss, backward, optimizer), on random frames:

* saved MB/sample: the activations autograd keeps for backward, per sample: the bytes of the distinct
  storages that ``saved_tensors_hooks`` sees during one step at ``--batch``, minus those at half of it,
  divided by the difference (the weights cancel out);
* peak MB: on the CPU, the process's peak resident memory above what it held before building the
  model (``ru_maxrss``); on CUDA, ``torch.cuda.max_memory_allocated`` (weights, gradients, Adam's state
  and activations);
* step s: the median time of a step over ``--steps`` steps after ``--warmup``; with ``--repeats`` R the
  processes run R times in turn and the table gives the median of their medians, with their range.

``--fit GB ...`` also runs every variant at half the batch and prints the largest batch per process
whose peak memory fits in each size (linear in the batch: the peak at ``--batch`` and at half of it).
Models: ``flavr`` (FLAVR, full precision), ``binary_flavr`` (every FLAVR conv binarized, FLAVR's
frames head, no prior), ``binary`` (the default binary model: warp head and matching motion prior).
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import build_model  # noqa: E402
from training.distributed import single_process_runtime  # noqa: E402
from training.options import build_parser, resolve_amp, resolve_options  # noqa: E402
from training.trainer import Trainer  # noqa: E402

MODELS = {
    "flavr": ("FLAVR, full precision", {"arch": "flavr"}),
    "binary_flavr": ("binary, FLAVR's layout and head", {"arch": "binary", "head": "frames", "motion_prior": "none"}),
    "binary": ("binary, default (warp head, matching prior)", {"arch": "binary", "head": "warp",
                                                               "motion_prior": "matching"}),
}
PRECISIONS = ("none", "bf16", "fp16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--amp", nargs="+", choices=PRECISIONS, default=["none", "bf16"],
                        help="precisions to measure: none (float32), bf16 or fp16 autocast (default: none bf16)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (default: 2)")
    parser.add_argument("--width", type=int, default=32, help="--base_channels (FLAVR: 64; default: 32)")
    parser.add_argument("--size", type=int, default=64, help="square crop in pixels, a multiple of 8 (default: 64)")
    parser.add_argument("--batch", type=int, default=4, help="batch per process, at least 2 (default: 4)")
    parser.add_argument("--n_outputs", type=int, default=1, help="frames predicted: factor - 1 (default: 1)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process (default: 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--repeats", type=int, default=1, help="processes per variant, run in turn (default: 1)")
    parser.add_argument("--time_cpu_autocast", action="store_true",
                        help="also time bf16 steps on the CPU (without AVX512-BF16 or AMX, PyTorch emulates bf16 "
                        "there and a step takes minutes; by default those rows give memory only)")
    parser.add_argument("--fit", type=float, nargs="+", metavar="GB", help="memory sizes to fit a batch into")
    parser.add_argument("--fit_size", type=int, metavar="S", help="fit the batch of S x S crops (default: --size): "
                        "the per-sample memory measured at --size scaled by the ratio of pixels")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch < 2 or args.size % 8 or args.steps < 1:
        parser.error("--batch must be at least 2, --size a multiple of 8 and --steps at least 1")
    if args.device == "cpu" and "fp16" in args.amp:
        parser.error("fp16 autocast is for CUDA; on the CPU measure none and bf16")
    return args


def make_trainer(model_name, amp, args):
    """A ``Trainer`` of ``model_name`` as ``main_bin.py`` builds it (FLAVR's recipe: Adam, L1), without
    data loaders or an experiment folder: ``train_step`` is all this benchmark calls."""
    options = build_parser("bench_train", "").parse_args([
        "--dataset", "vimeo90K_septuplet", "--arch", MODELS[model_name][1]["arch"], "--amp", amp,
        "--base_channels", str(args.width), "--n_outputs", str(args.n_outputs),
        "--cuda", str(args.device == "cuda"), "--progress", "False"])
    resolve_options(options)
    config = {**MODELS[model_name][1], "base_channels": args.width, "n_outputs": args.n_outputs}
    torch.manual_seed(0)
    runtime = single_process_runtime(args.device == "cuda")
    resolve_amp(options, runtime.device)
    return Trainer(options, runtime, build_model(config, log_summary=False), (None, None), experiment=None)


def random_batch(batch, args):
    generator = torch.Generator().manual_seed(batch)
    frames = [torch.rand(batch, 3, args.size, args.size, generator=generator) for _ in range(4 + args.n_outputs)]
    return frames[:4], frames[4:]


def saved_bytes(trainer, batch, args):
    """Bytes of the distinct storages autograd saves for backward during one training step."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        trainer.train_step(*random_batch(batch, args), epoch=1)
    return sum(storages.values())


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def measure(model_name, amp, batch, args):
    """One process's figures at ``batch``: peak memory and step times, and at ``--batch`` (when that is
    ``batch``) the saved bytes per sample."""
    torch.set_num_threads(args.threads)
    before = resident_mb() if args.device == "cpu" else 0.0
    trainer = make_trainer(model_name, amp, args)
    device = trainer.runtime.device
    per_sample = None
    if batch == args.batch:
        half = batch // 2
        per_sample = (saved_bytes(trainer, batch, args) - saved_bytes(trainer, half, args)) / (batch - half) / 2 ** 20
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    inputs, targets = random_batch(batch, args)
    times = []
    timed = device.type == "cuda" or amp == "none" or args.time_cpu_autocast
    for step in range(args.warmup + args.steps if timed else 1):
        synchronize(device)
        start = time.perf_counter()
        trainer.train_step(inputs, targets, epoch=1)
        synchronize(device)
        if timed and step >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return {"saved_mb_per_sample": per_sample, "peak_mb": peak, "step_s": statistics.median(times) if times else None}


def run_child(model_name, amp, batch, args, timeout=None):
    """``measure`` in a fresh process (so that its peak memory is its own), stopped after ``timeout`` s."""
    command = [sys.executable, __file__, "--child", json.dumps([model_name, amp, batch]), "--device", args.device,
               "--threads", str(args.threads), "--width", str(args.width), "--size", str(args.size),
               "--batch", str(args.batch), "--n_outputs", str(args.n_outputs), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--amp", amp] + (["--time_cpu_autocast"] if args.time_cpu_autocast else [])
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"error: {model_name} ({amp}) took more than {timeout:.0f} s")
    if process.returncode != 0:
        raise SystemExit(f"error: {model_name} ({amp}) failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def machine_description(args):
    if args.device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    from bench_popcount_peak import cpu_description
    model, flags = cpu_description()
    return (f"{model} ({' '.join(flags) or platform.machine()}), torch {torch.__version__}, "
            f"{args.threads} threads, kernel {torch.backends.cpu.get_cpu_capability()}")


def fitted_batch(full, half, batch, gigabytes, pixel_ratio=1.0):
    """The largest batch whose peak memory fits in ``gigabytes``: linear in the batch through ``half`` and
    ``full`` MB (at ``batch // 2`` and ``batch``), its per-sample part scaled by ``pixel_ratio``."""
    per_sample = (full - half) / (batch - batch // 2)
    fixed = full - batch * per_sample
    return max(0, int((gigabytes * 1024 - fixed) // (per_sample * pixel_ratio)))


def table(results, args):
    lines = [f"{machine_description(args)}; width {args.width}, batch {args.batch}, {args.size}x{args.size}, "
             f"{args.n_outputs + 1}x, loss L1, Adam",
             f"{'model':48s} {'precision':9s} {'saved MB/sample':>15s} {'vs FLAVR':>8s} {'peak MB':>8s} "
             f"{'step s (range)':>20s} {'vs FLAVR':>8s}"]
    for amp in args.amp:
        reference = results.get(("flavr", amp))
        for name in args.models:
            r = results[(name, amp)]
            saved_ratio = f"{r['saved_mb_per_sample'] / reference['saved_mb_per_sample']:.2f}x" if reference else ""
            timed = r["step_s"] is not None and reference and reference["step_s"] is not None
            step_ratio = f"{r['step_s'] / reference['step_s']:.2f}x" if timed else ""
            steps = (f"{r['step_s']:.3f} ({min(r['step_runs']):.3f}-{max(r['step_runs']):.3f})"
                     if r["step_s"] is not None else "not timed")
            lines.append(f"{MODELS[name][0]:48s} {'fp32' if amp == 'none' else amp:9s} "
                         f"{r['saved_mb_per_sample']:15.1f} {saved_ratio:>8s} {r['peak_mb']:8.0f} {steps:>20s} "
                         f"{step_ratio:>8s}")
            if args.fit:
                size = args.fit_size or args.size
                ratio = (size / args.size) ** 2
                fits = ", ".join(f"{gb:g} GB: {fitted_batch(r['peak_mb'], r['half_peak_mb'], args.batch, gb, ratio)}"
                                 for gb in args.fit)
                lines.append(f"{'':48s} largest batch per process of {size}x{size} crops that fits {fits}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        model_name, amp, batch = json.loads(args.child)
        print(json.dumps(measure(model_name, amp, batch, args)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available: use --device cpu")
    runs = {}
    for _ in range(args.repeats):
        for amp in args.amp:
            for name in args.models:
                runs.setdefault((name, amp), []).append(run_child(name, amp, args.batch, args))
    results = {}
    for key, measured in runs.items():
        steps = [m["step_s"] for m in measured if m["step_s"] is not None]
        results[key] = {**measured[0], "step_s": statistics.median(steps) if steps else None, "step_runs": steps,
                        "peak_mb": statistics.median(m["peak_mb"] for m in measured)}
        if args.fit:
            results[key]["half_peak_mb"] = run_child(*key, args.batch // 2, args)["peak_mb"]
    print("python benchmarks/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(table(results, args))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine_description(args), "args": vars(args),
                       "results": [{"model": k[0], "amp": k[1], **v} for k, v in results.items()]}, handle, indent=1)


if __name__ == "__main__":
    main()
