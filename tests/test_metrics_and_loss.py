"""PSNR / SSIM by FLAVR's protocol, and the loss string."""
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio

from loss import Loss, parse_loss_string
from myutils import AverageMeter, calc_psnr, calc_ssim


def frame(seed, shape=(3, 24, 32)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_identical_frames_give_maximum_psnr_and_ssim():
    x = frame(0)
    assert calc_psnr(x, x) == pytest.approx(80.0)  # -10 log10(1e-8)
    assert calc_ssim(x, x) == pytest.approx(1.0, abs=1e-6)


def test_psnr_matches_scikit_image_on_rgb_frames():
    gt = frame(1)
    pred = (gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    ours = calc_psnr(pred.unsqueeze(0), gt)
    theirs = peak_signal_noise_ratio(gt.permute(1, 2, 0).numpy(), pred.permute(1, 2, 0).numpy(), data_range=1.0)
    assert ours == pytest.approx(theirs, abs=1e-4)


def ssim_direct(x, y):
    """Independent SSIM: the full 11x11x11 Gaussian window as one 3D convolution."""
    g = torch.exp(-(torch.arange(11.0) - 5) ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    window = (g[:, None, None] * g[None, :, None] * g[None, None, :])[None, None]
    x = F.pad(x.clamp(0, 1)[None, None], (5,) * 6, mode="replicate")
    y = F.pad(y[None, None], (5,) * 6, mode="replicate")
    mx, my = F.conv3d(x, window), F.conv3d(y, window)
    sxx, syy = F.conv3d(x * x, window) - mx ** 2, F.conv3d(y * y, window) - my ** 2
    sxy = F.conv3d(x * y, window) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))).mean())


def test_ssim_follows_the_3d_gaussian_protocol():
    gt, pred = frame(3), frame(4)
    blend = 0.7 * gt + 0.3 * pred
    assert calc_ssim(blend, gt) == pytest.approx(ssim_direct(blend, gt), abs=1e-5)


def test_ssim_is_symmetric_bounded_and_lower_for_noisier_frames():
    gt = frame(5)
    noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(6))
    slight, heavy = (gt + 0.02 * noise).clamp(0, 1), (gt + 0.2 * noise).clamp(0, 1)
    assert calc_ssim(slight, heavy) == pytest.approx(calc_ssim(heavy, slight), abs=1e-6)
    values = [calc_ssim(slight, gt), calc_ssim(heavy, gt), calc_ssim(1 - gt, gt)]
    assert all(-1 <= v <= 1 for v in values)
    assert values[0] > values[1] > values[2]


def test_ssim_clamps_predictions_first():
    gt = frame(7)
    assert calc_ssim(gt + 2.0, gt) == pytest.approx(calc_ssim(torch.ones_like(gt), gt), abs=1e-6)


def test_metrics_refuse_frames_of_the_wrong_rank():
    with pytest.raises(ValueError, match="expected a frame"):
        calc_psnr(torch.rand(24, 32), torch.rand(24, 32))


def test_average_meter_weights_by_count():
    meter = AverageMeter()
    meter.update(1.0, n=1)
    meter.update(4.0, n=3)
    assert meter.avg == pytest.approx(3.25) and meter.count == 4


def test_loss_string_gives_weighted_sum_and_per_term_values():
    pred, target = [frame(8)[None]], [frame(9)[None]]
    total, terms = Loss("1*L1+0.1*SSIM")(pred, target)
    assert set(terms) == {"L1", "SSIM"}
    assert float(total) == pytest.approx(float(terms["L1"]) + 0.1 * float(terms["SSIM"]), rel=1e-6)
    assert float(terms["L1"]) == pytest.approx(float((pred[0] - target[0]).abs().mean()), rel=1e-6)


@pytest.mark.parametrize("name", ["L1", "MSE", "Charbonnier", "Huber", "SSIM"])
def test_every_loss_term_is_zero_for_a_perfect_prediction_and_positive_otherwise(name):
    target = [frame(10)[None]]
    perfect, _ = Loss(f"1*{name}")(target, target)
    wrong, _ = Loss(f"1*{name}")([frame(11)[None]], target)
    assert float(perfect) == pytest.approx(0.0, abs=2e-3) and float(wrong) > 0.01


@pytest.mark.parametrize("spec, message", [("1*L3", "unknown loss 'L3'"), ("x*L1", "not a number")])
def test_bad_loss_strings_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_loss_string(spec)


def test_the_evaluation_loss_is_the_mean_over_samples_whatever_the_batches():
    from evaluation import evaluate

    class Blend(torch.nn.Module):
        config = {"n_inputs": 4, "n_outputs": 1}

        def forward(self, frames):
            return [(frames[1] + frames[2]) / 2]

    windows = [([frame(10 * s + k, (1, 3, 32, 32)) for k in range(4)], [frame(10 * s + 5, (1, 3, 32, 32))])
               for s in range(5)]

    def batches(size):  # 5 samples in batches of ``size``: a short last batch unless it divides 5
        return [([torch.cat([w[0][k] for w in windows[i:i + size]]) for k in range(4)],
                 [torch.cat([w[1][0] for w in windows[i:i + size]])]) for i in range(0, 5, size)]

    criterion = Loss("1*L1+0.1*SSIM")
    cpu = torch.device("cpu")
    losses = [evaluate(Blend(), batches(size), cpu, criterion, progress=False).loss for size in (1, 2, 5)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6) and losses[2] == pytest.approx(losses[0], rel=1e-6)
