"""The full-precision model is FLAVR: exact state-dict keys and shapes, outputs per factor."""
import os

import pytest
import torch

from model import build_model
from model.FLAVR_arch import UNet_3D_3D

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "data", "flavr")  # FLAVR release keys and shapes


def read_reference_shapes(path):
    shapes = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape = line.rstrip("\n").split("\t")
            shapes[key] = tuple(int(s) for s in shape.split("x"))
    return shapes


@pytest.mark.parametrize("block", ["unet_18", "unet_34"])
@pytest.mark.parametrize("n_outputs", [1, 7])
def test_state_dict_keys_and_shapes_equal_flavr_release(block, n_outputs):
    reference = read_reference_shapes(os.path.join(REFERENCE_DIR, f"{block}_n_outputs{n_outputs}.state_dict.tsv"))
    model = UNet_3D_3D(block, n_inputs=4, n_outputs=n_outputs)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(reference)
    assert ours == reference


def test_parameter_counts_match_the_paper():
    assert sum(p.numel() for p in UNet_3D_3D("unet_18", 4, 1).parameters()) == 42_061_571
    assert sum(p.numel() for p in UNet_3D_3D("unet_18", 4, 7).parameters()) == 42_121_941


@pytest.mark.parametrize("arch", ["flavr", "binary"])
@pytest.mark.parametrize("n_outputs", [1, 3, 7])
def test_outputs_have_one_frame_per_intermediate_time(arch, n_outputs):
    model = build_model({"arch": arch, "n_outputs": n_outputs, "base_channels": 16}, log_summary=False)
    frames = [torch.rand(2, 3, 16, 24) for _ in range(4)]
    with torch.no_grad():
        out = model(frames)
    assert len(out) == n_outputs
    assert all(o.shape == (2, 3, 16, 24) for o in out)


def test_full_width_model_interpolates_a_small_frame():
    model = UNet_3D_3D("unet_18", 4, 1)
    with torch.no_grad():
        out = model([torch.rand(1, 3, 16, 16) for _ in range(4)])
    assert len(out) == 1 and out[0].shape == (1, 3, 16, 16) and torch.isfinite(out[0]).all()


def test_size_not_multiple_of_8_is_a_clear_error():
    model = build_model({"arch": "flavr", "base_channels": 8}, log_summary=False)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        model([torch.rand(1, 3, 20, 24) for _ in range(4)])


def test_wrong_number_of_inputs_is_a_clear_error():
    model = build_model({"arch": "flavr", "base_channels": 8}, log_summary=False)
    with pytest.raises(ValueError, match="takes 4 input frames"):
        model([torch.rand(1, 3, 16, 16) for _ in range(3)])


def test_mean_is_added_back_so_constant_input_shifts_output_by_the_same_amount():
    model = build_model({"arch": "flavr", "base_channels": 8}, log_summary=False).eval()
    frames = [torch.rand(1, 3, 16, 16) for _ in range(4)]
    with torch.no_grad():
        base = model(frames)[0]
        shifted = model([f + 0.25 for f in frames])[0]
    torch.testing.assert_close(shifted, base + 0.25, atol=1e-5, rtol=0)


@pytest.mark.parametrize("option", [{"block": "unet_50"}, {"joinType": "sum"}, {"upmode": "nearest"},
                                    {"arch": "ternary"}, {"width": 3}])
def test_unknown_model_options_are_clear_errors(option):
    with pytest.raises(ValueError):
        build_model(option, log_summary=False)


@pytest.mark.parametrize("join", ["add", "none"])
@pytest.mark.parametrize("upmode", ["transpose", "upsample"])
def test_join_and_upsampling_variants_run(join, upmode):
    model = build_model({"arch": "binary", "joinType": join, "upmode": upmode, "base_channels": 8},
                        log_summary=False)
    out = model([torch.rand(1, 3, 16, 16) for _ in range(4)])
    assert out[0].shape == (1, 3, 16, 16)
