"""Decode, interpolate and encode at the same time: a reader thread decodes into a bounded queue,
the calling thread runs the model, a writer thread encodes from a bounded queue. So the model does
not wait for I/O, and memory stays bounded by the queues and the engine's window.

An exception in any stage stops the others and is raised again by ``run_pipeline`` in the calling
thread (the same exception object, so an InferenceInputError stays one line); the caller's writer
context then discards the unfinished output."""
import queue
import threading
import time
from dataclasses import dataclass

QUEUE_FRAMES = 8     # decoded frames waiting for the model (interpolated ones: this x factor)
POLL_SECONDS = 0.1   # how often a blocked stage checks whether another one failed
_END = object()


@dataclass
class StageTimes:
    """Seconds each stage was busy (decode: reading and converting frames to RGB; model: the
    engine with its padding and scene detection; encode: conversion, encoding, muxing) and the
    wall time of the whole run."""
    decode: float = 0.0
    model: float = 0.0
    encode: float = 0.0
    wall: float = 0.0


class _Clock:
    """Accumulated seconds: ``with clock:`` adds the time spent in the block."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()

    def __exit__(self, *exc_info):
        self.seconds += time.perf_counter() - self._start


def _timed(iterable, clock):
    """Yield from ``iterable``, adding the time spent getting each item to ``clock``."""
    iterator = iter(iterable)
    while True:
        with clock:
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


class _Stopped(Exception):
    """Raised in a stage when another one failed."""


class _Pipeline:

    def __init__(self, source, engine, writer, timeline, on_frame):
        self.source, self.engine, self.writer, self.timeline = source, engine, writer, timeline
        self.on_frame = on_frame
        self.clocks = {stage: _Clock() for stage in ("decode", "inputs", "engine", "encode")}
        self.failure = None
        self.stop = threading.Event()

    def decoded(self):
        return _timed(self.source.timed_frames(), self.clocks["decode"])

    def interpolated(self, decoded):
        """``(rgb, pts, duration)`` of each output frame from ``(rgb, pts)`` input frames."""
        def inputs():
            for rgb, pts in decoded:
                self.timeline.add_input(pts)
                yield rgb
            self.timeline.end_of_input()

        frames = self.engine.interpolate(_timed(inputs(), self.clocks["inputs"]))
        for rgb in _timed(frames, self.clocks["engine"]):
            self.on_frame()
            yield (rgb, *self.timeline.next())

    def write(self, frames):
        """Encode ``frames`` and close the writer."""
        for rgb, pts, duration in frames:
            with self.clocks["encode"]:
                self.writer.write(rgb, pts, duration)
        with self.clocks["encode"]:
            self.writer.close()

    def put(self, channel, item):
        while not self.stop.is_set():
            try:
                return channel.put(item, timeout=POLL_SECONDS)
            except queue.Full:
                continue
        raise _Stopped

    def received(self, channel):
        """The items put into ``channel``, up to _END."""
        while True:
            try:
                item = channel.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped from None
                continue
            if item is _END:
                return
            yield item

    def thread(self, work):
        """A thread running ``work()``: its exception is kept for the caller and stops the others."""
        def run():
            try:
                work()
            except _Stopped:
                pass
            except Exception as error:
                self.failure = self.failure or error
                self.stop.set()
        return threading.Thread(target=run, daemon=True)

    def feed(self, channel):
        for item in self.decoded():
            self.put(channel, item)
        self.put(channel, _END)

    def run_threaded(self):
        decoded = queue.Queue(QUEUE_FRAMES)
        interpolated = queue.Queue(QUEUE_FRAMES * self.engine.factor)
        reader = self.thread(lambda: self.feed(decoded))
        writer = self.thread(lambda: self.write(self.received(interpolated)))
        reader.start()
        writer.start()
        try:
            for item in self.interpolated(self.received(decoded)):
                self.put(interpolated, item)
            self.put(interpolated, _END)
            writer.join()
        except _Stopped:
            pass
        finally:
            self.stop.set()
            reader.join()
            writer.join()
        if self.failure is not None:
            raise self.failure

    def times(self, wall):
        c = {stage: clock.seconds for stage, clock in self.clocks.items()}
        return StageTimes(c["decode"], c["engine"] - c["inputs"], c["encode"], wall)


def run_pipeline(source, engine, writer, timeline, threaded=True, on_frame=lambda: None):
    """Interpolate ``source`` (a FrameSource) with ``engine`` (a SlidingWindowInterpolator) into
    ``writer``, closing it; ``timeline`` (an OutputTimeline) times the output frames from the
    source's pts. ``threaded`` False runs the three stages in turn in this thread. ``on_frame()``
    is called for each interpolated frame. Returns StageTimes."""
    pipeline = _Pipeline(source, engine, writer, timeline, on_frame)
    start = time.perf_counter()
    if threaded:
        pipeline.run_threaded()
    else:
        pipeline.write(pipeline.interpolated(pipeline.decoded()))
    return pipeline.times(time.perf_counter() - start)
