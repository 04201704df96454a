"""Binary FLAVR: which layers are binary, XNOR layer semantics, gradients, learning, FP init."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model import build_model, transfer_weights
from model.binconv import BINARY_LAYERS, BinConv3d, BinConvTranspose3d, binary_sign
from model.summary import count_parameters, model_summary
from model.unet3d import FeatureGating, gate_rank
from util import BinOp


def small_binary(**options):
    return build_model({"arch": "binary", "base_channels": 8, **options}, log_summary=False)


def test_block_and_decoder_convs_are_binary_and_the_rest_real():
    model = build_model({"arch": "binary"}, log_summary=False)
    binary = {name for name, m in model.named_modules() if isinstance(m, BINARY_LAYERS)}
    assert "encoder.layer1.0.conv1.0" in binary and "encoder.layer4.1.conv2.0" in binary
    assert {"decoder.0.conv.0", "decoder.1.upconv.0", "decoder.2.upconv.0", "decoder.3.conv.0",
            "decoder.4.upconv.0"} <= binary
    assert len(binary) == 16 + 5
    real_convs = {name for name, m in model.named_modules()
                  if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)) and name not in binary}
    assert "encoder.stem.0" in real_convs and "feature_fuse.conv.0" in real_convs
    assert "outconv.1" in real_convs and "encoder.layer2.0.downsample.0" in real_convs
    assert all("attn_layer" in n or n in ("encoder.stem.0", "feature_fuse.conv.0", "outconv.1")
               or "downsample" in n for n in real_convs)


def test_bin_downsample_makes_shortcut_convs_binary():
    model = small_binary(bin_downsample=True)
    assert isinstance(model.encoder.layer2[0].downsample[0], BinConv3d)


def test_compact_layout_factorises_every_gate_and_keeps_the_other_keys():
    full, compact = small_binary(), small_binary(gate_reduction=4, bin_downsample=True)
    full_shapes = {k: v.shape for k, v in full.state_dict().items()}
    compact_shapes = {k: v.shape for k, v in compact.state_dict().items()}
    gates = [name for name, m in compact.named_modules() if isinstance(m, FeatureGating)]
    assert len(gates) == 13
    for name in gates:
        channels = full_shapes[f"{name}.attn_layer.0.weight"][0]
        rank = gate_rank(channels, 4)
        assert rank == max(channels // 4, min(channels, 8))
        assert compact_shapes[f"{name}.attn_layer.0.weight"] == (rank, channels, 1, 1, 1)
        assert compact_shapes[f"{name}.attn_layer.1.weight"] == (channels, rank, 1, 1, 1)
        assert compact_shapes[f"{name}.attn_layer.1.bias"] == (channels,)
    same = {k for k in full_shapes if "attn_layer" not in k and "downsample" not in k}
    assert all(compact_shapes[k] == full_shapes[k] for k in same)


def gate_output(gating, pooled):
    return gating.attn_layer(pooled).flatten()


def test_full_gates_initialise_factorised_gates_by_truncated_svd():
    torch.manual_seed(0)
    flavr = build_model({"arch": "flavr", "base_channels": 8}, log_summary=False)
    gate = flavr.encoder.layer4[1].fg.attn_layer[0]  # 64 x 64
    with torch.no_grad():
        gate.weight.copy_((torch.randn(64, 16) @ torch.randn(16, 64)).view_as(gate.weight))  # rank 16
        gate.bias.uniform_(-0.5, 0.5)
        full_rank = flavr.encoder.layer3[0].fg.attn_layer[0].weight.flatten(1).clone()  # 32 x 32
    compact = small_binary(gate_reduction=4)  # 64 -> rank 16, 32 -> rank 8
    report = transfer_weights(compact, flavr.state_dict())
    assert len(report.factorised) == 13 and not report.mismatched and "truncated SVD" in report.summary()
    assert not any("attn_layer" in key for key in report.missing + report.unused)
    pooled = torch.randn(3, 64, 1, 1, 1)
    expected = gate_output(flavr.encoder.layer4[1].fg, pooled)
    assert torch.allclose(gate_output(compact.encoder.layer4[1].fg, pooled), expected, atol=1e-5)
    factors = compact.encoder.layer3[0].fg.attn_layer
    product = factors[1].weight.flatten(1) @ factors[0].weight.flatten(1)
    tail = torch.linalg.svdvals(full_rank.double())[8:]  # Eckart-Young: the best rank-8 error
    assert abs(torch.linalg.matrix_norm(product.double() - full_rank.double()) - tail.norm()) < 1e-4


def test_sign_is_never_zero_and_gradient_is_clipped_straight_through():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = binary_sign(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_binary_conv_is_bn_sign_then_one_padded_conv():
    torch.manual_seed(0)
    layer = BinConv3d(5, 4, 3, stride=(1, 2, 2), padding=1).eval()
    layer.bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, 3, 8, 6)
    signs = torch.where(layer.bn(x) >= 0, 1.0, -1.0)
    expected = F.conv3d(F.pad(signs, (1,) * 6, value=1.0), layer.weight, layer.bias, stride=(1, 2, 2))
    torch.testing.assert_close(layer(x), expected)
    assert layer(x).shape == F.conv3d(x, layer.weight, stride=(1, 2, 2), padding=1).shape


@pytest.mark.parametrize("transposed", [False, True])
def test_binary_conv_gradients_equal_those_of_convolving_the_one_padded_signs(transposed):
    """The layer adds the +1 border's term to a zero-padded convolution; its gradients (input, latent
    weight, bias) are those of the plain definition, convolving a +1-padded copy of the signs."""
    torch.manual_seed(0)
    if transposed:
        layer = BinConvTranspose3d(3, 2, (3, 4, 4), (1, 2, 2), (1, 1, 1)).eval()
        x = torch.randn(2, 3, 2, 3, 4, requires_grad=True)
    else:
        layer = BinConv3d(5, 4, 3, stride=(1, 2, 2), padding=1).eval()
        x = torch.randn(2, 5, 3, 8, 6, requires_grad=True)
    layer(x).square().sum().backward()
    got = [x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]
    x.grad, layer.weight.grad, layer.bias.grad = None, None, None

    signs = binary_sign(layer.bn(x))
    scale = layer.weight.detach().abs().amax(dim=[d for d in range(5) if d != (1 if transposed else 0)],
                                               keepdim=True)
    shape = (1, -1, 1, 1, 1)
    if transposed:
        dot = F.conv_transpose3d(F.pad(signs, (1,) * 6, value=1.0), layer.weight / scale, stride=(1, 2, 2),
                                 padding=(2, 3, 3))
    else:
        dot = F.conv3d(F.pad(signs, (1,) * 6, value=1.0), layer.weight / scale, stride=(1, 2, 2))
    (dot * scale.reshape(shape) + layer.bias.reshape(shape)).square().sum().backward()
    for a, b in zip(got, [x.grad, layer.weight.grad, layer.bias.grad]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_binary_transposed_conv_treats_out_of_range_taps_as_plus_one():
    torch.manual_seed(0)
    layer = BinConvTranspose3d(3, 2, (3, 4, 4), (1, 2, 2), (1, 1, 1), bias=False).eval()
    x = torch.randn(1, 3, 2, 3, 4)
    signs = torch.where(layer.bn(x) >= 0, 1.0, -1.0)
    # Independent definition: zero-insert the +1-extended input, then a plain correlation.
    big = F.pad(signs, (1,) * 6, value=1.0)
    full = F.conv_transpose3d(big, layer.weight, stride=(1, 2, 2))
    # remove the extension (1 input step = stride output steps) plus PyTorch's padding (1, 1, 1)
    t0, s0 = 1 + 1, 2 + 1
    expected = full[:, :, t0:t0 + 2, s0:s0 + 6, s0:s0 + 8]
    torch.testing.assert_close(layer(x), expected)


def test_gradients_reach_every_trainable_parameter():
    torch.manual_seed(0)
    model = small_binary()
    binop = BinOp(model)
    frames = [torch.rand(2, 3, 16, 16) for _ in range(4)]
    with binop.binarized():
        out = model(frames)
        (out[0] - frames[1]).abs().mean().backward()
    binop.updateBinaryGradWeight()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_binary_model_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model({"arch": "binary", "base_channels": 16}, log_summary=False)
    binop = BinOp(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = [torch.rand(2, 3, 16, 16) for _ in range(4)]
    target = (frames[1] + frames[2]) / 2
    losses = []
    for _ in range(120):  # 0.28 of the first loss after 120 steps here, 0.22 after 200
        with binop.binarized():
            loss = (model(frames)[0] - target).abs().mean()
            optimizer.zero_grad()
            loss.backward()
        binop.updateBinaryGradWeight()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < 0.35 * losses[0]


def test_binary_model_initialises_from_a_flavr_release_state_dict():
    fp = build_model({"arch": "flavr", "base_channels": 8}, log_summary=False)
    release = {"module." + k: v for k, v in fp.state_dict().items()}
    binary = small_binary()
    report = transfer_weights(binary, release)
    assert len(report.copied) == len(fp.state_dict())
    assert report.unused == [] and report.mismatched == []
    assert all(".bn." in k for k in report.missing)
    assert torch.equal(binary.encoder.layer3[1].conv2[0].weight, fp.encoder.layer3[1].conv2[0].weight)
    assert "not in the checkpoint" in report.summary()


def test_summary_counts_binary_and_real_parameters_per_stage():
    model = build_model({"arch": "binary"}, log_summary=False)
    stages = {s.name: s for s in count_parameters(model)}
    assert stages["encoder.stem"].binary == 0 and stages["encoder.stem"].real == 64 * 3 * 3 * 7 * 7
    assert stages["encoder.layer1"].binary == 4 * 64 * 64 * 27
    total_binary = sum(s.binary for s in stages.values())
    total = sum(p.numel() for p in model.parameters())
    assert total == total_binary + sum(s.real for s in stages.values())
    text = model_summary(model, "binary unet_18 2x")
    assert "encoder.layer4" in text and "packed" in text and "168.29 MB" in text
