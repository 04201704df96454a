"""evaluate_video / test.py --dataset video on tiny real clips written here: a smooth random texture
panning 2 px per frame (PNG frame folders and an mp4v video), and a splice of two such scenes."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from evaluation import (DEFAULT_SCENE_THRESHOLD, blend_frames, evaluate_video, evaluate_videos,
                        find_video_clips, scene_difference)
from fixtures import read_png, run_repo_script, write_png, write_random_checkpoint
from inference import InferenceInputError, SlidingWindowInterpolator
from inference.minterpolate import Minterpolate
from model_loader import load_model
from myutils import ssim_batch

SIZE = (48, 64)  # height, width


class BlendModel(nn.Module):
    """An interpolator of factor f that returns, in float, the blends at times k / f of its two
    middle inputs: the average baseline before 8-bit rounding."""

    def __init__(self, factor=2):
        super().__init__()
        self.config = {"n_inputs": 4, "n_outputs": factor - 1}

    def forward(self, frames):
        factor = self.config["n_outputs"] + 1
        return [((factor - k) * frames[1] + k * frames[2]) / factor for k in range(1, factor)]


def panning_frames(n, seed=0, speed=2, cell=16):
    """``n`` frames ``H x W x 3`` uint8 of a smooth random texture (features ~``cell`` px) panning
    left by ``speed`` px per frame."""
    height, width = SIZE
    coarse = np.random.default_rng(seed).integers(0, 256, (height // cell + 2, (width + speed * n) // cell + 2, 3))
    canvas = cv2.resize(coarse.astype(np.float32), (coarse.shape[1] * cell, coarse.shape[0] * cell),
                        interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(canvas, 0, 255).round().astype(np.uint8)
    return [np.ascontiguousarray(canvas[:height, speed * i:speed * i + width]) for i in range(n)]


def write_folder(folder, frames):
    for i, rgb in enumerate(frames):
        write_png(os.path.join(str(folder), f"{i:04d}.png"), rgb)
    return str(folder)


def write_mp4(path, frames, fps=25.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (SIZE[1], SIZE[0]))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def decoded_frames(path):
    """Frames of a clip on disk, decoded here with OpenCV (RGB uint8)."""
    if os.path.isdir(path):
        return [read_png(os.path.join(path, name)) for name in sorted(os.listdir(path))]
    capture, frames = cv2.VideoCapture(path), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def numpy_psnr(pred, target):
    mse = np.mean((pred.astype(np.float64) / 255 - target.astype(np.float64) / 255) ** 2)
    return -10 * np.log10(mse + 1e-8)


def numpy_ssim(pred, target):
    as_tensor = [torch.from_numpy(x).permute(2, 0, 1).float() / 255 for x in (pred, target)]
    return float(ssim_batch(*as_tensor)[0])


def reference_baselines(frames, factor):
    """Mean PSNR and SSIM of repeat and average (rounded half up) over every complete gap, in numpy."""
    scores = {"repeat": [], "average": []}
    for left in range(0, len(frames) - factor, factor):
        a, b = frames[left].astype(np.float64), frames[left + factor].astype(np.float64)
        for k in range(1, factor):
            target = frames[left + k]
            average = np.floor(((factor - k) * a + k * b) / factor + 0.5).astype(np.uint8)
            scores["repeat"].append((numpy_psnr(frames[left], target), numpy_ssim(frames[left], target)))
            scores["average"].append((numpy_psnr(average, target), numpy_ssim(average, target)))
    return {name: np.mean(pairs, axis=0) for name, pairs in scores.items()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A PNG folder of 9 panning frames and an mp4v video of 10 (frames 8 and 9 trail at 3x / 2x)."""
    root = tmp_path_factory.mktemp("clips")
    return {"folder": write_folder(root / "pan_png", panning_frames(9)),
            "video": write_mp4(root / "pan.mp4", panning_frames(10, seed=3))}


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("kind", ["folder", "video"])
def test_baselines_match_numpy(clips, kind, factor):
    frames = decoded_frames(clips[kind])
    result = evaluate_video(BlendModel(factor), clips[kind], "cpu", progress=False)
    gaps = (len(frames) - 1) // factor
    assert result.frames_read == len(frames) and result.cuts_skipped == 0
    assert result.trailing_frames == len(frames) - 1 - gaps * factor
    assert result.model.frames == result.repeat.frames == result.average.frames == gaps * (factor - 1)
    reference = reference_baselines(frames, factor)
    for name in ("repeat", "average"):
        assert getattr(result, name).psnr == pytest.approx(reference[name][0], abs=1e-4)
        assert getattr(result, name).ssim == pytest.approx(reference[name][1], abs=1e-5)
    assert result.average.psnr > result.repeat.psnr  # smooth motion: blending beats repeating


