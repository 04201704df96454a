"""Copy an input's audio, subtitle and data streams into an output video unchanged: the packets are
remuxed, never re-encoded, interleaved with the new video by time."""
import contextlib
import io
import logging

import av

from .frame_io import InferenceInputError
from .readers import describe_stream, open_container

log = logging.getLogger(__name__)

COPIED_TYPES = ("audio", "subtitle", "data")


def container_accepts(format_name, stream):
    """Whether FFmpeg's ``format_name`` muxer takes a copy of ``stream`` (tried on an empty file)."""
    trial = av.open(io.BytesIO(), "w", format=format_name)
    try:
        trial.add_stream_from_template(stream)
        trial.start_encoding()
        return True
    except (av.FFmpegError, ValueError):
        return False
    finally:
        with contextlib.suppress(av.FFmpegError, ValueError):
            trial.close()


class StreamCopier:
    """The streams of the file ``path`` other than its video stream ``video_index``: ``add_to``
    adds those the output's container can hold (one log line names those it cannot), then
    ``mux_until`` and ``mux_rest`` copy their packets as the video is written."""

    def __init__(self, path, video_index):
        self.path, self.video_index = path, video_index
        self._input = self._packets = self._pending = None
        self._outputs = {}  # input stream index -> output stream

    def add_to(self, output):
        """Add the copyable streams to ``output`` before its first packet; log what is copied and
        what is dropped."""
        self._input = open_container(self.path)
        copied, dropped = [], []
        for stream in self._input.streams:
            if stream.index == self.video_index:
                continue
            if stream.type in COPIED_TYPES and container_accepts(output.format.name, stream):
                self._outputs[stream.index] = output.add_stream_from_template(stream)
                copied.append(describe_stream(stream))
            else:
                dropped.append(describe_stream(stream))
        if copied:
            log.info("copying %s of %s unchanged", ", ".join(copied), self.path)
        if dropped:
            hint = "" if output.format.name == "matroska" else " (an .mkv output keeps most streams)"
            log.info("dropped %s of %s: the %s output cannot hold a copy%s", ", ".join(dropped), self.path,
                     output.format.name, hint)
        streams = [self._input.streams[index] for index in self._outputs]
        self._packets = self._input.demux(*streams) if streams else iter(())

    def mux_until(self, output, seconds):
        """Mux the copied packets that start before ``seconds`` (None: all that are left)."""
        while True:
            if self._pending is None:
                self._pending = self._next_packet()
                if self._pending is None:
                    return
            packet = self._pending
            start = packet.dts if packet.dts is not None else packet.pts
            if seconds is not None and start is not None and start * packet.time_base > seconds:
                return
            packet.stream = self._outputs[packet.stream.index]
            output.mux(packet)
            self._pending = None

    def _next_packet(self):
        """The next packet of a copied stream, skipping the empty one that ends each; None at the end."""
        try:
            packet = next(self._packets, None)
            while packet is not None and not packet.size:
                packet = next(self._packets, None)
            return packet
        except av.FFmpegError as error:
            raise InferenceInputError(f"cannot copy the audio/subtitles of {self.path} ({error.strerror or error}): "
                                      "the file is damaged") from None

    def mux_rest(self, output):
        self.mux_until(output, None)

    def close(self):
        """Close the input (safe to call twice)."""
        if self._input is not None:
            self._input.close()
            self._input = None
