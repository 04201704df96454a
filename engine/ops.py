"""Bit-packed binary convolutions: the Python face of the `bitconv` C++ extension.

Semantics (the binary FLAVR conventions):
  * signs: s = +1 where fma(x, scale, shift) >= 0, else -1 (so sign(0) = +1); packed as
    bits (1 for -1) along the channel axis into 64-bit words, channels-last, with a
    one-voxel halo of zero words around T, H, W, i.e. the model's +1 "one-padding".
  * conv: y = dot * multiplier[c] + bias[c], dot = K - 2 * popcount(a XOR w) the exact
    +-1 dot product over K = taps * in_channels terms, then y < 0 ? y * slope : y when a
    negative_slope is given (0.0 = ReLU, 0.2 = LeakyReLU(0.2)).

Float tensors are NCDHW (channels_last_3d input is accepted too); outputs are contiguous.
The C++ extension is built on first use (cached under ~/.cache/binary_flavr or
TORCH_EXTENSIONS_DIR). Kernel variants: "avx512_vpopcnt", "avx512bw", "avx2" (x86),
"neon" (aarch64), "scalar" (C++, portable), and "torch" (pure PyTorch, any device, also the
fallback when the build fails).
"auto" runs the one measured fastest on this machine (auto_variant); BINARY_FLAVR_KERNEL
overrides the default.
"""

import hashlib
import logging
import os
import threading
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

KERNEL_ENV = "BINARY_FLAVR_KERNEL"
TORCH_VARIANT = "torch"
WORD_BITS = 64
GROUP = 8  # output channels per packed weight group

_CSRC = Path(__file__).resolve().parent / "csrc"
_build_lock = threading.Lock()
_native_variants = None  # None: not built yet; then the C++ variants this CPU runs ([] if the build failed)
_auto_lock = threading.Lock()
_auto_choice = []  # once measured: [the variant "auto" runs, or None without the extension]


class BitconvError(ValueError):
    """Bad arguments to a bit-packed op, or a kernel variant this machine cannot run."""


def _build_directory(name):
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return None  # torch's own default honours it
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    version = torch.__version__.replace("+", "_")
    path = cache / "binary_flavr" / "torch_extensions" / f"torch{version}" / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def extension_available():
    """Builds (first call only) and loads the C++ extension; False if that failed."""
    return bool(_native())


def _native():
    global _native_variants
    with _build_lock:
        if _native_variants is None:
            _native_variants = list(torch.ops.bitconv.variants()) if _try_build() else []
    return _native_variants


class _WithoutCudaHomeWarning(logging.Filter):
    """Drops cpp_extension's "No CUDA runtime is found, using CUDA_HOME=..." warning, logged when it
    is imported on a machine without CUDA: it concerns CUDA builds, and the engine builds CPU code."""

    def filter(self, record):
        return "No CUDA runtime is found" not in record.getMessage()


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported without its CUDA_HOME warning."""
    extension_logger, quiet = logging.getLogger("torch.utils.cpp_extension"), _WithoutCudaHomeWarning()
    extension_logger.addFilter(quiet)
    try:
        from torch.utils import cpp_extension
    finally:
        extension_logger.removeFilter(quiet)
    return cpp_extension


def _try_build():
    """Compile and load the extension: with OpenMP when ATen uses it (at::parallel_for is
    inline OpenMP, serial without -fopenmp), else or if that fails without it."""
    cpp_extension = _cpp_extension()

    header_hash = hashlib.sha1((_CSRC / "bitconv_kernels.h").read_bytes()).hexdigest()[:12]
    flags = ["-O3", "-ffp-contract=off", f"-DBITCONV_KERNELS_HASH={header_hash}"]
    attempts = [["-fopenmp"], []] if torch._C.has_openmp and os.name != "nt" else [[]]
    error = None
    for openmp in attempts:
        name = "binary_flavr_bitconv" + ("_omp" if openmp else "")
        try:
            cpp_extension.load(name=name, sources=[str(_CSRC / "bitconv.cpp"), str(_CSRC / "warp_blend.cpp")], extra_cflags=flags + openmp,
                               extra_ldflags=openmp, build_directory=_build_directory(name), is_python_module=False,
                               verbose=False)
            return True
        except Exception as exc:  # any build or load failure: try the next flags, then the PyTorch path
            logger.debug("bitconv build failed with flags %s", flags + openmp, exc_info=True)
            error = exc
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    warnings.warn(f"binary_flavr: bitconv C++ extension unavailable ({reason}); using the slower pure-PyTorch kernels")
    return False


def available_variants():
    """Kernel variants this machine can run, fastest first ("torch" always last)."""
    return _native() + [TORCH_VARIANT]


def auto_variant():
    """The C++ variant that "auto" runs: of the SIMD variants this CPU supports, the fastest on
    a small binary conv, timed once per process (by measurement, not by CPU flags: e.g. where
    512-bit instructions run as two halves, AVX2 can compete). None without the extension."""
    with _auto_lock:
        if not _auto_choice:
            candidates = [v for v in _native() if v != "scalar"] or _native()
            timed = len(candidates) > 1
            _auto_choice.append(min(candidates, key=_calibration_seconds) if timed else next(iter(candidates), None))
    return _auto_choice[0]


def default_variant():
    """The variant that calls without `variant` run on CPU tensors: BINARY_FLAVR_KERNEL if set,
    else auto's choice, else "torch" (no extension)."""
    chosen = os.environ.get(KERNEL_ENV)
    if chosen and chosen != "auto":
        return chosen
    return auto_variant() or TORCH_VARIANT


