"""The sliding-window interpolation engine: a stream of N frames in, ``(N - 1) * factor + 1`` frames
out, every input frame kept bit-exact at every factor-th position.

The gap between frames i and i+1 is filled by the model from the window i-1, i, i+1, i+2 (for a
4-input model; in general i-k+1 .. i+k with k = n_inputs / 2), indices clamped to the sequence, so
the end frames are replicated and the first and last gaps are interpolated too.

Scene cuts (with ``scene_threshold``): a gap whose two frames differ by more than the threshold in
``inference.scenes.scene_difference`` is a cut. Its new frames are copies of the nearer original frame
(those before the gap's middle the left frame, the rest the right one), and no window reaches
across a cut: indices are clamped to the shot as they are to the sequence ends.

Models whose motion prior runs on the host (``HOST_PRIORS``: OpenCV's DIS) get it computed ahead, on
worker threads, for each gap as soon as its two frames have arrived: the prior of the next windows
overlaps the network's forward pass of the current ones (OpenCV releases the GIL), with the same
numbers as the model computing it itself (a quadratic prior, which needs a gap's outer frames too: DIS's two flows
of each pair of frames ahead, each used by its own gap and its two neighbours, then the fusion and the shift as the
window's forward pass begins). On the CPU, OpenCV then runs on one thread of its own while
the engine interpolates (its setting is restored after). For a model whose U-Net runs on downscaled frames
(``network_scale`` > 1), each frame is resized to the U-Net's size once (``model.network_frame``), not once per
window it is in (except with an aligned prior, whose network inputs are warped first).

Frames are read, interpolated and yielded as they come: the engine holds at most ``batch +
n_inputs - 1`` input frames at once in its windows (``max_buffered`` records the most it held; a quadratic prior
computed ahead reads one more), whatever the length of the stream."""
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from model.motion_prior import (ALIGNED_PRIORS, DIS_PRESET, HOST_PRIORS, QUADRATIC_PRIORS,
                                host_half_motion, quadratic_motion_from_flows)
from myutils import FRAME_MULTIPLE, autocast_or_nothing, check_pad_mode, pad_to_multiple

from .frame_io import InferenceInputError, rgb_to_tensor, tensor_to_rgb
from .scenes import scene_difference


