"""The training loop that ``main_bin.py`` and ``main_bin_ddp.py`` share.

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
The learning rate follows ReduceLROnPlateau on the validation loss (FLAVR) or decays to 0 per
step (``--lr_schedule cosine|linear``).
"""
import contextlib
import itertools
import logging
import math
from collections import defaultdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from dataset import set_epoch
from evaluation import evaluate
from loss import Loss
from myutils import AverageMeter
from training.state import (TrainingDiverged, best_model_checkpoint, capture_rng_state, restore_rng_state,
                            training_checkpoint)
from model.binconv import BINARY_LAYERS
from util import BinOp

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def make_optimizer(model, args):
    """Adam (FLAVR); with ``--weight_decay`` > 0, AdamW whose decay skips the latent binary weights
    (their sign is all that counts), BatchNorm / RPReLU parameters and biases."""
    betas = (args.beta1, args.beta2)
    if args.weight_decay == 0:
        return torch.optim.Adam(model.parameters(), lr=args.lr, betas=betas)
    binary = {id(m.weight) for m in model.modules() if isinstance(m, BINARY_LAYERS)}
    decayed, others = [], []
    for p in model.parameters():
        (decayed if p.dim() > 1 and id(p) not in binary else others).append(p)
    return torch.optim.AdamW([{"params": decayed, "weight_decay": args.weight_decay},
                              {"params": others, "weight_decay": 0.0}], lr=args.lr, betas=betas)


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


