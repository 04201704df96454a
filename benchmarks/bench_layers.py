"""Per-layer timing of the bit-packed kernels against PyTorch fp32 convolutions.

Runs the binary conv layers of FLAVR unet_18 (2x, 4 input frames) at one resolution:
pack (from NCDHW float input) + binary conv for every kernel variant, and the fp32
F.conv3d / conv_transpose3d of the same shape. Prints the median milliseconds per layer
(pack + conv) and the binary conv's own rate (on packed input) in G binary
multiply-accumulates per second and as a fraction of the variant's XOR+popcount peak on
this machine at the same thread count (bench_popcount_peak.py); the model total's rate is
that of all its binary convs together.

The last lines give each variant's speed-up over fp32 for all these layers together, and the
most it could be on this machine: the fp32 time over the time of the same binary MACs at 100% of
the peak (packing and epilogues free). ``--isa avx2`` runs everything as an AVX2-only CPU would
(see bench_popcount_peak.py).

    python benchmarks/bench_layers.py --size 256 256 --threads 2
    python benchmarks/bench_layers.py --size 256 256 --threads 2 --isa avx2
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_popcount_peak import (add_isa_argument, cpu_description, isa_description, native_variants,  # noqa: E402
                                 peak_rate, run_with_isa)
from engine import ops  # noqa: E402

# name, how many in the model, kind, C_in, C_out, stride, input downscale vs the frame
FLAVR_UNET18_LAYERS = [
    ("layer1 conv", 4, "conv3", 64, 64, (1, 1, 1), 2),
    ("layer2.0 conv1", 1, "conv3", 64, 128, (1, 2, 2), 2),
    ("layer2 conv", 3, "conv3", 128, 128, (1, 1, 1), 4),
    ("layer2.0 downsample", 1, "conv1", 64, 128, (1, 2, 2), 2),
    ("layer3.0 conv1", 1, "conv3", 128, 256, (1, 2, 2), 4),
    ("layer3 conv", 3, "conv3", 256, 256, (1, 1, 1), 8),
    ("layer3.0 downsample", 1, "conv1", 128, 256, (1, 2, 2), 4),
    ("layer4.0 conv1", 1, "conv3", 256, 512, (1, 1, 1), 8),
    ("layer4 conv", 3, "conv3", 512, 512, (1, 1, 1), 8),
    ("layer4.0 downsample", 1, "conv1", 256, 512, (1, 1, 1), 8),
    ("decoder.0", 1, "conv3", 512, 256, (1, 1, 1), 8),
    ("decoder.1", 1, "convT", 512, 128, None, 8),
    ("decoder.2", 1, "convT", 256, 64, None, 4),
    ("decoder.3", 1, "conv3", 128, 64, (1, 1, 1), 2),
    ("decoder.4", 1, "convT", 128, 64, None, 2),
]


def median_seconds(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layer_case(kind, c_in, c_out, stride, scale, height, width, frames):
    """Random input, fp32 conv, binary conv of packed input (given the variant) and MACs of one layer."""
    x = torch.randn(1, c_in, frames, height // scale, width // scale)
    ones, zeros = torch.ones(c_out), torch.zeros(c_out)
    if kind == "convT":
        weight = torch.randn(c_in, c_out, 3, 4, 4)
        packed = ops.pack_conv_transpose_weight(weight)
        fp32 = lambda: F.conv_transpose3d(x, weight, stride=(1, 2, 2), padding=(1, 1, 1))  # noqa: E731
        binary = lambda v, px: ops.binary_conv_transpose3d(px, packed, c_in, ones, zeros, variant=v)  # noqa: E731
        return x, fp32, binary, 12 * c_in * c_out * frames * (4 * x.shape[3] * x.shape[4])
    k = 3 if kind == "conv3" else 1
    weight = torch.randn(c_out, c_in, k, k, k)
    packed = ops.pack_conv_weight(weight)
    fp32 = lambda: F.conv3d(x, weight, stride=stride, padding=k // 2)  # noqa: E731
    binary = lambda v, px: ops.binary_conv3d(px, packed, c_in, stride, ones, zeros, variant=v)  # noqa: E731
    out_hw = ((x.shape[3] - 1) // stride[1] + 1) * ((x.shape[4] - 1) // stride[2] + 1)
    return x, fp32, binary, k ** 3 * c_in * c_out * frames * out_hw


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", nargs="*", default=None, help="default: every native variant")
    add_isa_argument(parser)
    args = parser.parse_args()
    run_with_isa(args.isa)
    variants = args.variants or ([args.isa] if args.isa else native_variants())
    peaks = {v: peak_rate(v, args.threads) for v in variants}
    torch.set_num_threads(args.threads)
    height, width = args.size
    print(f"CPU: {cpu_description()[0]}; {height}x{width}, 4 frames, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f}{isa_description()}")
    print("per variant: ms per layer (pack + conv), the conv's G binary-MAC/s and % of the XOR+popcount peak")
    print(f"{'peak G/s':25s}{'':10s}" + "".join(f"{peaks[v] / 1e9:>24.0f}" for v in variants))
    print(f"{'layer':22s}{'n':>3s}{'fp32':>10s}" + "".join(f"{v:>24s}" for v in variants))
    totals, conv_seconds, model_macs = [0.0] * (1 + len(variants)), [0.0] * len(variants), 0
    with torch.inference_mode():
        for name, count, kind, c_in, c_out, stride, scale in FLAVR_UNET18_LAYERS:
            x, fp32, binary, macs = layer_case(kind, c_in, c_out, stride, scale, height, width, 4)
            times, cells = [median_seconds(fp32, args.repeats)], ""
            for i, v in enumerate(variants):
                times.append(median_seconds(lambda: binary(v, ops.pack_signs(x, variant=v)), args.repeats))
                packed = ops.pack_signs(x, variant=v)
                seconds = median_seconds(lambda: binary(v, packed), args.repeats)
                conv_seconds[i] += count * seconds
                cells += f"{times[-1] * 1e3:10.1f}{macs / seconds / 1e9:8.0f}{100 * macs / seconds / peaks[v]:5.0f}%"
            totals = [total + count * t for total, t in zip(totals, times)]
            model_macs += count * macs
            print(f"{name:22s}{count:3d}{times[0] * 1e3:10.1f}" + cells)
    rates = [model_macs / seconds for seconds in conv_seconds]
    print(f"{'model total':25s}{totals[0] * 1e3:10.1f}" + "".join(
        f"{t * 1e3:10.1f}{rate / 1e9:8.0f}{100 * rate / peaks[v]:5.0f}%" for t, rate, v in zip(totals[1:], rates, variants)))
    print(f"{'speed-up over fp32':35s}" + "".join(f"{totals[0] / t:23.2f}x" for t in totals[1:]))
    print(f"{'  at 100% of the peak':35s}" + "".join(f"{totals[0] * peaks[v] / model_macs:23.2f}x" for v in variants))


if __name__ == "__main__":
    main()