def _calibration_seconds(variant, repeats=5):
    """Best of `repeats` timings of a 128 -> 128 channel 3x3x3 binary conv on 1 x 1 x 1024 voxels
    (0.45 G binary MACs): a single output row, so one thread computes it, unaffected by how
    many threads torch runs and by other processes holding the other cores."""
    generator = torch.Generator().manual_seed(0)
    x = torch.ops.bitconv.pack_signs([torch.randn(1, 128, 1, 1, 1024, generator=generator)], torch.ones(128),
                                     torch.zeros(128), variant)
    weight = pack_conv_weight(torch.randn(128, 128, 3, 3, 3, generator=generator))
    ones, zeros = torch.ones(128), torch.zeros(128)
    seconds = []
    for _ in range(repeats + 1):  # the first run warms up
        start = time.perf_counter()
        torch.ops.bitconv.conv3d(x, weight, 128, [1, 1, 1], ones, zeros, None, variant)
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:])


def _resolve(variant, *tensors):
    """Returns the C++ variant name to call, or None for the PyTorch path."""
    variant = variant or os.environ.get(KERNEL_ENV) or "auto"
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    if variant == TORCH_VARIANT or (variant == "auto" and not on_cpu):
        return None
    if variant == "auto":
        return auto_variant()
    if variant not in available_variants():
        raise BitconvError(
            f"kernel variant {variant!r} is not available here; choose auto or one of {', '.join(available_variants())}"
        )
    if not on_cpu:
        raise BitconvError(f"kernel variant {variant!r} runs on CPU tensors only; use 'torch' or 'auto' for other devices")
    return variant


# ----------------------------------------------------------------------------------------
# Packing


def words_for(channels):
    """Number of 64-bit words holding `channels` sign bits."""
    return (channels + WORD_BITS - 1) // WORD_BITS


def pack_bits(negative):
    """Bool `... x C` (True = -1) -> int64 `... x words`, channel 64k+i in bit i of word k."""
    channels = negative.shape[-1]
    padded = F.pad(negative.to(torch.int64), (0, words_for(channels) * WORD_BITS - channels))
    padded = padded.view(*negative.shape[:-1], -1, WORD_BITS)
    shifts = torch.arange(WORD_BITS, device=negative.device, dtype=torch.int64)
    return (padded << shifts).sum(dim=-1)


def unpack_signs(words, channels):
    """int64 `... x words` -> float +-1 `... x channels` (inverse of pack_bits)."""
    shifts = torch.arange(WORD_BITS, device=words.device, dtype=torch.int64)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    bits = bits.flatten(-2)[..., :channels]
    return 1.0 - 2.0 * bits.to(torch.float32)


def batchnorm_sign_affine(weight, bias, running_mean, running_var, eps):
    """Per-channel (scale, shift) with sign(bn(x)) = +1 exactly where fma(x, scale, shift) >= 0,
    bn being PyTorch's eval BatchNorm on the CPU, reproduced operation for operation:
    scale = rsqrt(var + eps) * weight, shift = fma(-mean, scale, bias) in float32.
    weight/bias may be None (affine=False). Returns two float32 tensors of shape C (CPU).
    """
    var, mean = running_var.detach().float().cpu(), running_mean.detach().float().cpu()
    gamma = torch.ones_like(mean) if weight is None else weight.detach().float().cpu()
    beta = torch.zeros_like(mean) if bias is None else bias.detach().float().cpu()
    scale = torch.rsqrt(var + eps) * gamma
    shift = (beta.double() - mean.double() * scale.double()).float()
    return scale, shift


