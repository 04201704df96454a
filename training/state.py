"""The training state a checkpoint holds, so that a resumed run continues exactly: the random number
generators of every library, the whole-run checkpoint (``training_checkpoint``) and the best model's
(``best_model_checkpoint``), and the check that a checkpoint can resume this run (``check_resumable``)."""
import random

import numpy as np
import torch

from model import model_config
from model.files import CHECKPOINT_FORMAT, ModelFileError, make_checkpoint


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
    continues a run exactly: optimizer, scheduler (and ``lr_total_steps``, the length of its decay),
    GradScaler, epochs done, best PSNR, every rank's RNG; mid-epoch (``--save_every``) also
    ``position``: ``epoch_step`` (steps of the next epoch done), ``global_batch`` (their samples, all
    processes together) and ``epoch_meters`` (``{loss term: [sum, count]}`` over them)."""
    return make_checkpoint(model, epoch=epoch, best_psnr=best_psnr, optimizer=optimizer.state_dict(),
                           scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), rng=rng,
                           args=dict(args), **position)


def best_model_checkpoint(model, *, epoch, psnr, ssim):
    """The best model so far: configuration and latent weights, for test.py / interpolate.py."""
    return make_checkpoint(model, epoch=epoch, psnr=psnr, ssim=ssim)


def check_resumable(checkpoint, path, config, batch_size):
    """ModelFileError unless ``checkpoint`` is a training checkpoint of ours; ValueError when its model
    differs from the configuration ``config`` the options ask for, or when it stopped mid-epoch at a
    batch other than ``batch_size`` (its position would not be one of this run's steps; checkpoints from
    before ``global_batch`` was recorded had a batch per process)."""
    if not (isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT
            and "optimizer" in checkpoint and "epoch" in checkpoint):
        raise ModelFileError(f"{path}: not a training checkpoint (no optimizer state): resume from an "
                             "experiment's checkpoint.pth, or start a new run from it with --pretrained")
    saved = model_config(**checkpoint["config"])
    differences = [f"{key}={saved[key]!r} (options: {config[key]!r})" for key in config if saved[key] != config[key]]
    if differences:
        raise ValueError(f"{path} holds another model: {', '.join(differences)}; "
                         "repeat the model options of the run you resume (a run begun before a recipe changed: "
                         "give its values, e.g. --warp_interpolation bilinear --prior_dead_zone 0)")
    saved = checkpoint.get("global_batch") or checkpoint.get("args", {}).get("batch_size", 0) * len(checkpoint["rng"])
    if checkpoint.get("epoch_step") and saved != batch_size:
        raise ValueError(f"{path} stopped after step {checkpoint['epoch_step']} of epoch {checkpoint['epoch'] + 1} "
                         f"at a batch of {saved} samples, this run's is {batch_size}: "
                         f"resume with --batch_size {saved}, or from a checkpoint written at the end of an epoch")


