"""The packed 1-bit model against the simulated binary model, and the .bfl export/load path.

"Trained-like" models: random BatchNorm statistics (so sign thresholds are not at zero) and conv
biases. The simulated binary conv sums +-1 exactly and scales by alpha afterwards (model/binconv.py),
so the packed engine's ``dot * alpha + bias`` reproduces it at every size.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import export_packed
from engine import PackedFileError, load_packed, ops, pack_binary_model, packed_format
from cli import exact_float32_on_cuda, run_script
from model import build_model
from model.binconv import BINARY_LAYERS
from model.unet3d import RPReLU
from model.files import PACKED_MAGIC, is_packed_file, make_checkpoint, save_checkpoint
from model_loader import load_model
from util import BinOp

REPO = Path(__file__).resolve().parents[1]


def frames(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(4)]


def randomize_statistics(model, seed=0, biases=True):
    """BatchNorm running statistics and affine parameters (and conv biases) as after training."""
    generator = torch.Generator().manual_seed(seed)
    uniform = lambda t, low, high: t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)  # noqa: E731
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                uniform(module.running_mean, -0.2, 0.2)
                uniform(module.running_var, 0.5, 2.0)
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.3, 0.3)
            elif biases and isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and module.bias is not None:
                uniform(module.bias, -0.1, 0.1)
            elif isinstance(module, RPReLU):
                for name, (low, high) in {"shift_in": (-0.2, 0.2), "slope": (0.0, 0.5), "shift_out": (-0.2, 0.2)}.items():
                    uniform(getattr(module, name), low, high)
        if model.head != "frames":  # the zero-initialised head would hide everything before it
            uniform(model.outconv[1].weight, -0.01, 0.01)
    return model


def binarized(model):
    """The model in eval mode with its binary weights binarized by BinOp (as load_model does)."""
    model.eval()
    model.binop = BinOp(model)
    model.binop.binarization()
    return model


def max_difference(simulated, packed, inputs):
    with torch.inference_mode():
        return max((a - b).abs().max().item() for a, b in zip(simulated(inputs), packed(inputs)))


@pytest.fixture(scope="module")
def general_unet18():
    """unet_18 2x, trained-like statistics and conv biases, binarized by BinOp."""
    torch.manual_seed(1)
    return binarized(randomize_statistics(build_model({"arch": "binary"}, log_summary=False), seed=1))


@pytest.fixture(scope="module")
def packed_pair(general_unet18):
    return general_unet18, pack_binary_model(general_unet18)


@pytest.mark.parametrize("size", [(64, 96), (256, 256), (200, 328)])
def test_packed_unet18_reproduces_the_simulated_model(packed_pair, size):
    simulated, packed = packed_pair
    assert max_difference(simulated, packed, frames(*size)) <= 1e-4


@pytest.mark.parametrize("config", [
    {"n_outputs": 3},                                   # conv biases everywhere
    {"batchnorm": True, "bin_downsample": True},        # BatchNorm after convs, binary 1x1x1 shortcuts
    {"joinType": "add", "upmode": "upsample"},          # 1x1x1 binary convs after trilinear upsampling
    {"block": "unet_34", "joinType": "none"},
    {"bin_downsample": True, "gate_reduction": 4},      # compact layout: factorised gates
    {"head": "residual"},                               # corrections to the blend of the middle frames
    {"head": "warp", "n_outputs": 3},                   # flows, masks and corrections at 3 times
    {"head": "warp", "motion_prior": "matching"},       # corrections to block-matched flows
    {"head": "warp", "motion_prior": "aligned", "n_outputs": 3},  # ... seeing the aligned middle frames
    {"head": "warp", "motion_prior": "dis", "n_outputs": 3},      # corrections to OpenCV's DIS flows
    {"head": "warp", "motion_prior": "dis", "network_scale": 2},  # the network on frames downscaled 2x
    {"head": "warp", "motion_prior": "dis_aligned", "network_scale": 4},  # ... seeing DIS-aligned frames
    {"head": "warp", "motion_prior": "dis_fused", "network_scale": 4},    # DIS's flows fused per pixel
    {"head": "warp", "motion_prior": "dis_fused_still", "network_scale": 4},  # no motion a candidate
    {"head": "warp", "motion_prior": "aligned", "warp_interpolation": "bicubic"},  # aligned inputs warped bicubically
    {"head": "warp", "motion_prior": "dis_quadratic", "network_scale": 4, "n_outputs": 3,  # the demo's at 4x: quadratic,
     "warp_interpolation": "bicubic", "prior_dead_zone": 0.35},  # bicubic warping, sub-pixel motion ignored
    {"head": "residual", "network_scale": 4},            # ... 4x, its corrections upsampled
    {"shortcuts": True, "activation": "rprelu"},        # real shortcuts (no fused ReLU), RPReLU blocks
    {"shortcuts": True, "head": "warp", "bin_downsample": True, "gate_reduction": 4, "n_outputs": 3},
    {"shortcuts": True, "joinType": "add", "upmode": "upsample", "batchnorm": True},
])
def test_every_architecture_option_packs_and_matches(config):
    torch.manual_seed(2)
    model = build_model({"arch": "binary", "base_channels": 8, **config}, log_summary=False)
    model = binarized(randomize_statistics(model, seed=2))
    packed = pack_binary_model(model)
    assert not any(isinstance(m, BINARY_LAYERS) for m in packed.modules())
    assert max_difference(model, packed, frames(32, 48)) <= 1e-4
    assert packed.config == model.config


@pytest.mark.skipif(not ops.extension_available(), reason="needs the engine's C++ extension")
def test_the_packed_warp_head_makes_its_frames_in_one_pass_on_the_cpu():
    config = {"arch": "binary", "base_channels": 8, "head": "warp", "motion_prior": "dis_fused", "network_scale": 4,
              "warp_interpolation": "bicubic", "n_outputs": 3}
    packed = pack_binary_model(binarized(randomize_statistics(build_model(config, log_summary=False), seed=3)))
    with torch.profiler.profile() as profile:
        packed(frames(32, 48))
    ran = [event.name for event in profile.events()]
    assert ran.count("bitconv::warp_blend") == 3 and not any("grid_sampler" in name for name in ran)


def test_unet18_packed_size_is_one_bit_per_binary_weight(packed_pair):
    simulated, packed = packed_pair
    binary_weights = sum(m.weight.numel() for m in simulated.modules() if isinstance(m, BINARY_LAYERS))
    state = packed.state_dict()
    sign_bytes, other_bytes = export_packed.size_report(state)
    assert sign_bytes == binary_weights // 8  # every binary layer has a multiple of 64 input channels
    real = sum(t.numel() for k, t in state.items() if not k.endswith(".bits"))
    assert other_bytes == 4 * real
    assert 5.0e6 < sign_bytes < 5.3e6 and other_bytes < 4.5e6


@pytest.mark.parametrize("head", ["frames", "warp"])
def test_compact_unet18_exports_to_at_most_6_mb_and_matches(tmp_path, head):
    torch.manual_seed(4)
    model = build_model({"arch": "binary", "bin_downsample": True, "gate_reduction": 16, "head": head},
                        log_summary=False)
    path = tmp_path / "compact.pth"
    save_checkpoint(make_checkpoint(randomize_statistics(model, seed=4), epoch=1), str(path))
    size = export_packed.export(str(path), str(tmp_path / "compact.bfl"))
    assert size == os.path.getsize(tmp_path / "compact.bfl") <= 6_000_000
    simulated, _ = load_model(str(path), "cpu")
    packed, description = load_model(str(tmp_path / "compact.bfl"), "cpu")
    assert "gates factorised 1/16" in description and "binary shortcuts" in description
    assert max_difference(simulated, packed, frames(64, 96)) <= 1e-4


def write_checkpoint(path, config, seed=3):
    torch.manual_seed(seed)
    model = randomize_statistics(build_model({"arch": "binary", "base_channels": 8, **config}, log_summary=False), seed)
    save_checkpoint(make_checkpoint(model, epoch=4), str(path))
    return str(path)


def test_export_then_load_model_gives_the_simulated_outputs(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "model_best.pth", {"n_outputs": 3})
    output = tmp_path / "model.bfl"
    assert run_script(export_packed.main, ["--load_from", checkpoint, "--output", str(output)]) == 0
    assert is_packed_file(str(output)) and output.read_bytes()[:8] == PACKED_MAGIC

    packed, description = load_model(str(output), n_outputs=3)
    assert "packed" in description and packed.config["n_outputs"] == 3 and not packed.training
    simulated, _ = load_model(checkpoint)
    inputs = frames(32, 48, seed=2)
    assert max_difference(simulated, packed, inputs) <= 1e-4
    direct, _ = load_packed(str(output))
    with torch.inference_mode():
        assert all(torch.equal(a, b) for a, b in zip(direct(inputs), packed(inputs)))


def test_export_never_overwrites_without_the_flag(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "model_best.pth", {})
    output = tmp_path / "model.bfl"
    output.write_bytes(b"the user's file")
    assert run_script(export_packed.main, ["--load_from", checkpoint, "--output", str(output)]) == 2
    assert "--overwrite" in capsys.readouterr().err and output.read_bytes() == b"the user's file"
    assert run_script(export_packed.main, ["--load_from", checkpoint, "--output", str(output), "--overwrite"]) == 0
    assert is_packed_file(str(output))


def test_export_of_a_full_precision_checkpoint_is_a_clear_error(tmp_path, capsys):
    model = build_model({"arch": "flavr", "base_channels": 8}, log_summary=False)
    checkpoint = tmp_path / "flavr.pth"
    save_checkpoint(make_checkpoint(model), str(checkpoint))
    assert run_script(export_packed.main, ["--load_from", str(checkpoint), "--output", str(tmp_path / "m.bfl")]) == 2
    assert "only binary" in capsys.readouterr().err and not (tmp_path / "m.bfl").exists()


def test_export_script_runs_from_the_command_line(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "model_best.pth", {})
    result = subprocess.run([sys.executable, "export_packed.py", "--load_from", checkpoint, "--output",
                             str(tmp_path / "out" / "model.bfl")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sign bits" in result.stderr and (tmp_path / "out" / "model.bfl").is_file()
    missing = subprocess.run([sys.executable, "export_packed.py", "--load_from", str(tmp_path / "nope.pth"), "--output",
                              str(tmp_path / "x.bfl")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "nope.pth" in missing.stderr and "Traceback" not in missing.stderr


@pytest.fixture()
def packed_file(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "model_best.pth", {})
    output = tmp_path / "model.bfl"
    export_packed.export(checkpoint, str(output))
    return output


def test_a_corrupted_packed_file_is_a_clear_error(packed_file):
    blob = bytearray(packed_file.read_bytes())
    blob[len(blob) // 2] ^= 0x40
    packed_file.write_bytes(bytes(blob))
    with pytest.raises(PackedFileError, match="checksum"):
        load_model(str(packed_file))


def test_a_truncated_packed_file_is_a_clear_error(packed_file):
    packed_file.write_bytes(packed_file.read_bytes()[:1000])
    with pytest.raises(PackedFileError, match="truncated or corrupted"):
        load_packed(str(packed_file))


def test_a_packed_file_of_another_version_is_a_clear_error(tmp_path):
    path = tmp_path / "future.bfl"
    blob = bytearray(packed_format.encode({"arch": "binary"}, {"x": torch.zeros(3)}))
    blob[8] = 99  # version field
    path.write_bytes(bytes(blob))
    with pytest.raises(PackedFileError, match="version 99"):
        load_packed(str(path))


def test_packed_tensors_that_do_not_fit_the_configuration_are_a_clear_error(packed_file, tmp_path):
    config, tensors, metadata = packed_format.read_packed(str(packed_file))
    wrong = tmp_path / "wrong.bfl"
    packed_format.write_packed(str(wrong), {**config, "base_channels": 16}, tensors, metadata)
    with pytest.raises(PackedFileError, match="do not fit"):
        load_packed(str(wrong))


def test_a_missing_packed_file_is_a_clear_error(tmp_path):
    with pytest.raises(PackedFileError, match="no such file"):
        load_packed(str(tmp_path / "absent.bfl"))
    assert not is_packed_file(str(tmp_path / "absent.bfl"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_model_runs_on_cuda(packed_file):
    exact_float32_on_cuda()  # as the scripts do on a GPU: TF32 convolutions would flip signs
    cpu, _ = load_packed(str(packed_file))
    cuda, _ = load_packed(str(packed_file), "cuda")
    inputs = frames(32, 48)
    with torch.inference_mode():
        expected = cpu(inputs)
        actual = cuda([f.cuda() for f in inputs])
    assert all((a.cpu() - b).abs().max() <= 1e-4 for a, b in zip(actual, expected))


def test_packed_file_layout_is_documented_and_aligned(packed_file):
    config, tensors, metadata = packed_format.read_packed(str(packed_file))
    assert config["arch"] == "binary" and metadata["source"] == "model_best.pth"
    assert all(t.dtype in (torch.int64, torch.float32) for t in tensors.values())
    assert os.path.getsize(packed_file) > sum(t.numel() * t.element_size() for t in tensors.values())


def test_recipe_model_exports_and_loads_with_the_simulated_outputs(tmp_path):
    config = {"head": "warp", "motion_prior": "matching", "shortcuts": True, "activation": "rprelu",
              "bin_downsample": True, "gate_reduction": 4, "warp_interpolation": "bicubic", "prior_dead_zone": 0.35}
    checkpoint = write_checkpoint(tmp_path / "recipe.pth", config)
    size = export_packed.export(checkpoint, str(tmp_path / "recipe.bfl"))
    assert size == os.path.getsize(tmp_path / "recipe.bfl")
    simulated, _ = load_model(checkpoint)
    packed, description = load_model(str(tmp_path / "recipe.bfl"))
    assert "warp head" in description and "real shortcuts" in description and "rprelu" in description
    assert "matching motion prior" in description and "bicubic warping" in description
    assert (packed.warp_interpolation, packed.prior_dead_zone) == ("bicubic", 0.35)
    assert max_difference(simulated, packed, frames(40, 56, seed=5)) <= 1e-4


def test_loading_the_engine_shows_no_cuda_home_warning_on_a_machine_without_cuda():
    """torch's cpp_extension logs "No CUDA runtime is found, using CUDA_HOME=..." when imported without
    CUDA; it concerns CUDA builds, and the engine builds CPU code, so a user never sees it."""
    run = subprocess.run([sys.executable, "-c", "from engine import ops; print(ops.default_variant())"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    assert "CUDA_HOME" not in run.stderr and "No CUDA runtime" not in run.stderr, run.stderr
