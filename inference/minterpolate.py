"""FFmpeg's motion-compensated frame interpolation (the ``minterpolate`` filter, in the FFmpeg that
PyAV's wheels bundle): the tool a user would pick on a CPU instead of a network, scored beside ours.

Settings: ``MINTERPOLATE_OPTIONS`` (motion-compensated interpolation, overlapped block motion
compensation, bidirectional motion estimation, variable-size blocks: FFmpeg's best quality mode).
Frames go in as 8-bit RGB, are converted to yuv444p (no chroma subsampling; minterpolate works on
YUV planes) and come back as 8-bit RGB. The stream is flushed at its end, so every gap gets its frames."""
from fractions import Fraction

import av
import numpy as np

MINTERPOLATE_OPTIONS = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"
TAIL_REPEATS = 1  # copies of the last frame pushed at the end: enough, and more give the same frames


class Minterpolate:
    """Restores the ``factor - 1`` frames of every gap between consecutive pushed frames.

    ``push(rgb)`` takes the next kept ``H x W x 3`` uint8 RGB frame and returns the gaps completed so
    far as ``(gap, frames)`` pairs (gap g lies between the g-th and (g+1)-th pushed frames, ``frames``
    its ``factor - 1`` uint8 RGB frames in time order); ``finish()`` flushes the filter and returns the
    rest. The kept frames go in at 1 frame per second, and the filter asked for ``factor`` per second."""

    def __init__(self, factor, height, width, options=MINTERPOLATE_OPTIONS):
        self.factor, self.pushed, self.frames = factor, 0, {}
        self.graph = av.filter.Graph()
        source = self.graph.add("buffer", f"video_size={width}x{height}:pix_fmt=rgb24:time_base=1/{factor}"
                                          ":frame_rate=1/1:pixel_aspect=1/1")
        chain = [source, self.graph.add("format", "yuv444p"),
                 self.graph.add("minterpolate", f"fps={factor}:{options}"),
                 self.graph.add("format", "rgb24"), self.graph.add("buffersink")]
        for upstream, downstream in zip(chain, chain[1:]):
            upstream.link_to(downstream)
        self.graph.configure()

    def push(self, rgb):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = self.pushed * self.factor, Fraction(1, self.factor)
        self.graph.vpush(frame)
        self.pushed, self.last = self.pushed + 1, rgb
        return self._pull()

    def finish(self):
        """The gaps still held. minterpolate outputs a frame only once it has the next input frame
        (and drops what it holds at the end of a stream), so the last kept frame is pushed again
        ``TAIL_REPEATS`` times (as the sliding window replicates it) and what falls after it is dropped."""
        if not self.pushed:
            return []
        gaps, done = self.pushed - 1, []
        for _ in range(TAIL_REPEATS):
            done += self.push(self.last)
        self.graph.vpush(None)
        done += self._pull()
        return [(gap, frames) for gap, frames in done if gap < gaps]

    def _pull(self):
        done = []
        while True:
            try:
                frame = self.graph.vpull()
            except (av.BlockingIOError, av.EOFError):
                return done
            index = round(frame.pts * frame.time_base * self.factor)
            gap, k = divmod(index, self.factor)
            if k:
                self.frames.setdefault(gap, []).append(frame.to_ndarray(format="rgb24"))
            if k == self.factor - 1 and gap in self.frames:
                done.append((gap, self.frames.pop(gap)))