def pack_signs(x, scale=None, shift=None, variant=None):
    """Real activations `B x C x T x H x W` -> packed signs `B x (T+2) x (H+2) x (W+2) x words`.

    x: one tensor, or a list of tensors `B x C_i x T x H x W` packed as their channel-wise
    concatenation (without materialising it). Sign = +1 where fma(x, scale, shift) >= 0
    (per channel), else -1; without scale/shift the signs of x itself (x >= 0 -> +1),
    which packs ready +-1 tensors. The halo holds zero words (= +1, the one-padding).
    Tensors may be contiguous (NCDHW) or channels_last_3d.
    """
    parts = list(x) if isinstance(x, (list, tuple)) else [x]
    if not parts or any(p.dim() != 5 for p in parts):
        raise BitconvError(f"pack_signs expects B x C x T x H x W activations, got shapes {[tuple(p.shape) for p in parts]}")
    if any(p.shape[:1] + p.shape[2:] != parts[0].shape[:1] + parts[0].shape[2:] for p in parts):
        raise BitconvError(f"tensors packed together must share B, T, H, W, got {[tuple(p.shape) for p in parts]}")
    parts = [p.float() for p in parts]
    channels = sum(p.shape[1] for p in parts)
    device = parts[0].device
    scale = torch.ones(channels, device=device) if scale is None else scale
    shift = torch.zeros(channels, device=device) if shift is None else shift
    native = _resolve(variant, *parts)
    if native is not None:
        return torch.ops.bitconv.pack_signs(parts, scale.float().cpu(), shift.float().cpu(), native)
    joined = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    view = (1, channels, 1, 1, 1)
    affine = joined.double() * scale.double().view(view) + shift.double().view(view)  # exact sign of the fma
    words = pack_bits(~(affine >= 0).permute(0, 2, 3, 4, 1))
    return F.pad(words, (0, 0, 1, 1, 1, 1, 1, 1)).contiguous()


def pack_weight_bits(weight):
    """Conv-style weight `C_out x C_in x k...` -> sign bits `C_out x taps x words` (int64).

    The layout-independent form stored in packed model files: taps in (kt, kh, kw) order,
    bits packed along the input channels, bit = 1 for a negative weight (sign(0) = +1).
    """
    return pack_bits((weight.detach() < 0).flatten(2).transpose(1, 2))


def conv_kernel_layout(bits):
    """Sign bits `C_out x taps x words` -> the kernels' layout `groups x taps x words x 8`."""
    out_channels = bits.shape[0]
    groups = (out_channels + GROUP - 1) // GROUP
    padded = F.pad(bits, (0, 0, 0, 0, 0, groups * GROUP - out_channels))
    return padded.view(groups, GROUP, *bits.shape[1:]).permute(0, 2, 3, 1).contiguous()


def transposed_phase_taps(py, px):
    """Taps (of the 3x4x4 kernel, flattened) that output phase (py, px) uses, in the order of
    its stride-1 (3,2,2) window (kt', j, i) starting at input (t-1, m+py-1, n+px-1)."""
    return [(2 - kt) * 16 + (3 - py - 2 * j) * 4 + (3 - px - 2 * i) for kt in range(3) for j in range(2) for i in range(2)]


def conv_transpose_kernel_layout(bits):
    """Transposed-conv sign bits `C_out x 48 x words` (taps of the 3x4x4 kernel) -> the
    kernels' layout `4 x groups x 12 x words x 8`: one (3,2,2) sub-kernel per output phase."""
    if bits.shape[1] != 48:
        raise BitconvError(f"transposed conv kernel must be 3 x 4 x 4 (48 taps), got {bits.shape[1]} taps")
    phases = [bits[:, transposed_phase_taps(py, px)] for py in (0, 1) for px in (0, 1)]
    return torch.stack([conv_kernel_layout(p) for p in phases]).contiguous()


def pack_conv_weight(weight):
    """Conv3d weight `C_out x C_in x k x k x k` -> kernel layout `groups x k^3 x words x 8`."""
    return conv_kernel_layout(pack_weight_bits(weight))


def pack_conv_transpose_weight(weight):
    """ConvTranspose3d weight `C_in x C_out x 3 x 4 x 4` -> kernel layout `4 x groups x 12 x words x 8`."""
    return conv_transpose_kernel_layout(pack_weight_bits(weight.transpose(0, 1)))


# ----------------------------------------------------------------------------------------
# Convolutions


def _epilogue(dot, multiplier, bias, negative_slope):
    view = (1, -1, 1, 1, 1)
    y = dot * multiplier.view(view)
    y = y + bias.view(view)
    if negative_slope is not None:
        y = torch.where(y >= 0, y, y * negative_slope)
    return y.contiguous()


