"""Bit-packed binary conv kernels against PyTorch convolutions on +-1 tensors, and the engine's
one-pass warp head against the model's PyTorch ops.

Every kernel variant this machine supports is checked (C++ ones and the pure-PyTorch
fallback "torch"); the +-1 dot products must be exact, the scaled outputs within 1e-5.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine import ops
from model.motion_prior import FLOW_SCALE, WARP_INTERPOLATIONS, prior_flows, warp_blend

VARIANTS = ops.available_variants()
NATIVE_VARIANTS = [v for v in VARIANTS if v != ops.TORCH_VARIANT]
REPO = Path(__file__).resolve().parents[1]


def random_signs(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.where(torch.randn(*shape, generator=generator) >= 0, 1.0, -1.0)


def sign(w):
    return torch.where(w >= 0, 1.0, -1.0)


def post_op(dot, multiplier, bias, negative_slope):
    y = dot * multiplier.view(1, -1, 1, 1, 1) + bias.view(1, -1, 1, 1, 1)
    return y if negative_slope is None else F.leaky_relu(y, negative_slope)


def scale_and_shift(channels, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(channels, generator=generator) + 0.1, torch.randn(channels, generator=generator)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("in_channels,out_channels", [(3, 9), (70, 13), (130, 70)])
@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2)])
def test_conv3x3x3_equals_one_padded_conv3d(variant, in_channels, out_channels, stride):
    signs = random_signs(2, in_channels, 3, 7, 10)
    weight = torch.randn(out_channels, in_channels, 3, 3, 3)
    expected_dot = F.conv3d(F.pad(signs, (1, 1, 1, 1, 1, 1), value=1.0), sign(weight), stride=stride)
    packed_x, packed_w = ops.pack_signs(signs, variant=variant), ops.pack_conv_weight(weight)

    ones, zeros = torch.ones(out_channels), torch.zeros(out_channels)
    dot = ops.binary_conv3d(packed_x, packed_w, in_channels, stride, ones, zeros, variant=variant)
    assert torch.equal(dot, expected_dot)

    multiplier, bias = scale_and_shift(out_channels)
    for slope in (None, 0.0, 0.2):
        y = ops.binary_conv3d(packed_x, packed_w, in_channels, stride, multiplier, bias, slope, variant=variant)
        torch.testing.assert_close(y, post_op(expected_dot, multiplier, bias, slope), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("in_channels,out_channels", [(3, 9), (70, 13), (130, 70)])
@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2)])
def test_conv1x1x1_equals_conv3d(variant, in_channels, out_channels, stride):
    signs = random_signs(2, in_channels, 3, 5, 9, seed=2)
    weight = torch.randn(out_channels, in_channels, 1, 1, 1)
    expected_dot = F.conv3d(signs, sign(weight), stride=stride)
    multiplier, bias = scale_and_shift(out_channels)
    y = ops.binary_conv3d(ops.pack_signs(signs, variant=variant), ops.pack_conv_weight(weight), in_channels, stride,
                          multiplier, bias, 0.0, variant=variant)
    torch.testing.assert_close(y, post_op(expected_dot, multiplier, bias, 0.0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("in_channels,out_channels", [(3, 9), (70, 13), (130, 70)])
def test_conv_transpose_equals_one_padded_conv_transpose3d(variant, in_channels, out_channels):
    signs = random_signs(2, in_channels, 3, 5, 7, seed=3)
    weight = torch.randn(in_channels, out_channels, 3, 4, 4)
    expected_dot = F.conv_transpose3d(F.pad(signs, (1, 1, 1, 1, 1, 1), value=1.0), sign(weight),
                                      stride=(1, 2, 2), padding=(2, 3, 3))
    packed_x, packed_w = ops.pack_signs(signs, variant=variant), ops.pack_conv_transpose_weight(weight)

    ones, zeros = torch.ones(out_channels), torch.zeros(out_channels)
    dot = ops.binary_conv_transpose3d(packed_x, packed_w, in_channels, ones, zeros, variant=variant)
    assert dot.shape == (2, out_channels, 3, 10, 14)
    assert torch.equal(dot, expected_dot)

    multiplier, bias = scale_and_shift(out_channels)
    y = ops.binary_conv_transpose3d(packed_x, packed_w, in_channels, multiplier, bias, 0.2, variant=variant)
    torch.testing.assert_close(y, post_op(expected_dot, multiplier, bias, 0.2), rtol=0, atol=1e-5)


def test_one_padded_conv_transpose_equals_padded_conv_transpose_with_plus_one_border():
    """The reference itself: PyTorch's padded transposed conv, out-of-range taps counted as +1."""
    signs = random_signs(1, 5, 2, 3, 4, seed=4)
    weight = sign(torch.randn(5, 6, 3, 4, 4))
    one_padded = F.conv_transpose3d(F.pad(signs, (1, 1, 1, 1, 1, 1), value=1.0), weight, stride=(1, 2, 2), padding=(2, 3, 3))
    zero_padded = F.conv_transpose3d(signs, weight, stride=(1, 2, 2), padding=(1, 1, 1))
    border = F.conv_transpose3d(F.pad(torch.zeros_like(signs), (1, 1, 1, 1, 1, 1), value=1.0), weight,
                                stride=(1, 2, 2), padding=(2, 3, 3))
    torch.testing.assert_close(one_padded, zero_padded + border, rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_all_variants_give_bit_identical_outputs(variant):
    x = torch.randn(1, 70, 2, 6, 11)
    weight = torch.randn(20, 70, 3, 3, 3)
    multiplier, bias = scale_and_shift(20)
    scale, shift = torch.randn(70), torch.randn(70) * 0.1
    reference = ops.binary_conv3d(ops.pack_signs(x, scale, shift, variant=ops.TORCH_VARIANT),
                                  ops.pack_conv_weight(weight), 70, (1, 2, 2), multiplier, bias, 0.2,
                                  variant=ops.TORCH_VARIANT)
    y = ops.binary_conv3d(ops.pack_signs(x, scale, shift, variant=variant), ops.pack_conv_weight(weight),
                          70, (1, 2, 2), multiplier, bias, 0.2, variant=variant)
    assert torch.equal(y, reference)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_pack_signs_layout_halo_and_pad_bits(variant, channels_last):
    x = torch.randn(2, 70, 3, 4, 67)  # 67 positions: one full and one partial block of 64
    x[0, 0, 0, 0, 0] = 0.0  # sign(0) = +1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    packed = ops.pack_signs(x, variant=variant)
    assert packed.shape == (2, 5, 6, 69, 2) and packed.dtype == torch.int64
    interior = packed[:, 1:-1, 1:-1, 1:-1]
    assert torch.equal(ops.unpack_signs(interior, 70), sign(x).permute(0, 2, 3, 4, 1))
    halo = packed.clone()
    halo[:, 1:-1, 1:-1, 1:-1] = 0
    assert not halo.any()
    assert not (interior[..., 1] >> 6).any()  # channels 70..127 do not exist: their bits stay zero


def random_batchnorm(channels):
    bn = torch.nn.BatchNorm3d(channels).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.1, 3)
        bn.weight.uniform_(-2, 2)
        bn.weight[:3] = 0.0  # constant-sign channels
        bn.bias.uniform_(-1, 1)
        bn.bias[0] = 0.0
    return bn