def test_max_frames_uses_the_first_frames_only(clips):
    full = decoded_frames(clips["folder"])
    result = evaluate_video(BlendModel(), clips["folder"], "cpu", max_frames=5, progress=False)
    assert result.frames_read == 5 and result.model.frames == 2 and result.trailing_frames == 0
    assert result.repeat.psnr == pytest.approx(reference_baselines(full[:5], 2)["repeat"][0], abs=1e-4)


def test_blend_model_scores_the_average_baseline(tmp_path, clips):
    """With even pixel values the 2x float blend needs no rounding: the model IS the average baseline;
    at 3x no blend falls on a half, so any frames give the same 8-bit frames."""
    even = write_folder(tmp_path / "even", [rgb & 0xFE for rgb in panning_frames(7)])
    result = evaluate_video(BlendModel(), even, "cpu", progress=False)
    assert (result.model.psnr, result.model.ssim) == (result.average.psnr, result.average.ssim)
    assert result.margin == 0
    result = evaluate_video(BlendModel(3), clips["folder"], "cpu", progress=False)
    assert (result.model.psnr, result.model.ssim) == (result.average.psnr, result.average.ssim)


def test_blend_model_rounds_halves_to_even():
    """At 2x with odd sums the interpolator's 8-bit output (torch.round: halves to even) and the
    average baseline (halves up) differ by one level, never more, and only there."""
    frames = panning_frames(4)
    outputs = list(SlidingWindowInterpolator(BlendModel(), "cpu").interpolate(frames))
    for gap in range(3):
        a, b = frames[gap].astype(int), frames[gap + 1].astype(int)
        difference = outputs[2 * gap + 1].astype(int) - blend_frames(frames[gap], frames[gap + 1], 2)[0]
        assert np.abs(difference).max() == 1 and (difference[(a + b) % 2 == 0] == 0).all()


def test_scene_cut_is_skipped_and_counted(tmp_path):
    """Frames 0-5 from one scene, 6-11 from another: at 2x the gap 4 -> 6 straddles the cut."""
    scene_a, scene_b = panning_frames(12, seed=1), panning_frames(12, seed=2)
    spliced = scene_a[:6] + scene_b[6:]
    assert scene_difference(spliced[4], spliced[6]) > DEFAULT_SCENE_THRESHOLD
    assert max(scene_difference(a, b) for a, b in zip(scene_a, scene_a[2:])) < DEFAULT_SCENE_THRESHOLD / 2
    folder = write_folder(tmp_path / "spliced", spliced)
    result = evaluate_video(BlendModel(), folder, "cpu", progress=False)
    assert result.cuts_skipped == 1
    assert result.model.frames == result.repeat.frames == result.average.frames == 4
    per_scene = [reference_baselines(scene, 2)["repeat"][0] for scene in (scene_a[:6], scene_b[6:])]
    assert result.repeat.psnr == pytest.approx(sum(per_scene) / 2, abs=1e-4)  # two gaps in each scene

    everything = evaluate_video(BlendModel(), folder, "cpu", scene_threshold=None, progress=False)
    assert everything.cuts_skipped == 0 and everything.model.frames == 5
    assert everything.average.psnr < result.average.psnr  # blending across the cut is the worst gap