class Trainer:
    """Trains ``model`` (on ``runtime.device``) with Adam, the ``--lr_schedule`` over ``total_steps``,
    optional AMP and distillation from ``teacher`` (a frozen model in eval mode, or None), and writes
    the experiment's artefacts through ``experiment`` (and the debugging record through
    ``recorder``, a ``SampleRecorder``, when given)."""

    def __init__(self, args, runtime, model, experiment, recorder=None, total_steps=1, teacher=None):
        self.args, self.runtime, self.experiment, self.recorder = args, runtime, experiment, recorder
        self.raw_model = model.to(runtime.device).train()
        self.model = runtime.wrap(self.raw_model)
        self.binop = BinOp(self.model) if model.config["arch"] == "binary" else None
        self.teacher = teacher
        self.criterion = Loss(args.loss)
        self.optimizer = make_optimizer(self.raw_model, args)
        self.scheduler = make_scheduler(self.optimizer, args, total_steps)
        self.autocast_dtype = AUTOCAST_DTYPES[args.amp]
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=args.amp == "fp16")
        self.epoch, self.best_psnr = 0, -math.inf
        self.epoch_step, self.epoch_meters, self.pending_rng = 0, {}, None  # a mid-epoch resume's position
        self.last_checkpoint = None
        torch.backends.cudnn.benchmark = runtime.device.type == "cuda"

    def restore(self, checkpoint, path):
        """Continue the run ``checkpoint`` (a ``training_checkpoint``, read from ``path``) saved, exactly."""
        self.last_checkpoint = path
        self.raw_model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler.is_enabled() and checkpoint["scaler"]:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.best_psnr = checkpoint["epoch"], checkpoint["best_psnr"]
        self.epoch_step = checkpoint.get("epoch_step", 0)
        self.epoch_meters = checkpoint.get("epoch_meters", {})
        rng = checkpoint["rng"]
        if len(rng) != self.runtime.world_size:
            log.warning("the checkpoint holds the random state of %d processes, this run has %d: every "
                        "process continues from rank 0's", len(rng), self.runtime.world_size)
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
        return self.optimizer.param_groups[0]["lr"]

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.runtime.device.type, dtype=self.autocast_dtype)

    def binop_in(self, epoch):
        """The BinOp when epoch ``epoch`` trains binary weights (after ``--stage1_epochs``), else None."""
        return self.binop if epoch > self.args.stage1_epochs else None

    def _binarized(self, binop):
        return binop.binarized() if binop is not None else contextlib.nullcontext()

    def _loss(self, inputs, targets):
        """The training loss and its terms, plus ``distill`` = L1 to the teacher's frames (``--teacher``)."""
        preds = self.model(inputs)
        loss, terms = self.criterion(preds, targets)
        if self.teacher is not None:
            with torch.no_grad():
                taught = torch.cat([p.float() for p in self.teacher(inputs)])
            distill = F.l1_loss(torch.cat(list(preds)).float(), taught)
            loss = loss + self.args.distill_weight * distill
            terms["distill"] = distill.detach()
        return loss, terms

    def train_step(self, inputs, targets, where, epoch):
        """One optimiser step on a batch (lists of ``B x 3 x H x W``); returns (loss, {term: value})."""
        device = self.runtime.device
        inputs = [x.to(device, non_blocking=True) for x in inputs]
        targets = [y.to(device, non_blocking=True) for y in targets]
        self.optimizer.zero_grad(set_to_none=True)
        binop = self.binop_in(epoch)
        with self._binarized(binop):
            with self._autocast():
                loss, terms = self._loss(inputs, targets)
            if not self.runtime.all_finite(loss):
                raise TrainingDiverged(f"the training loss is {float(loss.detach())} at {where}")
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
        return float(loss.detach()), {name: float(value) for name, value in terms.items()}

    def train_epoch(self, loader, epoch, start_step=0, meters=None):
        """Train on (at most ``--max_steps_per_epoch`` batches of) ``loader`` from batch ``start_step``
        on (a mid-epoch resume, whose loss sums so far are ``meters``); mean losses over ranks."""
        set_epoch(loader, epoch)
        steps = len(FirstBatches(loader, self.args.max_steps_per_epoch))  # the whole epoch's
        if start_step:
            set_epoch(loader, epoch, skip_batches=start_step)
        batches = FirstBatches(loader, steps - start_step)
        sample_indices = iter(loader.batch_sampler) if self.recorder is not None else None
        meters = defaultdict(AverageMeter, {name: AverageMeter.from_state(state) for name, state in
                                            (meters or {}).items()})
        progress = tqdm(batches, desc=f"epoch {epoch}/{self.args.max_epoch}", leave=False, dynamic_ncols=True,
                        initial=start_step, total=steps, disable=not (self.args.progress and self.runtime.is_main))
        batch_iterator = iter(progress)
        if self.pending_rng is not None:
            restore_rng_state(self.pending_rng)
            self.pending_rng = None
        for step, (inputs, targets) in enumerate(batch_iterator, start_step + 1):
            loss, terms = self.train_step(inputs, targets, f"epoch {epoch}, step {step}", epoch)
            size = inputs[0].shape[0]
            meters["loss"].update(loss, size)
            for name, value in terms.items():
                meters[name].update(value, size)
            progress.set_postfix(loss=f"{meters['loss'].avg:.4f}")
            if self.recorder is not None:
                self.recorder.record(epoch, [loader.dataset.sample_id(i) for i in next(sample_indices)])
            if self.args.save_every and step < steps and ((epoch - 1) * steps + step) % self.args.save_every == 0:
                self.save_progress(epoch, step, meters)
        return {name: self.runtime.mean(meter.avg) for name, meter in meters.items()}

    def save_progress(self, epoch, step, meters):
        """``checkpoint.pth`` after ``step`` batches of ``epoch`` (``--save_every``): the whole training
        state, the position in the epoch and its loss sums, so ``--resume`` continues exactly here."""
        self.check_weights(f"epoch {epoch}, step {step}")
        rng = self.runtime.gather(capture_rng_state())
        self.experiment.save(training_checkpoint(
            self.raw_model, epoch=epoch - 1, best_psnr=self.best_psnr, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, rng=rng, args=vars(self.args),
            epoch_step=step, epoch_meters={name: meter.state() for name, meter in meters.items()}),
            self.experiment.checkpoint_path)
        self.last_checkpoint = self.experiment.checkpoint_path
        log.debug("saved epoch %d, step %d to %s", epoch, step, self.last_checkpoint)

    def validate(self, loader, epoch):
        """PSNR / SSIM / loss with binarized weights, summed over every rank's shard."""
        shown = []

        def keep_first_batch(index, preds, targets):
            if index == 0:
                shown[:] = [preds[0][:self.args.log_images], targets[0][:self.args.log_images]]

        result = evaluate(self.raw_model, FirstBatches(loader, self.args.max_val_batches), self.runtime.device,
                          criterion=self.criterion, binop=self.binop_in(epoch), autocast_dtype=self.autocast_dtype,
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
            scheduler=self.scheduler, scaler=self.scaler, rng=rng, args=vars(self.args)),
            self.experiment.checkpoint_path)
        self.last_checkpoint = self.experiment.checkpoint_path
        if is_best:
            self.experiment.save(best_model_checkpoint(self.raw_model, epoch=epoch, psnr=result.psnr,
                                                       ssim=result.ssim), self.experiment.best_path)

    def report(self, epoch, lr, train_losses, result, is_best):
        """TensorBoard scalars, a ``results.txt`` line (after a validation) and a log line."""
        self.experiment.scalars({f"train/{name}": value for name, value in train_losses.items()} | {"lr": lr},
                                epoch)
        summary = f"epoch {epoch}  train_loss {train_losses['loss']:.5f}  lr {lr:.3g}"
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
        final_stage = epoch > self.args.stage1_epochs  # a stage-1 model is not the binary model to keep
        is_best = result is not None and final_stage and result.psnr > self.best_psnr
        if result is not None:
            if self.args.lr_schedule == "plateau":
                self.scheduler.step(result.loss)
            if final_stage:
                self.best_psnr = max(self.best_psnr, result.psnr)
        self.save_checkpoints(epoch, result, is_best)
        self.report(epoch, lr, train_losses, result, is_best)

    def fit(self, train_loader, val_loader):
        """Train from ``self.epoch + 1`` to ``--max_epoch``, validating every ``--val_freq`` epochs."""
        if self.epoch >= self.args.max_epoch:
            log.warning("nothing to train: the run is at epoch %d and --max_epoch is %d", self.epoch,
                        self.args.max_epoch)
        for epoch in range(self.epoch + 1, self.args.max_epoch + 1):
            train_losses = self.train_epoch(train_loader, epoch, self.epoch_step, self.epoch_meters)
            self.epoch_step, self.epoch_meters = 0, {}
            self.runtime.broadcast_buffers(self.raw_model)
            validate = epoch % self.args.val_freq == 0 or epoch == self.args.max_epoch
            self.end_epoch(epoch, train_losses, self.validate(val_loader, epoch) if validate else None)
            if self.recorder is not None:
                self.recorder.write(self.raw_model, self.runtime.world_size)
