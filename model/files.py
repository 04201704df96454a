"""Model files: our checkpoint format, FLAVR's release checkpoints, atomic writes and the packed
file's magic bytes. The packed format itself (``.bfl``) is read and written by
``engine/packed_format.py``; ``model_loader.load_model``, above both ``model/`` and ``engine/``,
loads every kind of model file for every script.
"""
import logging
import os
import tempfile

import torch

from model.builder import build_model, describe_config, strip_module_prefix

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "binary-flavr-checkpoint"
DEMO_EXPERIMENT = ("output", "binflavr_demo")  # where `python main_bin.py` (no data set) trains
DEMO_CHECKPOINT = os.path.join(*DEMO_EXPERIMENT, "model_best.pth")  # the scripts' default model
PACKED_MAGIC = b"BFLAVRPK"  # the first 8 bytes of a packed model file (engine/packed_format.py)
ENGINES = ("auto", "packed", "simulated")  # how model_loader.load_model runs a binary checkpoint


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


def first_misfit(expected, tensors):
    """The first way ``tensors`` (name -> tensor) differ from ``expected`` (a state dict, e.g. of a model
    built on the meta device) in names or shapes, as a phrase; None when they fit."""
    missing = [name for name in expected if name not in tensors]
    unexpected = [name for name in tensors if name not in expected]
    wrong = [name for name in expected if name in tensors and tensors[name].shape != expected[name].shape]
    if wrong:
        return (f"{wrong[0]} is {list(tensors[wrong[0]].shape)} in the file, "
                f"{list(expected[wrong[0]].shape)} in the model")
    if missing or unexpected:
        return f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
    return None


def model_from_checkpoint(checkpoint, path="checkpoint"):
    """Build the model a checkpoint describes and load its weights (latent weights, train mode). The
    configuration is checked against the tensors on the meta device first, so a file whose
    configuration does not fit its weights allocates nothing."""
    state_dict = strip_module_prefix(state_dict_of(checkpoint, path))
    config = checkpoint_config(checkpoint, path)
    try:
        with torch.device("meta"):
            expected = build_model(config, log_summary=False).state_dict()
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{path}: its model configuration is invalid ({error})") from None
    misfit = first_misfit(expected, state_dict)
    if misfit:
        raise ModelFileError(f"{path}: the weights do not fit {describe_config(config)} ({misfit})")
    model = build_model(config, log_summary=False)
    model.load_state_dict(state_dict, strict=True)
    return model