def test_each_scored_gap_is_recorded_with_its_scores_and_cuts_are_not(tmp_path):
    """The spliced clip at 2x: gaps 0-2, 2-4, 6-8 and 8-10 are scored, 4-6 is the cut."""
    scene_a, scene_b = panning_frames(12, seed=1), panning_frames(12, seed=2)
    spliced = scene_a[:6] + scene_b[6:]
    folder = write_folder(tmp_path / "spliced", spliced)
    result = evaluate_video(BlendModel(), folder, "cpu", progress=False)
    assert [(g["clip"], g["frame"]) for g in result.gaps] == [("spliced", 0), ("spliced", 2), ("spliced", 6),
                                                             ("spliced", 8)]
    for gap in result.gaps:
        left, dropped, right = spliced[gap["frame"]:gap["frame"] + 3]
        assert gap["repeat"] == pytest.approx(numpy_psnr(left, dropped), abs=1e-4)
        assert gap["average"] == pytest.approx(numpy_psnr(blend_frames(left, right, 2)[0], dropped), abs=1e-4)
        assert gap["scene_difference"] == pytest.approx(scene_difference(left, right))
        assert abs(gap["model"] - gap["average"]) < 0.5  # the float blend, rounded halves to even
    for name in ("model", "average", "repeat"):  # 2x: one frame per gap, so the clip's mean is the gaps' mean
        assert getattr(result, name).psnr == pytest.approx(np.mean([g[name] for g in result.gaps]), abs=1e-9)


def test_evaluate_videos_overall_is_over_all_scored_frames(clips):
    paths = find_video_clips(os.path.dirname(clips["folder"]))
    assert [os.path.basename(p) for p in paths] == ["pan.mp4", "pan_png"]
    results = evaluate_videos(BlendModel(), paths, "cpu", progress=False)
    overall = results.overall
    assert overall.model.frames == sum(c.model.frames for c in results.clips) == 8
    expected = sum(c.repeat.psnr * c.repeat.frames for c in results.clips) / overall.repeat.frames
    assert overall.repeat.psnr == pytest.approx(expected)
    assert overall.gaps == results.clips[0].gaps + results.clips[1].gaps
    assert [g["clip"] for g in overall.gaps] == ["pan.mp4"] * 4 + ["pan_png"] * 4


def test_bad_clips_raise_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InferenceInputError, match="no videos or frame folders"):
        find_video_clips(str(tmp_path / "empty"))
    (tmp_path / "broken.mp4").write_text("not a video")
    with pytest.raises(InferenceInputError, match="broken.mp4"):
        find_video_clips(str(tmp_path / "broken.mp4"))
    short = write_folder(tmp_path / "short", panning_frames(2))
    with pytest.raises(InferenceInputError, match="at least 3"):
        evaluate_video(BlendModel(), short, "cpu", progress=False)


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("kind", ["folder", "video"])
def test_minterpolate_scores_every_gap_and_beats_blending_on_a_pan(clips, kind, factor):
    result = evaluate_video(BlendModel(factor), clips[kind], "cpu", progress=False)
    assert result.minterpolate.frames == result.model.frames == result.average.frames > 0
    assert all("minterpolate" in gap for gap in result.gaps) and len(result.gaps) == result.model.frames // (factor - 1)
    minterpolate = result.baselines()["minterpolate"]
    assert minterpolate["psnr"] > result.average.psnr  # motion compensation beats blending on a pan
    assert minterpolate["seconds_per_frame"] > 0 and result.minterpolate_made == result.minterpolate.frames
    without = evaluate_video(BlendModel(factor), clips[kind], "cpu", progress=False, minterpolate=False)
    assert "minterpolate" not in without.baselines() and "minterpolate" not in without.gaps[0]
    assert (without.model.psnr, without.average.psnr) == (result.model.psnr, result.average.psnr)