_OPENCV_BORDERS = {"replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}  # pad_to_multiple's modes


def _batched(tensors):
    """``1 x ...`` tensors -> one ``len(tensors) x ...`` batch (the tensor itself when it is alone: no copy)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


@dataclass
class _Frame:
    index: int
    rgb: object     # H x W x 3 uint8 array, yielded unchanged
    tensor: object  # 1 x 3 x H' x W' float in [0, 1] on the device, padded to multiples of 8
    cut_before: bool = False  # a scene cut lies between the previous frame and this one
    motion_before: object = None  # Future of the prior's motion (1 x 2 or 4 x H' x W') from the previous frame
    flows_before: object = None   # quadratic priors: Future of DIS's flows (forward, backward) from the previous frame
    grey: object = None           # the padded frame's grey image (H' x W' uint8) for a host prior (grey_images)
    network_frame: object = None  # the padded frame at the U-Net's size (model.network_frame), made once


class SlidingWindowInterpolator:
    """Interpolates a frame stream with ``model`` (eval mode, on ``device``) by its own factor
    (``model.config["n_outputs"] + 1``). ``batch`` windows go through each forward pass; ``half``
    runs the model under float16 autocast (CUDA only); frames are padded to multiples of 8 with
    ``pad_mode`` and the outputs cropped back. ``scene_threshold`` (None: off) detects scene cuts;
    ``cuts`` counts those found by the last ``interpolate``. ``prior_ahead`` computes a host motion prior
    ahead on ``prior_workers`` threads (the same frames; False: the model computes it in its forward pass);
    default one on the CPU, whose cores the network uses, and up to ``batch`` gaps at once beside a GPU."""

    def __init__(self, model, device, batch=1, half=False, pad_mode="replicate", scene_threshold=None,
                 prior_ahead=True, prior_workers=None):
        if batch < 1:
            raise ValueError(f"batch must be at least 1 window, got {batch}")
        if half and torch.device(device).type != "cuda":
            raise ValueError("half precision needs CUDA: drop --half or run on a GPU")
        self.model, self.device, self.batch, self.half = model, torch.device(device), batch, half
        self.pad_mode = check_pad_mode(pad_mode)
        self.n_inputs = model.config["n_inputs"]
        self.factor = model.config["n_outputs"] + 1
        self.max_buffered = self.cuts = 0
        self.scene_threshold = scene_threshold
        prior = getattr(model, "motion_prior", "none")
        self.prior_ahead = prior_ahead and prior in HOST_PRIORS
        self.quadratic = prior in QUADRATIC_PRIORS  # ahead: each pair's flows, for its gap and its neighbours
        self.reuse_network_frames = (getattr(model, "network_scale", 1) > 1  # our models that resize, and do not
                                     and getattr(model, "motion_prior", "none") not in ALIGNED_PRIORS)  # warp first
        if prior_workers is None:
            prior_workers = 1 if self.device.type == "cpu" else max(1, min(batch, os.cpu_count() or 1))
        self.prior_workers = prior_workers

    def _is_cut(self, left, right):
        return self.scene_threshold is not None and scene_difference(left, right) > self.scene_threshold

    def _window_indices(self, buffer, gap, last_index):
        """Input frame indices for the gap after frame ``gap``: its window clamped to the shot of
        the gap within [0, last_index] (``buffer`` holds every frame of the window)."""
        half_window, first = self.n_inputs // 2, buffer[0].index
        low, high = gap, gap + 1
        while low > max(gap - half_window + 1, 0) and not buffer[low - first].cut_before:
            low -= 1
        while high < min(gap + half_window, last_index) and not buffer[high + 1 - first].cut_before:
            high += 1
        return [min(max(gap + offset, low), high) for offset in range(1 - half_window, half_window + 1)]

    @torch.no_grad()
    def _predict(self, windows):
        """Run the model on windows (lists of _Frame) -> per window, ``factor - 1`` uint8 RGB frames."""
        inputs = [_batched([window[p].tensor for window in windows]) for p in range(self.n_inputs)]
        middle = windows[0][self.n_inputs // 2]  # the frame after each window's gap
        motion = _batched([window[self.n_inputs // 2].motion_before.result() for window in windows]).to(
            self.device) if middle.motion_before is not None else None
        given = {} if motion is None else {"motion": motion}
        with autocast_or_nothing("cuda", torch.float16 if self.half else None):
            if self.reuse_network_frames:
                given["network_frames"] = [_batched([self._network_frame(window[p]) for window in windows])
                                           for p in range(self.n_inputs)]
            outputs = self.model(inputs, **given)
        height, width = windows[0][0].rgb.shape[:2]
        frames = [tensor_to_rgb(out[..., :height, :width]) for out in outputs]  # [output][window]
        return [[frames[o][w] for o in range(len(outputs))] for w in range(len(windows))]

    def _cut_frames(self, left, right):
        """New frames for a cut: frame k of ``factor`` shows ``left`` before the middle, then ``right``."""
        return [left if 2 * k < self.factor else right for k in range(1, self.factor)]

    def _network_frame(self, frame):
        """``frame``'s tensor at the U-Net's size, made once: a frame is in ``n_inputs`` windows."""
        if frame.network_frame is None:
            frame.network_frame = self.model.network_frame(frame.tensor)
        return frame.network_frame

    def _grey(self, frame):
        """``frame``'s padded grey image for the host prior, made once (a frame ends one gap and starts the next): the
        values ``grey_images`` makes of its padded tensor (8-bit levels come back exactly), 10x faster from ``rgb``."""
        if frame.grey is None:
            height, width = frame.rgb.shape[:2]
            padded = cv2.copyMakeBorder(np.ascontiguousarray(frame.rgb), 0, (-height) % FRAME_MULTIPLE, 0,
                                        (-width) % FRAME_MULTIPLE, _OPENCV_BORDERS[self.pad_mode])
            frame.grey = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY)
        return frame.grey

    def _host_motion(self, before, after):
        """The model's host prior between two consecutive _Frames (``1 x 2 x H' x W'`` px, on the CPU)."""
        return host_half_motion(self.model.motion_prior, [self._grey(before)], [self._grey(after)])

    def _pair_flows(self, before, after):
        """DIS's flows (``DIS_PRESET``) both ways between two consecutive _Frames: (forward, backward) H' x W' x 2."""
        dis = cv2.DISOpticalFlow_create(DIS_PRESET)
        grey_a, grey_b = self._grey(before), self._grey(after)
        return dis.calc(grey_a, grey_b, None), dis.calc(grey_b, grey_a, None)

    def _quadratic_motion(self, outer_before, before, after, outer_after):
        """A quadratic prior's motion for the gap between _Frames ``before`` and ``after`` (``1 x 4 x H' x W'`` px, on
        the CPU), as the model finds it from their window (``quadratic_motion``; an outer frame is its middle
        neighbour where the window repeats it: a clip's end, a cut), from the pairs' flows computed before: the
        gap's, the previous pair's backward flow (to the outer frame before) and the next pair's forward flow."""
        forward, backward = after.flows_before.result()
        same_before = outer_before is before or np.array_equal(self._grey(outer_before), self._grey(before))
        same_after = outer_after is after or np.array_equal(self._grey(outer_after), self._grey(after))
        to_outer_before = None if same_before else before.flows_before.result()[1]
        to_outer_after = None if same_after else outer_after.flows_before.result()[0]
        return quadratic_motion_from_flows(self._grey(before), self._grey(after), forward, backward, to_outer_before,
                                           to_outer_after)

    def _to_frame(self, index, rgb):
        padded, _ = pad_to_multiple([rgb_to_tensor(rgb, self.device)], FRAME_MULTIPLE, self.pad_mode)
        return _Frame(index, rgb, padded[0])

    def interpolate(self, frames):
        """Yield the interpolated sequence of ``frames`` (an iterable of ``H x W x 3`` uint8 RGB arrays):
        frame 0, the ``factor - 1`` new frames after it, frame 1, ..., the last frame.
        InferenceInputError if the stream has fewer than 2 frames."""
        self.max_buffered = self.cuts = 0
        prior_worker = ThreadPoolExecutor(self.prior_workers, "motion-prior") if self.prior_ahead else None
        opencv_threads = cv2.getNumThreads()
        if prior_worker is not None and self.device.type == "cpu":  # the prior has its thread beside the network's:
            cv2.setNumThreads(1)  # OpenCV's own threads only competed with torch's (3% of interpolate.py's time)
        try:
            yield from self._interpolate(frames, prior_worker)
        finally:
            if prior_worker is not None:  # stopped early: the queued flows are not needed
                prior_worker.shutdown(wait=True, cancel_futures=True)
            cv2.setNumThreads(opencv_threads)

    def _interpolate(self, frames, prior_worker):
        buffer = deque()   # consecutive frames, oldest first
        pending = []       # gaps whose windows wait for the next forward pass
        next_gap = 0
        half_window = self.n_inputs // 2
        for frame in self._frames_ahead(frames, prior_worker):
            index = frame.index
            buffer.append(frame)
            self.max_buffered = max(self.max_buffered, len(buffer))
            while next_gap + half_window <= index:
                pending.append(next_gap)
                next_gap += 1
                if len(pending) == self.batch:
                    yield from self._flush(buffer, pending, index)
        last_index = buffer[-1].index if buffer else -1
        if last_index < 1:
            raise InferenceInputError(f"the input has {last_index + 1} frame(s): at least 2 are needed")
        pending.extend(range(next_gap, last_index))
        for start in range(0, len(pending), self.batch):
            yield from self._flush(buffer, pending[start:start + self.batch], last_index)
        yield buffer[-1].rgb

    def _frames_ahead(self, frames, prior_worker):
        """``frames`` as _Frames, each gap's scene cut marked and its host prior submitted to ``prior_worker`` as
        frames are read: a linear prior's motion as the gap's second frame arrives; a quadratic prior's DIS flows
        then, and its motion once the frame after the gap's has arrived too (the window's last), each frame read one
        before the window loop takes it, so that the prior's thread works while the network does."""
        quadratic = prior_worker is not None and self.quadratic
        read = deque(maxlen=4)  # the last frames read
        for index, rgb in enumerate(frames):
            frame = self._to_frame(index, rgb)
            frame.cut_before = bool(read) and self._is_cut(read[-1].rgb, rgb)
            self.cuts += frame.cut_before
            if prior_worker is not None and read and not frame.cut_before:
                if quadratic:
                    frame.flows_before = prior_worker.submit(self._pair_flows, read[-1], frame)
                else:
                    frame.motion_before = prior_worker.submit(self._host_motion, read[-1], frame)
            read.append(frame)
            if not quadratic:
                yield frame
                continue
            if len(read) >= 3:  # the gap before the previous frame has its whole window now
                self._submit_quadratic(prior_worker, read[-4] if len(read) == 4 else read[-3], read[-3], read[-2],
                                       read[-1])
            if len(read) >= 2:
                yield read[-2]
        if quadratic and read:
            if len(read) >= 2:  # the last gap: no frame after it
                self._submit_quadratic(prior_worker, read[-3] if len(read) >= 3 else read[-2], read[-2], read[-1],
                                       read[-1])
            yield read[-1]

    def _submit_quadratic(self, prior_worker, outer_before, before, after, outer_after):
        """Submit the quadratic prior's motion for the gap between ``before`` and ``after`` into ``after``'s
        ``motion_before``, its window clamped as ``_window_indices`` clamps it (at cuts, and to the middle frames for
        fewer than 4 inputs); nothing for a gap across a cut."""
        if after.cut_before:
            return
        if before.cut_before or self.n_inputs < 4:
            outer_before = before
        if outer_after.cut_before or self.n_inputs < 4:
            outer_after = after
        after.motion_before = prior_worker.submit(self._quadratic_motion, outer_before, before, after, outer_after)

    def _flush(self, buffer, gaps, last_index):
        """Interpolate ``gaps``, yield each gap's left frame and new frames, then forget the frames
        no later window needs (``gaps`` is emptied). Cuts get copies, not the model's frames."""
        first = buffer[0].index
        cuts = [buffer[gap + 1 - first].cut_before for gap in gaps]
        windows = [[buffer[i - first] for i in self._window_indices(buffer, gap, last_index)]
                   for gap, cut in zip(gaps, cuts) if not cut]
        predicted = iter(self._predict(windows) if windows else [])
        for gap, cut in zip(gaps, cuts):
            left, right = buffer[gap - first].rgb, buffer[gap + 1 - first].rgb
            yield left
            yield from self._cut_frames(left, right) if cut else next(predicted)
        oldest_needed = gaps[-1] + 1 - (self.n_inputs // 2 - 1)
        while buffer and buffer[0].index < oldest_needed:
            buffer.popleft()
        gaps.clear()
