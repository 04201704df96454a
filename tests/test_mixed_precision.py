"""Mixed precision is correct: losses and metrics are float32 whatever autocast does, a bf16 training
step follows the float32 one, validation during an AMP run scores the exact float32 model that
test.py scores, and bf16 is the default only on GPUs that have it natively. On the CPU, with bf16
autocast against float32 references."""
import json

import pytest
import torch

from loss import Loss
from model import build_model
from model.binconv import BinConv3d
from myutils import psnr_batch, ssim_batch
from tests.fixtures import run_repo_script, write_vimeo
from training import main
from training.options import choose_amp
from training.trainer import Trainer, build_parser, load_optimizer_state, resolve_options
from training.distributed import single_process_runtime
from util import BinOp


def smooth_frames(seed=0):
    generator = torch.Generator().manual_seed(seed)
    base = torch.linspace(0.2, 0.8, 48).view(1, 1, 1, 48).expand(2, 3, 40, 48)
    return base + 0.01 * torch.randn(2, 3, 40, 48, generator=generator)


def test_losses_and_metrics_are_float32_inside_autocast():
    pred, target = smooth_frames(0), smooth_frames(1)
    loss = Loss("1*L1+1*SSIM")
    outside = loss([pred], [target])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = loss([pred], [target])
        metrics = psnr_batch(pred, target), ssim_batch(pred, target)
    assert torch.equal(inside[0], outside[0]) and inside[0].dtype == torch.float32
    assert inside[1]["SSIM"] > 0  # bf16 made 1 - SSIM negative on such frames
    assert torch.equal(metrics[0], psnr_batch(pred, target)) and torch.equal(metrics[1], ssim_batch(pred, target))


def trainer_of(arch, amp, cuda=False):
    args = build_parser("test", "").parse_args(["--dataset", "vimeo90K_septuplet", "--arch", arch, "--amp", amp,
                                                "--base_channels", "8", "--cuda", str(cuda), "--log_every", "1"])
    resolve_options(args)
    torch.manual_seed(0)
    model = build_model({"arch": arch, "base_channels": 8, "head": "warp",
                         "motion_prior": "matching" if arch == "binary" else "none"}, log_summary=False)
    return Trainer(args, single_process_runtime(cuda), model, (None, None), experiment=None)


def step_gradients(trainer, inputs, targets):
    """The loss and every parameter's gradient (the latent weights' after BinOp's rule) of one step, from
    an output head that is not zero (all layers get gradients)."""
    torch.manual_seed(5)
    with torch.no_grad():
        trainer.raw_model.outconv[1].weight.normal_(0, 0.01)
    trainer.optimizer.zero_grad()
    binop = trainer.binop_in(1)
    with trainer._binarized(binop):
        loss, _ = trainer._loss(inputs, targets)
        loss.backward()
    if binop is not None:
        binop.updateBinaryGradWeight()
    return loss.detach(), {name: p.grad for name, p in trainer.raw_model.named_parameters() if p.grad is not None}


def random_frames(count=5, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 32, 32, generator=generator) for _ in range(count)]


def test_a_bf16_training_step_of_flavr_follows_the_float32_step():
    frames = random_frames()
    reference = step_gradients(trainer_of("flavr", "none"), frames[:4], frames[4:])
    mixed = step_gradients(trainer_of("flavr", "bf16"), frames[:4], frames[4:])
    assert mixed[0].dtype == torch.float32 and abs(float(mixed[0] - reference[0])) < 0.01 * float(reference[0])
    flat = [torch.cat([g.flatten() for g in grads.values()]) for grads in (mixed[1], reference[1])]
    assert torch.nn.functional.cosine_similarity(*flat, dim=0) > 0.99


def test_a_bf16_training_step_of_the_binary_model_has_the_float32_loss_and_gradient_sizes():
    """The directions of a binary network's straight-through gradients change with any perturbation: a
    1e-4 relative change of the input frames in float32 already turns them (median cosine per layer
    ~0.1), and bf16 does no more than that. What bf16 must keep: the loss, and each layer's gradient size."""
    frames = random_frames()
    reference = step_gradients(trainer_of("binary", "none"), frames[:4], frames[4:])
    mixed = step_gradients(trainer_of("binary", "bf16"), frames[:4], frames[4:])
    assert mixed[0].dtype == torch.float32 and abs(float(mixed[0] - reference[0])) < 0.01 * float(reference[0])
    assert all(g.dtype == torch.float32 for g in mixed[1].values()) and mixed[1].keys() == reference[1].keys()
    ratios = [float(mixed[1][name].norm() / reference[1][name].norm()) for name in reference[1]
              if reference[1][name].norm() > 0]
    assert sum(0.5 < ratio < 2 for ratio in ratios) >= 0.9 * len(ratios)