def _unpack_input(x, in_channels):
    """Packed `B x Tp x Hp x Wp x words` -> float +-1 `B x C x Tp x Hp x Wp` (halo included)."""
    return unpack_signs(x, in_channels).permute(0, 4, 1, 2, 3)


def _unpack_weight(weight, in_channels, out_channels, kernel_size):
    """Packed `groups x taps x words x 8` -> float +-1 `C_out x C_in x kernel_size`."""
    signs = unpack_signs(weight.permute(0, 3, 1, 2), in_channels)  # groups x 8 x taps x C_in
    signs = signs.flatten(0, 1)[:out_channels].transpose(1, 2)
    return signs.reshape(out_channels, in_channels, *kernel_size)


def _check_conv_args(x, in_channels, multiplier, bias):
    if x.dim() != 5 or x.dtype != torch.int64:
        raise BitconvError(f"expected packed signs (int64, 5-D) from pack_signs, got {x.dtype} {tuple(x.shape)}")
    if x.shape[-1] != words_for(in_channels):
        raise BitconvError(f"packed input has {x.shape[-1]} words per voxel but in_channels={in_channels}")
    if multiplier.shape != bias.shape or multiplier.dim() != 1:
        raise BitconvError("multiplier and bias must be 1-D with one entry per output channel")


def binary_conv3d(x, weight, in_channels, stride, multiplier, bias, negative_slope=None, variant=None):
    """Binary Conv3d, 3x3x3 (one-padding 1) or 1x1x1 (no padding), stride (st, sh, sw).

    x: packed signs from pack_signs; weight: from pack_conv_weight. Returns a contiguous
    float `B x C_out x T' x H' x W'`, T' = (T - 1) // st + 1, likewise H', W'.
    """
    _check_conv_args(x, in_channels, multiplier, bias)
    stride = [int(s) for s in stride]
    native = _resolve(variant, x, weight, multiplier, bias)
    if native is not None:
        return torch.ops.bitconv.conv3d(x, weight, in_channels, stride, multiplier.float().contiguous(),
                                        bias.float().contiguous(), negative_slope, native)
    taps = weight.shape[1]
    if taps not in (1, 27):
        raise BitconvError(f"binary_conv3d supports 3x3x3 and 1x1x1 kernels, got {taps} taps")
    k = 3 if taps == 27 else 1
    signs = _unpack_input(x, in_channels)
    if k == 1:
        signs = signs[:, :, 1:-1, 1:-1, 1:-1]
    w = _unpack_weight(weight, in_channels, multiplier.numel(), (k, k, k))
    dot = F.conv3d(signs, w, stride=stride)
    return _epilogue(dot, multiplier.float(), bias.float(), negative_slope)


def binary_conv_transpose3d(x, weight, in_channels, multiplier, bias, negative_slope=None, variant=None):
    """Binary ConvTranspose3d, kernel (3,4,4), stride (1,2,2), padding (1,1,1), one-padded.

    x: packed signs `B x (T+2) x (H+2) x (W+2) x words`; weight: from
    pack_conv_transpose_weight. Returns a contiguous float `B x C_out x T x 2H x 2W`.
    """
    _check_conv_args(x, in_channels, multiplier, bias)
    native = _resolve(variant, x, weight, multiplier, bias)
    if native is not None:
        return torch.ops.bitconv.conv_transpose3d(x, weight, in_channels, multiplier.float().contiguous(),
                                                  bias.float().contiguous(), negative_slope, native)
    signs = _unpack_input(x, in_channels)
    batch, _, depth, height, width = signs.shape
    depth, height, width = depth - 2, height - 2, width - 2
    out_channels = multiplier.numel()
    dot = signs.new_empty(batch, out_channels, depth, 2 * height, 2 * width)
    for phase in range(4):
        py, px = divmod(phase, 2)
        w = _unpack_weight(weight[phase], in_channels, out_channels, (3, 2, 2))
        window = signs[:, :, :, py:py + height + 1, px:px + width + 1]
        dot[:, :, :, py::2, px::2] = F.conv3d(window, w)
    return _epilogue(dot, multiplier.float(), bias.float(), negative_slope)


def empty_output(shape, like, variant=None):
    """An uninitialised float32 tensor on like's device; CPU ones above 32 MiB are mapped with
    their pages populated at once and recycled within a forward (Linux; see output_blocks)."""
    if _resolve(variant, like) is not None:
        return torch.ops.bitconv.empty_output(list(shape))
    return torch.empty(shape, dtype=torch.float32, device=like.device)


def release_output_blocks():
    """Unmap the recycled output blocks no tensor uses (the packed model's forward does, when it
    ends, so that they hold no memory between forwards)."""
    if extension_available():
        torch.ops.bitconv.release_output_blocks()


