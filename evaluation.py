"""The evaluation loop shared by training validation and ``test.py``: PSNR / SSIM by FLAVR's
protocol (per target frame, then averaged), optional loss, and the model's time per sample."""
import contextlib
import time
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
from tqdm import tqdm

from myutils import psnr_batch, ssim_batch


@dataclass
class EvalResult:
    """Sums over the evaluated frames; ``psnr``, ``ssim``, ``loss`` and ``seconds_per_sample`` are means."""
    psnr_sum: float = 0.0
    ssim_sum: float = 0.0
    frames: int = 0
    loss_sum: float = 0.0
    batches: int = 0
    samples: int = 0
    model_seconds: float = 0.0

    @property
    def psnr(self):
        return self.psnr_sum / max(self.frames, 1)

    @property
    def ssim(self):
        return self.ssim_sum / max(self.frames, 1)

    @property
    def loss(self):
        return self.loss_sum / max(self.batches, 1)

    @property
    def seconds_per_sample(self):
        return self.model_seconds / max(self.samples, 1)

    def all_reduce(self):
        """Sum every field over the ranks of the default process group (no-op without one)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        names = [f.name for f in fields(self)]
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        totals = torch.tensor([float(getattr(self, n)) for n in names], dtype=torch.float64,
                              device=backend_device)
        dist.all_reduce(totals)
        for name, value in zip(names, totals.tolist()):
            setattr(self, name, type(getattr(self, name))(value))
        return self


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model, loader, device, criterion=None, binop=None, autocast_dtype=None,
             progress=True, on_prediction=None, description="eval"):
    """Run ``model`` over ``loader`` (samples ``(inputs, targets)``, lists of ``B x 3 x H x W``).

    ``binop``: run with binarized weights (restored afterwards). ``on_prediction(batch_index, preds,
    targets)`` sees each batch's clamped predictions, e.g. to save them. Returns an ``EvalResult``.
    """
    was_training = model.training
    model.eval()
    result = EvalResult()
    binarized = binop.binarized() if binop is not None else contextlib.nullcontext()
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    with binarized:
        for index, (inputs, targets) in enumerate(tqdm(loader, desc=description, disable=not progress,
                                                       leave=False, dynamic_ncols=True)):
            inputs = [x.to(device, non_blocking=True) for x in inputs]
            targets = [y.to(device, non_blocking=True) for y in targets]
            _synchronize(device)
            start = time.perf_counter()
            with autocast:
                preds = model(inputs)
            _synchronize(device)
            result.model_seconds += time.perf_counter() - start
            preds = [p.float() for p in preds]
            if criterion is not None:
                result.loss_sum += float(criterion(preds, targets)[0])
            for pred, target in zip(preds, targets):  # PSNR on raw outputs; SSIM clamps (FLAVR.md)
                result.psnr_sum += float(psnr_batch(pred, target).sum())
                result.ssim_sum += float(ssim_batch(pred, target).sum())
                result.frames += pred.shape[0]
            result.batches += 1
            result.samples += inputs[0].shape[0]
            if on_prediction is not None:
                on_prediction(index, [p.clamp(0, 1) for p in preds], targets)
    model.train(was_training)
    return result
