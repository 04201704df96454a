"""Binary training keeps fewer bytes for backward than full-precision FLAVR. A binary layer runs
BatchNorm -> sign -> convolution as one autograd function that keeps only its input (and, for a
decoder layer, the parts of its input, never their concatenation) and recomputes the rest in
backward; in float32 its outputs and gradients are those of the plain composition of PyTorch
modules, bit for bit, and under autocast it keeps autocast's dtype."""
import pytest
import torch
import torch.nn.functional as F

from model import build_model
from model.binconv import BinConv2d, BinConv3d, BinConvTranspose3d, binary_sign, padding_ring
from util import BinOp

LAYERS = {
    "conv3d, stride 2": (lambda: BinConv3d(6, 5, 3, (1, 2, 2), 1), [(2, 6, 3, 8, 10)]),
    "conv3d on two parts, no bias": (lambda: BinConv3d(6, 5, 3, 1, 1, bias=False), [(2, 2, 3, 8, 10), (2, 4, 3, 8, 10)]),
    "transposed on two parts": (lambda: BinConvTranspose3d(6, 5, (3, 4, 4), (1, 2, 2), (1, 1, 1)),
                                [(2, 3, 3, 4, 5), (2, 3, 3, 4, 5)]),
    "conv2d": (lambda: BinConv2d(6, 5, 3, 1, 1), [(2, 6, 8, 10)]),
    "conv3d with a real shortcut": (lambda: BinConv3d(6, 12, 3, (1, 2, 2), 1, shortcut=True), [(2, 6, 3, 8, 10)]),
}


