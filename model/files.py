"""Model files: our checkpoint format, FLAVR's release checkpoints, atomic writes, the packed
file's magic bytes, and ``load_model``, the one loader of every model file for every script.

The packed format itself (``.bfl``) is read and written by ``engine/packed_format.py``;
``load_model`` imports the engine only when it is given a packed file or asked to pack a binary
checkpoint (the engine builds its C++ extension on first use), so this module never imports the
engine at import time.
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
ENGINES = ("auto", "packed", "simulated")  # how load_model runs a binary checkpoint


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


def _binarized(model, description, path, device, engine):
    """A loaded binary model with its weights binarized, simulated or converted to the packed engine."""
    from util import BinOp
    model.binop = BinOp(model)
    model.binop.binarization()
    on_cpu = torch.device(device).type == "cpu"
    if engine == "packed" and not on_cpu:
        raise ModelFileError(f"{path}: the packed engine runs on the CPU: use --engine auto (simulated on "
                             f"{device}) or --cuda False")
    if engine == "simulated" or not on_cpu:
        return model, description
    from engine import ops, pack_binary_model  # imported here: the engine builds its extension on first use
    return pack_binary_model(model), f"{description}, packed 1-bit on load ({ops.default_variant()} kernels)"


def load_model(path, device="cpu", n_outputs=None, engine=None):
    """Load any model file for inference: our binary or full-precision checkpoints, FLAVR's release
    checkpoints (``module.`` keys; factor and block inferred), or packed ``.bfl`` files.

    Returns ``(model, description)``; the model is on ``device`` in eval mode, a simulated binary model
    with its weights binarized (``model.binop`` holds the latent weights; a packed one has none). ``n_outputs`` (factor - 1), when
    given, must match the model's. ``engine`` (see ENGINES) says how a binary checkpoint runs:
    ``simulated`` (float convolutions of +-1 values, any device), ``packed`` (converted on load to
    the bit-packed XNOR engine: the same outputs within 1e-4, several times faster; CPU only), or
    ``auto`` (packed on the CPU, simulated elsewhere); None: checkpoints simulated, packed files packed.
    """
    if engine is not None and engine not in ENGINES:
        raise ModelFileError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if is_packed_file(path):
        if engine == "simulated":
            raise ModelFileError(f"{path} is a packed model, which runs on the packed engine only: "
                                 "use --engine auto or packed, or load the checkpoint it was exported from")
        from engine import load_packed  # imported here: the engine builds its extension on first use
        model, description = load_packed(path, device)
    else:
        checkpoint = read_checkpoint(path)
        model = model_from_checkpoint(checkpoint, path).to(device).eval()
        epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
        description = describe_config(model.config) + (f", epoch {epoch}" if epoch is not None else "")
        if model.config["arch"] == "binary":
            model, description = _binarized(model, description, path, device, engine or "simulated")
        elif engine == "packed":
            raise ModelFileError(f"{path} is a full-precision model: --engine packed runs binary models only "
                                 "(use --engine auto)")
    if n_outputs is not None and model.config["n_outputs"] != n_outputs:
        raise ModelFileError(f"{path}: the model interpolates {model.config['n_outputs'] + 1}x "
                             f"(n_outputs={model.config['n_outputs']}), not {n_outputs + 1}x as asked: "
                             "use a model trained for that factor or change --factor/--n_outputs")
    log.info("loaded %s from %s", description, path)
    return model, description
