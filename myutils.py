"""Shared utilities: evaluation metrics (FLAVR's protocol), meters, checkpoints and model loading."""
import logging
import os
import tempfile

import torch
import torch.nn.functional as F

from model import build_model, describe_config, strip_module_prefix

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "binary-flavr-checkpoint"
DEMO_EXPERIMENT = ("output", "binflavr_demo")  # where `python main_bin.py` (no data set) trains
DEMO_CHECKPOINT = os.path.join(*DEMO_EXPERIMENT, "model_best.pth")  # interpolate.py's default model
PACKED_MAGIC = b"BFLAVRPK"  # the first 8 bytes of a packed model file (engine/, export_packed.py)


# ---------------------------------------------------------------- metrics (docs/FLAVR.md protocol)

def _as_batch(frame):
    """``3 x H x W`` or ``B x 3 x H x W`` -> float ``B x 3 x H x W``."""
    if frame.dim() == 3:
        frame = frame.unsqueeze(0)
    if frame.dim() != 4:
        raise ValueError(f"expected a frame 3 x H x W or B x 3 x H x W, got shape {tuple(frame.shape)}")
    return frame.float()


def psnr_batch(pred, gt):
    """Per-frame PSNR in dB, ``-10 log10(mse + 1e-8)``; ``B x 3 x H x W`` in [0, 1] -> ``B``."""
    mse = ((_as_batch(pred) - _as_batch(gt)) ** 2).mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse + 1e-8)


def calc_psnr(pred, gt):
    """PSNR of one frame (``3 x H x W`` or ``1 x 3 x H x W``, values in [0, 1]) in dB."""
    return float(psnr_batch(pred, gt)[0])


def _gaussian_1d(size=11, sigma=1.5, device=None):
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _gaussian_filter_3d(volume, g):
    """Separable valid 3D Gaussian filter of ``N x 1 x D x H x W``."""
    k = g.numel()
    volume = F.conv3d(volume, g.view(1, 1, k, 1, 1))
    volume = F.conv3d(volume, g.view(1, 1, 1, k, 1))
    return F.conv3d(volume, g.view(1, 1, 1, 1, k))


def ssim_batch(pred, gt):
    """Per-frame SSIM as in the frame-interpolation literature: each RGB frame is one volume
    ``3 x H x W``, filtered by an 11x11x11 Gaussian (sigma 1.5) after replicate padding by 5 on every
    axis, C1 = 0.01^2, C2 = 0.03^2, map averaged. ``B x 3 x H x W`` in [0, 1] -> ``B``."""
    pred, gt = _as_batch(pred).clamp(0, 1), _as_batch(gt)
    g = _gaussian_1d(device=pred.device)
    pad = (5,) * 6
    x = F.pad(pred.unsqueeze(1), pad, mode="replicate")
    y = F.pad(gt.unsqueeze(1), pad, mode="replicate")
    mu_x, mu_y = _gaussian_filter_3d(x, g), _gaussian_filter_3d(y, g)
    sigma_xx = _gaussian_filter_3d(x * x, g) - mu_x ** 2
    sigma_yy = _gaussian_filter_3d(y * y, g) - mu_y ** 2
    sigma_xy = _gaussian_filter_3d(x * y, g) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / (
        (mu_x ** 2 + mu_y ** 2 + c1) * (sigma_xx + sigma_yy + c2))
    return ssim_map.flatten(1).mean(dim=1)


def calc_ssim(pred, gt):
    """SSIM of one frame (``3 x H x W`` or ``1 x 3 x H x W``, values in [0, 1])."""
    return float(ssim_batch(pred, gt)[0])


class AverageMeter:
    """Running average of a scalar: ``update(value, n)``, then ``avg``."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = self.sum = self.avg = 0.0
        self.count = 0

    def update(self, value, n=1):
        self.val = float(value)
        self.sum += self.val * n
        self.count += n
        self.avg = self.sum / self.count

    def state(self):
        """``[sum, count]``, what ``from_state`` needs to continue the average (checkpoints)."""
        return [self.sum, self.count]

    @classmethod
    def from_state(cls, state):
        meter = cls()
        meter.sum, meter.count = float(state[0]), int(state[1])
        meter.avg = meter.sum / meter.count if meter.count else 0.0
        return meter


# ---------------------------------------------------------------- frames

def pad_to_multiple(frames, multiple=8, mode="replicate"):
    """Pad frames ``B x 3 x H x W`` (a list, same size) on the bottom/right to multiples of
    ``multiple``; returns the padded list and ``(H, W)`` to crop the outputs back to."""
    h, w = frames[0].shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return list(frames), (h, w)
    return [F.pad(f, (0, pw, 0, ph), mode=mode) for f in frames], (h, w)


def str2bool(value):
    """argparse type for ``--cuda True`` / ``--cuda False``."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n"):
        return False
    raise ValueError(f"expected True or False, got {value!r}")