def plain_composition(layer, x):
    """The binary layer as PyTorch modules that autograd differentiates: BatchNorm, the straight-through
    sign, the zero-padded convolution of the signs with W / max|W| plus the +1 border's term, scaled back."""
    signs = binary_sign(layer.bn(x))
    transposed = isinstance(layer, BinConvTranspose3d)
    filter_dim, input_dim = (1, 0) if transposed else (0, 1)
    scale = layer.weight.detach().abs().amax(dim=[d for d in range(layer.weight.dim()) if d != filter_dim],
                                             keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    unit = layer.weight / scale
    ring_size, ring_padding = layer.one_padding()
    if transposed:
        dot = F.conv_transpose3d(signs, unit, None, layer.stride, layer.padding)
        dot = dot + F.conv_transpose3d(padding_ring(signs, ring_size), unit.sum(dim=input_dim, keepdim=True), None,
                                       layer.stride, ring_padding)
    else:
        conv = F.conv3d if x.dim() == 5 else F.conv2d
        dot = conv(signs, unit, None, layer.stride, layer.padding)
        dot = dot + conv(padding_ring(signs, ring_size), unit.sum(dim=input_dim, keepdim=True), None, layer.stride, 0)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    out = dot * scale.reshape(shape)
    out = out if layer.bias is None else out + layer.bias.reshape(shape)
    return out if layer.shortcut is None else out + layer.shortcut(x)


def twin_layers(make, seed=0):
    torch.manual_seed(seed)
    fused, plain = make(), make()
    with torch.no_grad():
        fused.weight.normal_(0, 0.5)
        fused.bn.weight.uniform_(0.5, 1.5)
        fused.bn.bias.uniform_(-0.5, 0.5)
    plain.load_state_dict(fused.state_dict())
    return fused, plain


def gradients(layer, parts):
    """The gradients of ``parts`` then of every parameter of ``layer`` (weight, bias, BatchNorm's)."""
    return [p.grad for p in parts] + [p.grad for _, p in sorted(layer.named_parameters())]


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_fused_binary_layers_give_the_outputs_and_gradients_of_the_plain_composition_bit_for_bit(kind, training):
    make, shapes = LAYERS[kind]
    fused, plain = twin_layers(make)
    fused.train(training), plain.train(training)
    values = [torch.randn(shape) * 2 for shape in shapes]
    parts = [v.clone().requires_grad_() for v in values]
    whole = torch.cat([v.clone() for v in values], dim=1).requires_grad_()
    out = fused(parts if len(parts) > 1 else parts[0])
    expected = plain_composition(plain, whole)
    grad = torch.randn_like(expected)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(out, expected)
    got, want = gradients(fused, parts), gradients(plain, [whole])
    assert torch.equal(torch.cat(got[:len(parts)], dim=1), want[0])
    assert all(torch.equal(a, b) for a, b in zip(got[len(parts):], want[1:]))
    assert torch.equal(fused.bn.running_mean, plain.bn.running_mean)
    assert torch.equal(fused.bn.running_var, plain.bn.running_var)


@pytest.mark.parametrize("sharpness", [None, 3.0], ids=["hard signs", "soft signs"])
def test_the_weights_binop_hands_the_layer_give_the_composition_of_its_binarized_weight(sharpness):
    fused, plain = twin_layers(LAYERS["conv3d, stride 2"][0])
    binops = [BinOp(torch.nn.Sequential(layer)) for layer in (fused, plain)]
    x = torch.randn(2, 6, 3, 8, 10)
    for binop in binops:
        binop.sharpness = sharpness
    with binops[0].binarized(), binops[1].binarized():
        assert fused.binarized_weight is not None
        out = fused(x)
        plain.binarized_weight = None  # the composition computes W / max|W| from the binarized weight itself
        expected = plain_composition(plain, x)
        out.square().sum().backward()
        expected.square().sum().backward()
    assert fused.binarized_weight is None
    for binop in binops:
        binop.updateBinaryGradWeight()
    assert torch.equal(out, expected) and torch.equal(fused.weight.grad, plain.weight.grad)


def saved_storages(function):
    """(result, the storages autograd saved while ``function`` ran: [(data_ptr, nbytes, dtype)])."""
    saved = []

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved.append((storage.data_ptr(), storage.nbytes(), tensor.dtype))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = function()
    return result, saved


def test_a_binary_layer_keeps_only_its_input_parts_for_backward():
    layer = BinConv3d(64, 32, 3, 1, 1).train()
    parts = [torch.randn(2, 32, 4, 32, 32, requires_grad=True) for _ in range(2)]  # 1 MB each; weight 0.2 MB
    out, saved = saved_storages(lambda: layer(parts))
    activation = parts[0].numel() * 4
    large = {(ptr, size) for ptr, size, _ in saved if size >= activation // 2}
    assert large == {(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in parts}
    out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in parts)


def saved_bytes_per_sample(config, autocast, batch=2, size=32):
    """Bytes of the distinct storages one training forward saves, per sample (batch minus batch 1)."""
    totals = []
    for samples in (batch, batch // 2):
        torch.manual_seed(0)
        model = build_model({**config, "base_channels": 8}, log_summary=False).train()
        binop = BinOp(model) if config["arch"] == "binary" else None
        frames = [torch.rand(samples, 3, size, size) for _ in range(4)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if binop is not None:
                binop.binarization()
            _, saved = saved_storages(lambda: (model(frames)[0] - frames[1]).abs().mean())
        totals.append(sum(size for _, size in {(ptr, size) for ptr, size, _ in saved}))
    return (totals[0] - totals[1]) / (batch - batch // 2)


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16 autocast"])
def test_the_default_binary_model_keeps_fewer_bytes_per_sample_than_flavr(autocast):
    flavr = saved_bytes_per_sample({"arch": "flavr"}, autocast)
    binary = saved_bytes_per_sample({"arch": "binary", "head": "warp", "motion_prior": "matching"}, autocast)
    binary_flavr_layout = saved_bytes_per_sample({"arch": "binary"}, autocast)
    assert binary < flavr and binary_flavr_layout < 0.9 * flavr


def test_binary_layers_keep_autocasts_dtype_and_save_their_input_as_it_came():
    layer = BinConvTranspose3d(16, 8, (3, 4, 4), (1, 2, 2), (1, 1, 1)).train()
    x = torch.randn(2, 16, 4, 32, 32).bfloat16().requires_grad_()  # 0.5 MB; the weight: 24 kB
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, saved = saved_storages(lambda: layer(x))
    assert out.dtype == torch.bfloat16
    activations = [dtype for _, size, dtype in saved if size >= x.numel()]
    assert activations and set(activations) == {torch.bfloat16}
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and layer.weight.grad.dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["conv3d on two parts, no bias", "transposed on two parts"])
def test_fused_binary_layers_on_cuda_give_the_plain_compositions_outputs_and_gradients(kind):
    make, shapes = LAYERS[kind]
    fused, plain = (layer.cuda().train() for layer in twin_layers(make))
    values = [torch.randn(shape, device="cuda") * 2 for shape in shapes]
    parts = [v.clone().requires_grad_() for v in values]
    whole = torch.cat([v.clone() for v in values], dim=1).requires_grad_()
    out, expected = fused(parts), plain_composition(plain, whole)
    grad = torch.randn_like(expected)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([p.grad for p in parts], dim=1), whole.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)
