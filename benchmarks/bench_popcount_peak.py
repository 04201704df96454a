"""This machine's XOR+popcount peak for every compiled kernel variant, in binary MAC/s.

One binary multiply-accumulate = one bit of XOR + popcount. Each variant runs its own
accumulation loop (the instructions its convolutions use: broadcast activation word XOR
weight vectors, popcount or carry-save adders; 1, 2, 4 or 8 independent counters, no
address arithmetic, tails or epilogue) over words resident in L1, in the C++ extension,
on 1 thread and on --threads threads; the best over counter counts and --repeats runs of
about --seconds each is reported. bench_layers.py prints the binary convolutions'
fraction of this peak.

    python benchmarks/bench_popcount_peak.py --threads 2
    python benchmarks/bench_popcount_peak.py --threads 2 --isa avx2   # as on an AVX2-only CPU

``--isa avx2`` (here and in bench_layers.py / bench_packed.py) runs the benchmark as an AVX2-only
CPU would on a CPU that also has AVX-512: PyTorch's own kernels and oneDNN are capped at AVX2
(ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) and the packed engine runs its avx2 variant, so fp32 and
binary figures compare as on a machine without AVX-512.
"""

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import ops  # noqa: E402

STEPS = 64  # activation words per pass: w is 64 x 64 words (32 KiB at most, L1-resident)
ISA_CAPS = {  # --isa: environment that makes PyTorch, oneDNN and the engine use that instruction set at most
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", ops.KERNEL_ENV: "avx2"},
}
CPU_FLAGS = ("popcnt", "avx2", "avx512f", "avx512bw", "avx512_vpopcntdq", "avx512_bitalg", "asimd")


def cpu_description():
    """(model name, the flags among CPU_FLAGS this CPU reports), from /proc/cpuinfo on Linux."""
    try:
        with open("/proc/cpuinfo") as info:
            fields = dict(line.split(":", 1) for line in info if ":" in line)
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    model = fields.get("model name") or fields.get("CPU part") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def add_isa_argument(parser):
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), default=None,
                        help="cap PyTorch, oneDNN and the engine at this instruction set (default: the CPU's best)")


def run_with_isa(isa):
    """Re-executes this script with ``ISA_CAPS[isa]`` in its environment (PyTorch reads it at start-up),
    unless it is already there; a CPU without that instruction set is an error (one line, exit 2)."""
    if isa is None:
        return
    caps = ISA_CAPS[isa]
    if isa not in cpu_description()[1]:
        raise SystemExit(f"error: --isa {isa}: this CPU does not report {isa}; leave --isa out")
    if any(os.environ.get(key) != value for key, value in caps.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **caps})


def isa_description():
    """How PyTorch's and oneDNN's instruction sets are capped in this process ("" when they are not)."""
    caps = [f"{key}={os.environ[key]}" for key in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if key in os.environ]
    return f"; capped: {' '.join(caps)} (torch runs {torch.backends.cpu.get_cpu_capability()})" if caps else ""


def peak_rate(variant, threads, seconds=0.05, repeats=5):
    """XOR+popcount peak (binary MAC/s) of `variant` on `threads` threads: the best of
    `repeats` runs of about `seconds` each, for each number of independent counters (1, 2,
    4, 8; the most that fit in the registers is not the fastest everywhere)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-2 ** 63, 2 ** 63 - 1, (STEPS,), generator=generator)
    w = torch.randint(-2 ** 63, 2 ** 63 - 1, (STEPS, 64), generator=generator)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return max(_best_rate(a, w, streams, variant, seconds, repeats) for streams in (1, 2, 4, 8))
    finally:
        torch.set_num_threads(previous)


def _best_rate(a, w, streams, variant, seconds, repeats):
    reps = 64
    elapsed, _, _ = ops.popcount_peak(a, w, reps, streams, variant)
    while elapsed < seconds / 4:  # calibrate: about `seconds` per run
        reps *= 4
        elapsed, _, _ = ops.popcount_peak(a, w, reps, streams, variant)
    reps = max(1, int(reps * seconds / elapsed))
    runs = (ops.popcount_peak(a, w, reps, streams, variant) for _ in range(repeats))
    return max(macs / elapsed for elapsed, macs, _ in runs)


def native_variants():
    return [v for v in ops.available_variants() if v != ops.TORCH_VARIANT]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="the multi-threaded column (besides 1 thread)")
    parser.add_argument("--seconds", type=float, default=0.05, help="duration of one run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (the best is kept)")
    parser.add_argument("--variants", nargs="*", default=None, help="default: every native variant")
    add_isa_argument(parser)
    args = parser.parse_args()
    run_with_isa(args.isa)
    model, flags = cpu_description()
    print(f"CPU: {model}; flags: {' '.join(flags) or 'none of ' + ' '.join(CPU_FLAGS)}; "
          f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f}{isa_description()}")
    print("XOR+popcount peak, G binary MAC/s (operands in L1)")
    counts = sorted({1, args.threads})
    print(f"{'variant':16s}" + "".join(f"{f'{t} thread' + ('s' if t > 1 else ''):>14s}" for t in counts))
    for variant in args.variants or ([args.isa] if args.isa else native_variants()):
        rates = [peak_rate(variant, t, args.seconds, args.repeats) for t in counts]
        print(f"{variant:16s}" + "".join(f"{rate / 1e9:14.0f}" for rate in rates))


if __name__ == "__main__":
    main()
