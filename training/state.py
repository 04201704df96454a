"""What a training checkpoint holds beyond the model, and how a run is restored from one.

Everything is stored as tensors, lists, dicts, strings and numbers, so every checkpoint loads
with ``torch.load(weights_only=True)``.
"""
import random

import numpy as np
import torch

from model import model_config
from myutils import CHECKPOINT_FORMAT, ModelFileError, make_checkpoint


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message says where and what to do."""


def seed_everything(seed):
    """Seed torch (CPU and CUDA), Python's ``random`` and NumPy's global generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_state():
    """This process's random generator states: torch CPU / CUDA, Python, NumPy."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": [version, list(internal), gauss_next],
             "numpy": {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached_gaussian)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    """Put back the generator states ``capture_rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], np.array(numpy["keys"], dtype=np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    cuda_states = state.get("cuda", [])
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def training_checkpoint(model, *, epoch, best_psnr, optimizer, scheduler, scaler, rng, args, **position):
    """Our checkpoint (``make_checkpoint``: format, model config, latent weights) plus the state that
    continues a run exactly: optimizer, scheduler, GradScaler, epochs done, best PSNR, every rank's RNG;
    mid-epoch (``--save_every``) also ``position``: ``epoch_step`` (batches of the next epoch done)
    and ``epoch_meters`` (``{loss term: [sum, count]}`` over them)."""
    return make_checkpoint(model, epoch=epoch, best_psnr=best_psnr, optimizer=optimizer.state_dict(),
                           scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), rng=rng,
                           args=dict(args), **position)


def best_model_checkpoint(model, *, epoch, psnr, ssim):
    """The best model so far: configuration and latent weights, for test.py / interpolate.py."""
    return make_checkpoint(model, epoch=epoch, psnr=psnr, ssim=ssim)


def check_resumable(checkpoint, path, config):
    """ModelFileError unless ``checkpoint`` is a training checkpoint of ours; ValueError when its model
    differs from the configuration ``config`` the options ask for."""
    if not (isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT
            and "optimizer" in checkpoint and "epoch" in checkpoint):
        raise ModelFileError(f"{path}: not a training checkpoint (no optimizer state): resume from an "
                             "experiment's checkpoint.pth, or start a new run from it with --pretrained")
    saved = model_config(**checkpoint["config"])
    differences = [f"{key}={saved[key]!r} (options: {config[key]!r})" for key in config if saved[key] != config[key]]
    if differences:
        raise ValueError(f"{path} holds another model: {', '.join(differences)}; "
                         "repeat the model options of the run you resume")