def test_an_amp_run_validates_the_exact_float32_model_that_test_py_scores(tmp_path):
    write_vimeo(tmp_path / "vimeo", n_seqs=2)
    options = ["--dataset", "vimeo90K_septuplet", "--data_root", str(tmp_path / "vimeo"), "--crop_size", "32",
               "--batch_size", "2", "--test_batch_size", "2", "--max_steps_per_epoch", "2", "--max_epoch", "1",
               "--base_channels", "8", "--amp", "bf16", "--num_workers", "0", "--progress", "False",
               "--cuda", "False", "--checkpoint_dir", str(tmp_path / "runs"), "--exp_name", "amp"]
    assert main(options) == 0
    line = (tmp_path / "runs/amp/results.txt").read_text().split()
    validated = float(line[line.index("psnr") + 1])
    report = tmp_path / "test.json"
    process = run_repo_script("test.py", "--dataset", "vimeo90K_septuplet", "--data_root", str(tmp_path / "vimeo"),
                              "--load_from", str(tmp_path / "runs/amp/checkpoint.pth"), "--engine", "simulated",
                              "--test_batch_size", "2", "--results_json", str(report))
    assert process.returncode == 0, process.stderr[-2000:]
    assert abs(json.loads(report.read_text())["psnr"] - validated) < 1e-4


def test_bf16_is_the_default_only_on_gpus_with_native_bf16():
    assert choose_amp(None, "cuda", (8, 0)) == "bf16" and choose_amp(None, "cuda", (9, 0)) == "bf16"
    assert choose_amp(None, "cuda", (7, 0)) == "fp16" and choose_amp(None, "cuda", (7, 5)) == "fp16"
    assert choose_amp(None, "cpu") == "none" and choose_amp("bf16", "cpu") == "bf16"
    assert choose_amp("none", "cuda", (7, 0)) == "none"
    with pytest.raises(ValueError, match="no native bfloat16.*--amp fp16") as error:
        choose_amp("bf16", "cuda", (7, 0), "Tesla V100")
    assert "Tesla V100" in str(error.value) and "\n" not in str(error.value)


def test_a_binary_layer_under_autocast_gives_its_float32_output_but_for_bf16_rounding():
    torch.manual_seed(0)
    layer = BinConv3d(32, 16, 3, 1, 1).eval()
    x = torch.randn(2, 32, 4, 16, 16)
    binop = BinOp(torch.nn.Sequential(layer))
    with torch.no_grad(), binop.binarized():
        exact = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = layer(x.bfloat16())
    assert mixed.dtype == torch.bfloat16
    off = (mixed.float() - exact).abs() > 0.02 * exact.abs().max()  # more than bf16 rounding: a sign flipped
    assert float(off.float().mean()) < 0.02


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["binary", "flavr"])
def test_a_training_step_under_the_gpus_autocast_keeps_float32_losses_and_the_float32_loss(arch):
    amp = choose_amp(None, "cuda", torch.cuda.get_device_capability())
    frames = [f.cuda() for f in random_frames()]
    reference = step_gradients(trainer_of(arch, "none", cuda=True), frames[:4], frames[4:])
    mixed = step_gradients(trainer_of(arch, amp, cuda=True), frames[:4], frames[4:])
    assert mixed[0].dtype == torch.float32 and abs(float(mixed[0] - reference[0])) < 0.01 * float(reference[0])
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in mixed[1].values())


def test_a_run_saved_by_an_unfused_optimizer_resumes_fused_with_fp16_gradient_scaling():
    """A checkpoint of a CPU run (Adam's ``fused=None``) resumed where the optimizer is fused (CUDA): the
    saved groups must not unfuse it, or GradScaler's step, which hands a fused optimizer its scale, fails."""
    saved = torch.nn.Parameter(torch.randn(4))
    unfused = torch.optim.Adam([saved], lr=1e-3)
    saved.grad = torch.randn(4)
    unfused.step()
    weight = torch.nn.Parameter(torch.randn(4))
    fused = torch.optim.Adam([weight], lr=1e-3, fused=True)
    load_optimizer_state(fused, unfused.state_dict())
    assert fused.param_groups[0]["fused"] is True
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    scaler.scale((weight ** 2).sum()).backward()
    before = weight.detach().clone()
    scaler.step(fused)
    assert not torch.equal(weight, before) and int(fused.state[weight]["step"]) == 2