def unpacked_signs(packed, channels):
    return ops.unpack_signs(packed[:, 1:-1, 1:-1, 1:-1], channels).permute(0, 4, 1, 2, 3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pack_signs_with_batchnorm_affine_reproduces_pytorch_batchnorm_sign(variant):
    bn, x = random_batchnorm(70), torch.randn(2, 70, 3, 9, 10)
    scale, shift = ops.batchnorm_sign_affine(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    with torch.no_grad():
        expected = sign(bn(x))
    assert torch.equal(unpacked_signs(ops.pack_signs(x, scale, shift, variant=variant), 70), expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_results_do_not_depend_on_thread_count(variant):
    signs = random_signs(1, 64, 4, 8, 12, seed=5)
    weight = torch.randn(32, 64, 3, 3, 3)
    multiplier, bias = scale_and_shift(32)
    args = (ops.pack_signs(signs, variant=variant), ops.pack_conv_weight(weight), 64, (1, 1, 1), multiplier, bias)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.binary_conv3d(*args, variant=variant)
        torch.set_num_threads(2)
        double = ops.binary_conv3d(*args, variant=variant)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, double)


def test_unknown_variant_is_a_clear_error(monkeypatch):
    with pytest.raises(ops.BitconvError, match="not available"):
        ops.pack_signs(torch.randn(1, 3, 1, 2, 2), variant="avx9000")
    monkeypatch.setenv(ops.KERNEL_ENV, "avx9000")
    with pytest.raises(ops.BitconvError, match="avx9000"):
        ops.pack_signs(torch.randn(1, 3, 1, 2, 2))


def test_mismatched_packed_input_is_a_clear_error():
    packed = ops.pack_signs(torch.randn(1, 70, 1, 3, 3))
    weight = ops.pack_conv_weight(torch.randn(8, 70, 3, 3, 3))
    with pytest.raises(ops.BitconvError, match="in_channels"):
        ops.binary_conv3d(packed, weight, 130, (1, 1, 1), torch.ones(8), torch.zeros(8))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_run_through_the_pytorch_path():
    signs = random_signs(1, 70, 2, 5, 6, seed=6)
    weight = torch.randn(13, 70, 3, 3, 3)
    multiplier, bias = scale_and_shift(13)
    cpu = ops.binary_conv3d(ops.pack_signs(signs), ops.pack_conv_weight(weight), 70, (1, 1, 1), multiplier, bias)
    cuda = ops.binary_conv3d(ops.pack_signs(signs.cuda()), ops.pack_conv_weight(weight.cuda()), 70, (1, 1, 1),
                             multiplier.cuda(), bias.cuda())
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-5)


def test_failed_build_falls_back_to_pytorch_with_one_warning(tmp_path):
    """A broken compiler must not break inference: one warning, then the PyTorch kernels."""
    script = (
        "import warnings, torch\n"
        "from engine import ops\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    variants = ops.available_variants()\n"
        "    y = ops.binary_conv3d(ops.pack_signs(torch.randn(1, 3, 1, 4, 4)), ops.pack_conv_weight(torch.randn(2, 3, 3, 3, 3)),\n"
        "                          3, (1, 1, 1), torch.ones(2), torch.zeros(2))\n"
        "ours = [w for w in caught if 'bitconv' in str(w.message)]\n"
        "assert variants == ['torch'], variants\n"
        "assert len(ours) == 1, [str(w.message) for w in caught]\n"
        "assert y.shape == (1, 2, 1, 4, 4)\n"
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("variant", VARIANTS)
def test_pack_signs_of_a_list_packs_the_channel_concatenation(variant):
    parts = [torch.randn(2, 70, 2, 3, 5), torch.randn(2, 3, 2, 3, 5), torch.randn(2, 64, 2, 3, 5)]
    scale, shift = torch.randn(137), torch.randn(137)
    joined = ops.pack_signs(torch.cat(parts, dim=1), scale, shift, variant=variant)
    assert torch.equal(ops.pack_signs(parts, scale, shift, variant=variant), joined)
    with pytest.raises(ops.BitconvError, match="share"):
        ops.pack_signs([parts[0], torch.randn(2, 3, 2, 3, 6)], variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_halo_is_zeroed_even_in_reused_memory(variant):
    for seed in range(3):  # the allocator hands back the previous, dirty block
        x = torch.randn(1, 130, 3, 6, 7, generator=torch.Generator().manual_seed(seed)) - 5.0  # all signs -1
        packed = ops.pack_signs(x, variant=variant)
        halo = packed.clone()
        halo[:, 1:-1, 1:-1, 1:-1] = 0
        assert not halo.any()
        del packed


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_block_epilogues_equal_the_pytorch_ops(variant):
    generator = torch.Generator().manual_seed(7)
    y = torch.randn(2, 5, 3, 4, 6, generator=generator)
    gate = torch.rand(2, 5, 1, 1, 1, generator=generator)
    shortcut = torch.randn(2, 5, 3, 4, 6, generator=generator)
    assert torch.equal(ops.gate_add_relu_(y.clone(), gate, shortcut, variant=variant), torch.relu(y * gate + shortcut))
    assert torch.equal(ops.gate_leaky_relu_(y.clone(), gate, 0.2, variant=variant), F.leaky_relu(y * gate, 0.2))


@pytest.mark.parametrize("shape", [(3, 5), (2, 64, 4, 128, 64)])  # small: at::empty; above 32 MiB: recycled blocks
def test_empty_output_is_a_writable_float_tensor_of_the_shape(shape):
    y = ops.empty_output(shape, torch.zeros(1))
    assert y.shape == shape and y.dtype == torch.float32 and y.is_contiguous()
    y.fill_(2.0)
    assert y.sum().item() == 2.0 * y.numel()


LARGE = (1, 40, 4, 256, 256)  # 40 MiB of float32: above the 32 MiB of recycled output blocks


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ops.extension_available(),
                    reason="recycled output blocks are the C++ extension's, on Linux")
def test_large_outputs_reuse_a_freed_block_and_never_hold_more_than_the_most_in_use():
    ops.release_output_blocks()
    first = ops.empty_output(LARGE, torch.zeros(1))
    address, used = first.data_ptr(), ops.output_blocks()["in_use"]
    del first
    assert ops.output_blocks()["cached"] >= 40 << 20
    again = ops.empty_output(LARGE, torch.zeros(1))
    assert again.data_ptr() == address and ops.output_blocks()["in_use"] == used
    del again
    other = ops.empty_output((1, 50, 4, 256, 256), torch.zeros(1))  # no cached block fits: unmaps before mapping
    stats = ops.output_blocks()
    assert stats["in_use"] + stats["cached"] <= stats["high_water"]
    del other
    ops.release_output_blocks()
    assert ops.output_blocks()["cached"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ops.extension_available(),
                    reason="recycled output blocks are the C++ extension's, on Linux")
@pytest.mark.parametrize("variant", NATIVE_VARIANTS)
def test_conv_into_a_recycled_block_overwrites_every_stale_value(variant):
    in_channels, out_channels = 16, LARGE[1]
    signs = random_signs(1, in_channels, *LARGE[2:], seed=3)
    weight = torch.randn(out_channels, in_channels, 1, 1, 1)
    ops.release_output_blocks()
    stale = ops.empty_output(LARGE, torch.zeros(1))
    stale.fill_(float("nan"))
    del stale  # the conv's output takes this block back, full of NaNs
    ones, zeros = torch.ones(out_channels), torch.zeros(out_channels)
    dot = ops.binary_conv3d(ops.pack_signs(signs, variant=variant), ops.pack_conv_weight(weight), in_channels,
                            (1, 1, 1), ones, zeros, variant=variant)
    assert torch.equal(dot, F.conv3d(signs, sign(weight)))
    del dot
    ops.release_output_blocks()


@pytest.mark.parametrize("variant", NATIVE_VARIANTS)
@pytest.mark.parametrize("streams", [1, 2, 4, 8])
def test_popcount_peak_loop_counts_every_xored_bit(variant, streams):
    generator = torch.Generator().manual_seed(8)
    a = torch.randint(-2 ** 63, 2 ** 63 - 1, (16,), generator=generator)
    w = torch.randint(-2 ** 63, 2 ** 63 - 1, (16, 64), generator=generator)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        seconds, macs, count = ops.popcount_peak(a, w, 3, streams, variant)
    finally:
        torch.set_num_threads(threads)
    width = macs // (3 * 16 * 64)  # words XORed with each a[s]: streams x words per vector
    assert seconds > 0 and macs == 3 * 16 * width * 64 and width % streams == 0 and width // streams in (1, 4, 8)
    bits = (ops.unpack_signs(a.view(16, 1) ^ w[:, :width], width * 64) < 0).sum().item()
    assert count == 3 * bits


def test_auto_runs_a_supported_simd_variant_chosen_by_measurement():
    choice = ops.auto_variant()
    assert choice in NATIVE_VARIANTS and (choice != "scalar" or NATIVE_VARIANTS == ["scalar"])
    assert ops._resolve("auto", torch.zeros(1)) == choice


def test_default_variant_names_what_calls_without_a_variant_run(monkeypatch):
    monkeypatch.delenv(ops.KERNEL_ENV, raising=False)
    assert ops.default_variant() == ops.auto_variant()
    monkeypatch.setenv(ops.KERNEL_ENV, "auto")
    assert ops.default_variant() == ops.auto_variant()
    monkeypatch.setenv(ops.KERNEL_ENV, "scalar")
    assert ops.default_variant() == "scalar" == ops._resolve(None, torch.zeros(1))


def test_benchmarks_isa_avx2_caps_pytorch_onednn_and_the_engine():
    """``--isa avx2`` re-runs a benchmark as an AVX2-only CPU would, or says in one line that it cannot."""
    command = [sys.executable, str(REPO / "benchmarks" / "bench_popcount_peak.py"), "--isa", "avx2",
               "--threads", "1", "--seconds", "0.001", "--repeats", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    with open("/proc/cpuinfo") as info:
        has_avx2 = " avx2" in info.read()
    if not has_avx2:
        assert done.returncode != 0 and "does not report avx2" in done.stderr.strip().splitlines()[-1]
        return
    assert done.returncode == 0, done.stderr
    assert "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 (torch runs AVX2)" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.split()[:1] == ["avx2"]]
    assert len(rows) == 1 and float(rows[0][1]) > 0  # only the avx2 variant, with a rate


def seven_pass_warp_blend(head, before, after, t, motion, interpolation):
    """The model's own way (UNet3D.frames_from_head): the head upsampled, the prior's flows added, the middle frames
    warped and blended, each a pass over the frame."""
    upsampled = F.interpolate(head, size=before.shape[-2:], mode="bilinear", align_corners=False)
    return warp_blend(upsampled, before, after, t, None if motion is None else prior_flows(motion, t), interpolation)


@pytest.mark.parametrize("variant", NATIVE_VARIANTS)
@pytest.mark.parametrize("interpolation", WARP_INTERPOLATIONS)
@pytest.mark.parametrize("low,size", [((8, 12), (32, 48)),    # the network at 1/4 scale
                                      ((30, 45), (30, 45)),   # at full scale
                                      ((9, 11), (36, 43))])   # a width the 8-pixel loop leaves a tail of
def test_one_pass_warp_blend_equals_upsampling_warping_and_blending(variant, interpolation, low, size):
    generator = torch.Generator().manual_seed(0)
    before, after = (torch.rand(2, 3, *size, generator=generator) for _ in range(2))
    head = torch.randn(2, 8, *low, generator=generator)
    motion = torch.randn(2, 2, *size, generator=generator) * 6  # flows reaching past every border
    for t, prior in ((0.5, motion), (0.25, None), (0.75, motion)):
        expected = seven_pass_warp_blend(head, before, after, t, prior, interpolation)
        actual = ops.warp_blend(head, before, after, t, prior, FLOW_SCALE, interpolation, variant=variant)
        torch.testing.assert_close(actual, expected, rtol=0, atol=2e-5)


@pytest.mark.skipif("avx2" not in VARIANTS, reason="needs an x86 CPU with AVX2")
@pytest.mark.parametrize("interpolation", WARP_INTERPOLATIONS)
def test_warp_blends_vector_loop_gives_the_portable_loops_frames_exactly(interpolation):
    generator = torch.Generator().manual_seed(1)
    before, after = (torch.rand(1, 3, 64, 100, generator=generator) for _ in range(2))
    head, motion = torch.randn(1, 8, 16, 25, generator=generator), torch.randn(1, 2, 64, 100, generator=generator) * 9
    frames = [ops.warp_blend(head, before, after, 0.5, motion, FLOW_SCALE, interpolation, variant=variant)
              for variant in ("scalar", "avx2")]
    assert torch.equal(*frames)


def test_warp_blend_on_the_pytorch_path_is_a_clear_error():
    assert not ops.warp_blend_runs(ops.TORCH_VARIANT, torch.zeros(1))
    with pytest.raises(ops.BitconvError, match="warp_blend_runs"):
        ops.warp_blend(torch.zeros(1, 8, 2, 2), torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), 0.5, None, FLOW_SCALE,
                       "bilinear", variant=ops.TORCH_VARIANT)


@pytest.mark.parametrize("variant", NATIVE_VARIANTS)
@pytest.mark.parametrize("interpolation", WARP_INTERPOLATIONS)
def test_warp_blend_reads_inside_the_frames_whatever_the_flows(variant, interpolation):
    before, after = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    head = torch.zeros(1, 8, 16, 24)
    head[0, 0:4, 0, :8] = float("nan")
    head[0, 0:4, 1, :8], head[0, 0:4, 2, :8] = float("inf"), -float("inf")
    head[0, 0:4, 3, :8] = 1e30
    out = ops.warp_blend(head, before, after, 0.5, None, FLOW_SCALE, interpolation, variant=variant)
    assert out.shape == before.shape and torch.isfinite(out).all()  # positions bounded, NaN ones too


@pytest.mark.parametrize("variant", NATIVE_VARIANTS)
def test_warp_blend_does_not_depend_on_thread_count(variant):
    generator = torch.Generator().manual_seed(2)
    before, after = (torch.rand(2, 3, 40, 56, generator=generator) for _ in range(2))
    head, motion = torch.randn(2, 8, 10, 14, generator=generator), torch.randn(2, 2, 40, 56, generator=generator) * 4
    threads = torch.get_num_threads()
    try:
        frames = []
        for count in (1, 2):
            torch.set_num_threads(count)
            frames.append(ops.warp_blend(head, before, after, 0.25, motion, FLOW_SCALE, "bicubic", variant=variant))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(*frames)