def output_blocks():
    """Bytes of the native outputs' recycled blocks: {"in_use", "cached", "high_water"}.
    in_use + cached never exceeds high_water, the most ever in use at once (zeros where the
    extension is not built or the system is not Linux)."""
    if not extension_available():
        return {"in_use": 0, "cached": 0, "high_water": 0}
    return dict(zip(("in_use", "cached", "high_water"), torch.ops.bitconv.output_blocks()))


# ----------------------------------------------------------------------------------------
# Machine peak


def popcount_peak(a, w, reps, streams, variant):
    """XOR+popcount peak of C++ kernel `variant` on torch.get_num_threads() threads.

    Each thread runs `reps` passes of the variant's accumulation loop (`streams` = 1, 2, 4
    or 8 independent counters; no address arithmetic, tails or epilogue) over its own
    L1-resident copy of the int64 words a `steps` and w `steps x 64` (steps a multiple of
    8, at most 64): every a[s] is XORed with the first streams x (words per vector) words
    of w[s]. Returns (wall seconds, binary MACs = XORed bits, total popcount of the XORs).
    """
    if variant not in _native():
        raise BitconvError(f"popcount_peak needs a C++ kernel variant, one of {', '.join(_native()) or 'none (build failed)'}")
    return torch.ops.bitconv.popcount_peak(a, w, int(reps), int(streams), variant)


# ----------------------------------------------------------------------------------------
# Fused in-place block epilogues (same per-element arithmetic as the PyTorch ops they replace)


def _fusable(variant, y, *others):
    tensors = (y, *others)
    return (_resolve(variant, *tensors) is not None and all(t.dtype == torch.float32 for t in tensors)
            and y.dim() == 5 and y.is_contiguous() and all(t.is_contiguous() for t in others))


def gate_add_relu_(y, gate, shortcut, variant=None):
    """In place: y = relu(y * gate + shortcut); y, shortcut `B x C x T x H x W`, gate `B x C x 1 x 1 x 1`."""
    if _fusable(variant, y, gate, shortcut) and shortcut.shape == y.shape:
        return torch.ops.bitconv.gate_add_relu_(y, gate, shortcut)
    return y.mul_(gate).add_(shortcut).relu_()


def gate_leaky_relu_(y, gate, negative_slope, variant=None):
    """In place: y = leaky_relu(y * gate, negative_slope); y `B x C x T x H x W`, gate `B x C x 1 x 1 x 1`."""
    if _fusable(variant, y, gate):
        return torch.ops.bitconv.gate_leaky_relu_(y, gate, float(negative_slope))
    return F.leaky_relu_(y.mul_(gate), negative_slope)


# ----------------------------------------------------------------------------------------
# The warp head's output frames in one pass (engine/csrc/warp_blend.cpp)


def warp_blend_runs(variant, *tensors):
    """Whether ``warp_blend`` runs natively on these tensors: CPU float32 with the extension (not variant "torch")."""
    return _resolve(variant, *tensors) is not None and all(t.dtype == torch.float32 for t in tensors)


def warp_blend(head, before, after, t, motion, flow_scale, interpolation, variant=None):
    """The warp head's frame at time ``t`` (``B x 3 x H x W``) in one pass over its pixels: the head's 8 channels
    ``head`` (``B x 8 x h x w``, flows already in full-resolution pixels / ``flow_scale``) upsampled bilinearly to
    H x W, the prior's flows for the half motion ``motion`` (``B x 2 x H x W`` px, or None; ``B x 4 x H x W`` for a
    quadratic prior: ``prior_flows``) added, the middle frames
    ``before`` and ``after`` (``B x 3 x H x W``) warped (``interpolation`` "bicubic" or "bilinear", borders
    replicated) and blended. Equal to ``UNet3D.output_frames`` of its upsampled head to float rounding (the sampling
    positions' ulp: 6e-5 px at x ~ 700). Needs ``warp_blend_runs``; variant "scalar" runs the portable loop, any other
    C++ variant the AVX2 one where the CPU has AVX2."""
    tensors = [head, before, after] + ([] if motion is None else [motion])
    if not warp_blend_runs(variant, *tensors):
        raise BitconvError("warp_blend runs on float32 CPU tensors with the C++ extension: check warp_blend_runs first")
    return torch.ops.bitconv.warp_blend(head.contiguous(), before.contiguous(), after.contiguous(),
                                        None if motion is None else motion.contiguous(), float(t), float(flow_scale),
                                        interpolation == "bicubic", _resolve(variant, *tensors))
