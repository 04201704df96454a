"""Timestamps of interpolated frames, taken from the input frames' own.

Input frame i shows at ``p_i`` (in the input's time base ``tb``); the interpolated frame k of the
gap after it (k = 0 .. factor - 1, k = 0 being frame i itself) shows at ``p_i + k / factor *
(p_{i+1} - p_i)``: in the time base ``tb / factor`` that is the exact integer ``factor * p_i + k *
(p_{i+1} - p_i)``. So a variable frame rate, or a stream whose nominal fps is wrong, keeps its
timing, and the output stays in sync with the input's audio. Each frame lasts until the next; the
last lasts the input's average frame duration, so the output ends where the input does."""
from collections import deque
from fractions import Fraction


class OutputTimeline:
    """Feed it the input frames' pts in order (``add_input``, then ``end_of_input``); ``next()``
    gives ``(pts, duration)`` of each output frame in order, in ``time_base``. With ``fps`` (a
    chosen output frame rate) frame j is at j / fps instead and lasts 1 / fps. Holds only the pts
    of input frames whose gaps are not yet all timed."""

    def __init__(self, factor, input_time_base, fps=None):
        self.factor = factor
        self.constant_rate = fps is not None
        self.time_base = Fraction(input_time_base) / factor if fps is None else 1 / Fraction(fps)
        self._inputs = deque()  # pts of input frames from the current gap's left frame on
        self._first = self._last = None
        self._count = self._output = 0
        self._ended = False

    def add_input(self, pts):
        if self._first is None:
            self._first = pts
        self._last, self._count = pts, self._count + 1
        if not self.constant_rate:
            self._inputs.append(pts)

    def end_of_input(self):
        self._ended = True

    def next(self):
        """``(pts, duration)`` of the next output frame."""
        j, self._output = self._output, self._output + 1
        if self.constant_rate:
            return j, 1
        gap, k = divmod(j, self.factor)
        if k == 0 and gap > 0:
            self._inputs.popleft()
        left = self._inputs[0]
        if len(self._inputs) > 1:
            step = self._inputs[1] - left
            return self.factor * left + k * step, step
        if not self._ended or k:
            raise RuntimeError(f"output frame {j} needs input frame {gap + 1}, not read yet")
        return self.factor * left, self._average_duration()

    def _average_duration(self):
        """The input's mean frame duration in ``time_base`` units (at least 1)."""
        if self._count < 2:
            return self.factor
        return max(1, round(self.factor * (self._last - self._first) / (self._count - 1)))