@pytest.mark.parametrize("factor", [2, 4])
def test_minterpolate_gives_every_gap_its_frames_up_to_the_end_of_the_stream(factor):
    """FFmpeg's filter holds back its last frames at the end of a stream: ``finish`` still returns
    them, and pushing the last frame again first changes nothing."""
    kept = panning_frames(6)
    runs = []
    for extra in (0, 1):
        filter_ = Minterpolate(factor, *SIZE)
        gaps = [gap for frame in kept + kept[-1:] * extra for gap in filter_.push(frame)] + filter_.finish()
        runs.append(dict(gaps))
    assert sorted(runs[0]) == list(range(len(kept) - 1))
    assert all(len(frames) == factor - 1 and frames[0].shape == (*SIZE, 3) for frames in runs[0].values())
    assert all(np.array_equal(a, b) for gap in runs[0] for a, b in zip(runs[0][gap], runs[1][gap]))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("models") / "tiny_2x.pth", arch="binary", n_outputs=1,
                                   base_channels=8)


def test_test_script_video_end_to_end(tmp_path, clips, tiny_checkpoint):
    root = os.path.dirname(clips["folder"])
    out = tmp_path / "out.json"
    run = run_repo_script("test.py", "--dataset", "video", "--data_root", root, "--load_from", tiny_checkpoint,
                          "--results_json", str(out), "--max_frames", "7")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 3 and "overall" in run.stdout.splitlines()[-1]
    report = json.loads(out.read_text())
    assert set(report) == {"dataset", "model", "model_description", "protocol", "overall", "clips"}
    assert report["protocol"]["factor"] == 2 and report["protocol"]["max_frames"] == 7
    assert report["protocol"]["scene_threshold"] == DEFAULT_SCENE_THRESHOLD
    overall = report["overall"]
    assert set(overall) == {"psnr", "ssim", "frames", "margin_over_average_db", "baselines", "cuts_skipped",
                            "frames_read", "trailing_frames", "clips"}
    assert overall["clips"] == 2 and overall["frames"] == 6 and overall["frames_read"] == 14
    average = overall["baselines"]["average"]
    assert overall["margin_over_average_db"] == pytest.approx(overall["psnr"] - average["psnr"])
    assert overall["baselines"]["minterpolate"]["seconds_per_frame"] > 0
    assert "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1" in report["protocol"]["minterpolate_baseline"]
    assert "minterpolate" in run.stdout.splitlines()[-1]

    assert "packed 1-bit on load" in report["model_description"]  # --engine auto on the CPU
    model, _ = load_model(tiny_checkpoint, "cpu")  # the script's numbers are the simulated model's evaluate_video
    for clip in report["clips"]:
        own = evaluate_video(model, clip["path"], "cpu", max_frames=7, progress=False)
        assert clip["psnr"] == pytest.approx(own.model.psnr, abs=1e-4)
        assert clip["baselines"]["average"]["psnr"] == pytest.approx(own.average.psnr, abs=1e-6)
        assert clip["baselines"]["repeat"]["ssim"] == pytest.approx(own.repeat.ssim, abs=1e-6)
        assert [g["frame"] for g in clip["gaps"]] == [0, 2, 4]  # 7 frames at 2x: three gaps, a record each
        assert [g["model"] for g in clip["gaps"]] == pytest.approx([g["model"] for g in own.gaps], abs=1e-4)


@pytest.mark.parametrize("case", ["missing", "too_short"])
def test_test_script_bad_data_root_is_one_line(tmp_path, tiny_checkpoint, case):
    root = str(tmp_path / "nowhere") if case == "missing" else write_folder(tmp_path / "short", panning_frames(2))
    run = run_repo_script("test.py", "--dataset", "video", "--data_root", root, "--load_from", tiny_checkpoint)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and root in errors[0]