def select_device(cuda=None):
    """``cuda=None``: CUDA when present; True: CUDA or a ValueError; False: CPU."""
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda and not torch.cuda.is_available():
        raise ValueError("--cuda True but no CUDA device is available: use --cuda False")
    return torch.device("cuda" if cuda else "cpu")


# ---------------------------------------------------------------- checkpoints

class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used; the message says why and what to do."""


def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file in ``path``'s folder, fsync it, then rename it to
    ``path``: readers see the old file or the whole new one, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(obj, path):
    """``torch.save`` atomically (``write_atomically``); a failed write (a full disk) is an OSError."""
    def write(handle):
        try:
            torch.save(obj, handle)
        except RuntimeError as error:  # torch's zip writer turns a failed file write into a RuntimeError
            if isinstance(error.__context__, OSError):
                raise error.__context__ from None
            raise
    write_atomically(path, write)


def read_checkpoint(path):
    """Read any ``.pth`` checkpoint (ours or FLAVR's release) on CPU; clear errors for bad files."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file: give the path of a checkpoint (.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for non-checkpoint or truncated files
        raise ModelFileError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}); "
                             "was it fully written?") from None


def make_checkpoint(model, **state):
    """Our checkpoint: format tag, model configuration, latent weights, and any training ``state``."""
    return {"format": CHECKPOINT_FORMAT, "config": dict(model.config),
            "state_dict": model.state_dict(), **state}


def infer_flavr_config(state_dict):
    """The configuration of a FLAVR release state dict, from its keys and shapes."""
    sd = strip_module_prefix(state_dict)
    try:
        n_outputs = sd["outconv.1.weight"].shape[0] // 3
        base_channels = sd["encoder.stem.0.weight"].shape[0]
        n_inputs = sd["feature_fuse.conv.0.weight"].shape[1] // base_channels
    except KeyError:
        raise ModelFileError("the state dict has no stem/feature_fuse/outconv weights: it is not a "
                             "FLAVR model") from None
    block = "unet_34" if "encoder.layer3.5.conv1.0.weight" in sd else "unet_18"
    return {"arch": "flavr", "block": block, "n_inputs": n_inputs, "n_outputs": n_outputs,
            "base_channels": base_channels}


def is_packed_file(path):
    """True when ``path`` starts with the packed model file's magic bytes."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(len(PACKED_MAGIC)) == PACKED_MAGIC


def state_dict_of(checkpoint, path="checkpoint"):
    """The weights of any checkpoint: ours, FLAVR's release (``{"state_dict": ...}``) or a bare state
    dict of tensors; ModelFileError otherwise."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        return checkpoint
    raise ModelFileError(f"{path}: neither a Binary-FLAVR checkpoint nor a FLAVR release checkpoint "
                         "(no 'state_dict' entry)")


def checkpoint_config(checkpoint, path="checkpoint"):
    """The model configuration of any checkpoint: ours carries it, FLAVR's is inferred."""
    if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT:
        return checkpoint["config"]
    return infer_flavr_config(state_dict_of(checkpoint, path))


def model_from_checkpoint(checkpoint, path="checkpoint"):
    """Build the model a checkpoint describes and load its weights (latent weights, train mode)."""
    state_dict = state_dict_of(checkpoint, path)
    config = checkpoint_config(checkpoint, path)
    model = build_model(config, log_summary=False)
    try:
        model.load_state_dict(strip_module_prefix(state_dict), strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ModelFileError(f"{path}: the weights do not fit {describe_config(config)} ({first})") from None
    return model


def load_model(path, device="cpu", n_outputs=None):
    """Load any model file for inference: our binary or full-precision checkpoints, FLAVR's release
    checkpoints (``module.`` keys; factor and block inferred), or packed ``.bfl`` files.

    Returns ``(model, description)``; the model is on ``device`` in eval mode, a binary model with
    its weights binarized (``model.binop`` holds the latent weights). ``n_outputs`` (factor - 1), when
    given, must match the model's.
    """
    if is_packed_file(path):
        from engine import load_packed  # imported here: the engine builds its extension on first use
        model, description = load_packed(path, device)
    else:
        checkpoint = read_checkpoint(path)
        model = model_from_checkpoint(checkpoint, path).to(device).eval()
        if model.config["arch"] == "binary":
            from util import BinOp
            model.binop = BinOp(model)
            model.binop.binarization()
        epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
        description = describe_config(model.config) + (f", epoch {epoch}" if epoch is not None else "")
    if n_outputs is not None and model.config["n_outputs"] != n_outputs:
        raise ModelFileError(f"{path}: the model interpolates {model.config['n_outputs'] + 1}x "
                             f"(n_outputs={model.config['n_outputs']}), not {n_outputs + 1}x as asked: "
                             "use a model trained for that factor or change --factor/--n_outputs")
    log.info("loaded %s from %s", description, path)
    return model, description
