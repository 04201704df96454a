"""``load_model``: the one loader of every model file for every script (our binary and
full-precision checkpoints, FLAVR's release checkpoints, packed ``.bfl`` files). It stands above
both ``model/`` (checkpoints) and ``engine/`` (packed files and the conversion to them); the engine
builds its C++ extension on first use, so it is imported only when a model needs it."""
import logging

import torch

from model.builder import describe_config
from model.files import ENGINES, ModelFileError, is_packed_file, model_from_checkpoint, read_checkpoint
from util import BinOp

log = logging.getLogger(__name__)


def _binarized(model, description, path, device, engine):
    """A loaded binary model with its weights binarized, simulated or converted to the packed engine."""
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
        if torch.device(device).type != "cpu":
            raise ModelFileError(f"{path} is a packed model, which runs on the CPU only: load it with --cuda False, "
                                 "or the checkpoint it was exported from on the GPU")
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
