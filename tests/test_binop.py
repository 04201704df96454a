"""BinOp: XNOR weight binarization, exact restore and the chain-rule gradient of docs/BINARY.md."""
import pytest
import torch
import torch.nn as nn

from model.binconv import BinConv2d, BinConv3d, BinConvTranspose3d
from util import BinOp

LAYERS = {
    "conv2d": lambda: BinConv2d(5, 7, 3, padding=1),
    "conv3d": lambda: BinConv3d(6, 4, 3, padding=1),
    "convtranspose3d": lambda: BinConvTranspose3d(5, 3, (3, 4, 4), (1, 2, 2), (1, 1, 1)),
}


def filters_first(w, transposed):
    """Weight -> ``C_out x rest`` (one row per output filter), computed independently of util."""
    if transposed:
        w = w.transpose(0, 1)
    return w.reshape(w.shape[0], -1)


def make_model(kind, seed=0):
    torch.manual_seed(seed)
    layer = LAYERS[kind]()
    with torch.no_grad():
        layer.weight.normal_(0, 0.8)  # some weights outside [-1, 1] before clamping
    return nn.Sequential(nn.Conv2d(1, 1, 1) if kind == "conv2d" else nn.Identity(), layer), layer


@pytest.mark.parametrize("kind", list(LAYERS))
def test_binarized_weights_are_plus_minus_alpha_per_output_filter(kind):
    model, layer = make_model(kind)
    binop = BinOp(model)
    transposed = kind == "convtranspose3d"
    with binop.binarized():
        rows = filters_first(layer.weight.detach(), transposed)
        alphas = rows.abs().amax(dim=1)
        latent = filters_first(binop.saved[0], transposed)
        assert torch.equal(rows.abs(), alphas[:, None].expand_as(rows))
        torch.testing.assert_close(alphas, latent.abs().mean(dim=1), rtol=0, atol=1e-7)
        assert torch.equal(torch.sign(rows), torch.where(latent >= 0, 1.0, -1.0))


@pytest.mark.parametrize("kind", list(LAYERS))
def test_latent_weights_are_mean_centred_over_input_channels_and_clamped(kind):
    model, layer = make_model(kind)
    binop = BinOp(model)
    original = layer.weight.detach().clone()
    input_dim = 0 if kind == "convtranspose3d" else 1
    expected = (original - original.mean(dim=input_dim, keepdim=True)).clamp(-1, 1)
    binop.binarization()
    binop.restore()
    assert torch.equal(layer.weight.detach(), expected)


def centred_and_clamped(w, input_dim):
    return (w - w.mean(dim=input_dim, keepdim=True)).clamp(-1, 1)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_restore_gives_back_latent_weights_bit_for_bit(kind):
    model, layer = make_model(kind)
    binop = BinOp(model)
    input_dim = 0 if kind == "convtranspose3d" else 1
    latent = centred_and_clamped(layer.weight.detach(), input_dim)
    binop.binarization()
    assert not torch.equal(layer.weight.detach(), latent)
    binop.restore()
    assert torch.equal(layer.weight.detach(), latent)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_grad_update_equals_the_xnor_chain_rule(kind):
    model, layer = make_model(kind)
    binop = BinOp(model)
    transposed = kind == "convtranspose3d"
    x = torch.randn(2, layer.in_channels, *([4] * (layer.weight.dim() - 2)))
    with binop.binarized():
        layer(x).pow(2).sum().backward()
    latent = layer.weight.detach()
    grad = layer.weight.grad.clone()
    binop.updateBinaryGradWeight()

    w, g = filters_first(latent, transposed), filters_first(grad, transposed)
    n = w.shape[1]
    c_in = latent.shape[0] if transposed else latent.shape[1]
    alpha = w.abs().sum(dim=1, keepdim=True) / n
    s = torch.where(w >= 0, 1.0, -1.0)
    expected = g * alpha * (w.abs() <= 1).float() + s * (g * s).sum(dim=1, keepdim=True) / n
    expected = expected * (1 - 1 / c_in) * n
    got = filters_first(layer.weight.grad, transposed)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("kind", list(LAYERS))
def test_soft_sign_weights_and_gradients_follow_alpha_tanh_and_harden_with_sharpness(kind):
    """With ``sharpness`` k the weights are ``alpha * tanh(k W / alpha)`` (alpha = mean |W| per filter of the
    centred, clamped latent W) and the gradient is that function's derivative with alpha held fixed; a
    very large k gives the hard ``alpha * sign(W)``."""
    model, layer = make_model(kind)
    binop = BinOp(model)
    transposed = kind == "convtranspose3d"
    x = torch.randn(2, layer.in_channels, *([4] * (layer.weight.dim() - 2)))
    binop.sharpness = 3.0
    with binop.binarized():
        soft = filters_first(layer.weight.detach(), transposed).clone()
        latent = filters_first(binop.saved[0], transposed).clone()
        layer(x).pow(2).sum().backward()
    grad = filters_first(layer.weight.grad, transposed).clone()
    binop.updateBinaryGradWeight()

    alpha = latent.abs().mean(dim=1, keepdim=True)
    torch.testing.assert_close(soft, alpha * torch.tanh(3.0 * latent / alpha), rtol=1e-5, atol=1e-6)
    expected = grad * 3.0 * (1 - torch.tanh(3.0 * latent / alpha) ** 2)  # float32 order of operations differs:
    torch.testing.assert_close(filters_first(layer.weight.grad, transposed), expected,  # relative 1e-4
                               rtol=1e-4, atol=1e-5 * expected.abs().max().item())

    binop.sharpness = 1e6
    with binop.binarized():
        hard = filters_first(layer.weight.detach(), transposed)
        latent = filters_first(binop.saved[0], transposed)  # centred and clamped again
        sign = torch.where(latent >= 0, 1.0, -1.0)
        torch.testing.assert_close(hard, latent.abs().mean(dim=1, keepdim=True) * sign)


def test_layers_are_found_by_type_not_by_position():
    model = nn.Sequential(nn.Conv3d(3, 4, 1), BinConv3d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv3d(4, 4, 1), BinConvTranspose3d(4, 2, (3, 4, 4), (1, 2, 2), (1, 1, 1)))
    binop = BinOp(model)
    assert [f.param for f in binop.filters] == [model[1].weight, model[4].weight]
    real_before = model[0].weight.detach().clone()
    with binop.binarized():
        assert torch.equal(model[0].weight.detach(), real_before)


def test_state_dict_refuses_while_binarized():
    model, _ = make_model("conv3d")
    binop = BinOp(model)
    with binop.binarized():
        with pytest.raises(RuntimeError, match="binarized"):
            model.state_dict()
    assert "1.weight" in model.state_dict()


def test_context_manager_restores_even_when_the_block_fails():
    model, layer = make_model("conv3d")
    binop = BinOp(model)
    latent = centred_and_clamped(layer.weight.detach(), 1)
    with pytest.raises(ZeroDivisionError):
        with binop.binarized():
            1 / 0
    assert not binop.is_binarized
    assert torch.equal(layer.weight.detach(), latent)


def test_misordered_calls_are_errors():
    model, _ = make_model("conv3d")
    binop = BinOp(model)
    binop.binarization()
    with pytest.raises(RuntimeError):
        binop.binarization()
    with pytest.raises(RuntimeError):
        binop.updateBinaryGradWeight()
    binop.restore()
