"""benchmarks/quality_grid.py end to end on tiny data: two configurations (one distilled from the
other) x two seeds, trained by main_bin.py on a Vimeo-90K-layout fixture and scored on a real
panning clip written as PNG frames (one run's folder left by a run killed before its first
checkpoint; binary runs scored through their packed export, as the simulated model scores); then
rerun, which retrains nothing; then a grid distilled from the first one's runs, and one of another
budget in the same folder, which is refused."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from evaluation import evaluate_videos
from fixtures import REPO, write_png, write_vimeo
from model_loader import load_model

CONFIGS = ["fp_warp", "bin_warp_sc_kd"]


def panning_clip(folder, n=9, size=(48, 64), speed=2):
    """A smooth random texture panning ``speed`` px per frame, as PNG frames."""
    coarse = np.random.default_rng(0).integers(0, 256, (size[0] // 8 + 2, (size[1] + speed * n) // 8 + 2, 3))
    canvas = cv2.resize(coarse.astype(np.float32), (coarse.shape[1] * 8, coarse.shape[0] * 8),
                        interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    for i in range(n):
        write_png(os.path.join(folder, f"{i:04d}.png"), canvas[:size[0], i * speed:i * speed + size[1]])
    return folder


def run_grid(data_root, clip, output_dir, configs=CONFIGS, extra=()):
    command = [sys.executable, os.path.join(REPO, "benchmarks", "quality_grid.py"), "--configs", *configs,
               "--seeds", "0", "1", "--steps", "2", "--val_every", "1", "--batch_size", "2", "--crop_size", "32",
               "--base_channels", "8", "--dataset", "vimeo90K_septuplet", "--data_root", str(data_root),
               "--videos", str(clip), "--jobs", "2", "--threads", "1", "--output_dir", str(output_dir), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_grid_trains_scores_and_reports_every_configuration_and_resumes(tmp_path):
    write_vimeo(tmp_path / "vimeo", n_seqs=2)
    clip = panning_clip(tmp_path / "clip")
    stopped = tmp_path / "grid" / "runs" / "fp_warp_s1"  # a run killed before its first checkpoint
    stopped.mkdir(parents=True)
    (stopped / "train.log").write_text("killed before its first checkpoint\n")
    done = run_grid(tmp_path / "vimeo", clip, tmp_path / "grid")
    assert done.returncode == 0, done.stderr[-3000:]
    kept = tmp_path / "grid" / "runs" / "fp_warp_s1.interrupted" / "train.log"
    assert kept.read_text() == "killed before its first checkpoint\n"
    assert (stopped / "checkpoint.pth").is_file()  # trained again from scratch
    results = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert set(results["configs"]) == set(CONFIGS)
    for config in results["configs"].values():
        assert [run["seed"] for run in config["runs"]] == [0, 1]
        assert all([step for step, _ in run["curve"]] == [1, 2] for run in config["runs"])
        assert all(run["frames"] == 4 for run in config["runs"])  # frames 1, 3, 5, 7 of the 9
        assert config["psnr_halfrange"] >= 0
    distilled = results["configs"]["bin_warp_sc_kd"]["options"]
    assert "--teacher" in distilled and "fp_warp_sN" in distilled[distilled.index("--teacher") + 1]
    assert {"average", "repeat"} <= set(results["baselines"]) <= set(results["validation_baselines"]) | {"average", "repeat"}
    table = (tmp_path / "grid" / "results.md").read_text()
    assert all(f"`{name}`" in table for name in CONFIGS) and "average of the two" in table and "repeat the previous" in table and "Noise" in table
    assert "Scored on clip (every other frame restored" in table
    assert "| FFmpeg minterpolate (mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1, " in table
    assert {"average", "repeat", "minterpolate", "matching"} == set(results["validation_baselines"])
    assert all(gap["minterpolate"] > 0 for gap in results["gaps"])
    assert cv2.imread(str(tmp_path / "grid" / "curves.png")) is not None
    assert_gains_over_the_prior_are_split_by_motion(results, table)
    assert_binary_runs_scored_packed_as_the_simulated_model_scores(tmp_path / "grid", clip, table)
    assert_runs_trained_the_steps_of_the_budget(tmp_path / "grid")
    timing = tmp_path / "grid" / "runs" / "fp_warp_s0" / "train_seconds.json"
    before = timing.stat().st_mtime_ns
    again = run_grid(tmp_path / "vimeo", clip, tmp_path / "grid")
    assert again.returncode == 0, again.stderr[-3000:]
    assert timing.stat().st_mtime_ns == before  # finished runs are not retrained
    other = run_grid(tmp_path / "vimeo", clip, tmp_path / "other", ["bin_warp_sc_kd"],
                     ["--teacher_grid", str(tmp_path / "grid")])  # teachers taken from the first grid
    assert other.returncode == 0, other.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "other" / "runs")) == ["bin_warp_sc_kd_s0", "bin_warp_sc_kd_s1"]
    options = json.loads((tmp_path / "other" / "results.json").read_text())["configs"]["bin_warp_sc_kd"]["options"]
    assert str(tmp_path / "grid" / "runs") in options[options.index("--teacher") + 1]
    longer = run_grid(tmp_path / "vimeo", clip, tmp_path / "grid", extra=["--steps", "4", "--val_every", "2"])
    assert longer.returncode != 0  # the folder holds runs of another budget: never reused as if they fitted
    assert "was trained with another budget: max_steps_per_epoch 1 (grid: 2)" in longer.stderr.strip().splitlines()[-1]


def assert_binary_runs_scored_packed_as_the_simulated_model_scores(grid, clip, table):
    scores = {name: json.loads((grid / "runs" / f"{name}_s0" / "video_scores.json").read_text()) for name in CONFIGS}
    assert scores["fp_warp"]["scored_with"] == "PyTorch fp32"
    assert scores["bin_warp_sc_kd"]["scored_with"].startswith("packed engine (")
    assert "PyTorch fp32, packed engine (" in table
    model, _ = load_model(str(grid / "runs" / "bin_warp_sc_kd_s0" / "checkpoint.pth"), "cpu")
    simulated = evaluate_videos(model, [str(clip)], torch.device("cpu"), progress=False).overall
    assert abs(simulated.as_dict()["psnr"] - scores["bin_warp_sc_kd"]["psnr"]) < 1e-3


def assert_gains_over_the_prior_are_split_by_motion(results, table):
    assert [gap["frame"] for gap in results["gaps"]] == [0, 2, 4, 6]
    for config in results["configs"].values():
        for run in config["runs"]:  # 2x: a frame per gap, so the gaps' mean is the clip's score
            assert np.mean(run["gap_psnr"]) == pytest.approx(run["psnr"], abs=1e-9)
    parts = results["gains_by_motion"]
    assert [part["gaps"] for part in parts] == [2, 1, 1]
    averages = sorted(gap["average"] for gap in results["gaps"])
    assert [part["average"] for part in parts] == pytest.approx([np.mean(averages[:2]), averages[2], averages[3]])
    assert set(parts[0]["configs"]) == set(CONFIGS)
    assert "Where the gain over the matching prior lies" in table and "hardest (2 gaps)" in table
    assert [part["minterpolate_vs_average"] for part in parts] == pytest.approx(
        [np.mean([g["minterpolate"] - g["average"] for g in sorted(results["gaps"], key=lambda g: g["average"])[:2]]),
         *[g["minterpolate"] - g["average"] for g in sorted(results["gaps"], key=lambda g: g["average"])[2:]]])
    assert "| FFmpeg minterpolate vs average |" in table


def test_gains_by_motion_averages_each_configurations_gain_over_the_prior_per_third():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import quality_grid
    gaps = [{"average": a, "matching": a + 1.0} for a in (30.0, 20.0, 25.0, 35.0, 22.0)]
    results = {"fp": {"psnr": 0.0, "runs": [{"gap_psnr": [31.0, 21.5, 26.0, 36.0, 23.5]},
                                            {"gap_psnr": [31.2, 21.1, 26.0, 36.0, 23.1]}]}}
    parts = quality_grid.gains_by_motion(results, gaps)
    assert [p["gaps"] for p in parts] == [2, 2, 1]  # by the average's PSNR: (20, 22), (25, 30), (35)
    assert [p["average"] for p in parts] == pytest.approx([21.0, 27.5, 35.0])
    assert [p["matching_vs_average"] for p in parts] == pytest.approx([1.0, 1.0, 1.0])
    fp = [p["configs"]["fp"] for p in parts]
    assert [c["vs_matching"] for c in fp] == pytest.approx([0.3, 0.05, 0.0])  # seeds: 0.5 and 0.1; 0 and 0.1; 0
    assert [c["halfrange"] for c in fp] == pytest.approx([0.2, 0.05, 0.0])
    assert "| `fp` vs the matching prior | +0.300 ± 0.200 | +0.050 ± 0.050 | +0.000 ± 0.000 |" in \
        quality_grid.motion_markdown(parts, results)
    few = {"fp": {"psnr": 0.0, "runs": [{"gap_psnr": run["gap_psnr"][:2]} for run in results["fp"]["runs"]]}}
    halves = quality_grid.gains_by_motion(few, gaps[:2])  # a short clip: two gaps, so two groups of one
    assert [p["gaps"] for p in halves] == [1, 1] and [p["average"] for p in halves] == [20.0, 30.0]
    assert "in 2 groups" in quality_grid.motion_markdown(halves, few)
    assert quality_grid.gains_by_motion(results, []) == [] and quality_grid.motion_markdown([], results) == ""
    with_dis = [dict(gap, dis=gap["matching"] + 0.5) for gap in gaps]  # a grid with a DIS configuration
    dis_parts = quality_grid.gains_by_motion(results, with_dis)
    assert [p["dis_vs_matching"] for p in dis_parts] == pytest.approx([0.5, 0.5, 0.5])
    assert "| DIS prior alone vs the matching prior | +0.500 | +0.500 | +0.500 |" in \
        quality_grid.motion_markdown(dis_parts, results)
    both = [dict(gap, dis_fused=gap["dis"] + 0.25) for gap in with_dis]  # and one of the fused DIS prior
    table = quality_grid.motion_markdown(quality_grid.gains_by_motion(results, both), results)
    assert "| DIS prior alone vs the matching prior | +0.500 |" in table
    assert "| fused DIS prior alone vs the matching prior | +0.750 | +0.750 | +0.750 |" in table
    assert "vs its prior alone" not in table  # "fp" starts from no prior of the table


def test_gains_by_motion_give_each_configurations_gain_over_its_own_untrained_prior_per_third():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import quality_grid
    prior = "dis_quadratic_bicubic_dz0.35"  # quality_grid.prior_of names a configuration's prior so
    gaps = [{"clip": "c.mp4", "frame": 2 * k, "scene_difference": 0.0, "average": a, "repeat": a - 2,
             "minterpolate": a + 0.5, "matching": a + 1.0, prior: a + 2.0} for k, a in enumerate((30.0, 20.0, 25.0))]
    results = {"bin": {"psnr": 0.0, "prior": prior, "runs": [{"gap_psnr": [32.1, 21.9, 27.0]},
                                                             {"gap_psnr": [31.9, 22.1, 27.0]}]},
               "fp": {"psnr": -1.0, "prior": "matching", "runs": [{"gap_psnr": [31.0, 21.0, 26.0]}]}}
    parts = quality_grid.gains_by_motion(results, gaps)
    assert [p[f"{prior}_vs_matching"] for p in parts] == pytest.approx([1.0, 1.0, 1.0])
    assert [p["configs"]["bin"]["vs_own_prior"] for p in parts] == pytest.approx([0.0, 0.0, 0.0])  # (20, 25, 30)
    assert [p["configs"]["bin"]["own_prior_halfrange"] for p in parts] == pytest.approx([0.1, 0.0, 0.1])
    assert [p["configs"]["bin"]["vs_matching"] for p in parts] == pytest.approx([1.0, 1.0, 1.0])
    assert all("vs_own_prior" not in p["configs"]["fp"] for p in parts)  # its prior is the matching one
    table = quality_grid.motion_markdown(parts, results, {prior: "the quadratic prior alone, bicubic warping"})
    assert "| the quadratic prior alone, bicubic warping vs the matching prior | +1.000 | +1.000 | +1.000 |" in table
    assert "| `bin` vs its prior alone | +0.000 ± 0.100 | +0.000 ± 0.000 | +0.000 ± 0.100 |" in table
    assert f"| `{prior}` alone vs the matching prior |" in quality_grid.motion_markdown(parts, results)  # no words
    assert quality_grid.prior_of("bin_warp_disq_soft_ns4_bc") == prior
    assert quality_grid.prior_of("fp_warp_mp") == "matching" and quality_grid.prior_of("fp_frames") is None
    model = quality_grid.prior_model(prior)
    assert (model.prior, model.interpolation, model.dead_zone) == ("dis_quadratic", "bicubic", 0.35)


def assert_runs_trained_the_steps_of_the_budget(grid):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import quality_grid
    folder = str(grid / "runs" / "fp_warp_s0")
    assert quality_grid.trained_steps(os.path.join(folder, "checkpoint.pth")) == 2
    quality_grid.check_steps(quality_grid.parse_args(["--steps", "2"]), "fp_warp_s0", folder)
    with pytest.raises(quality_grid.RunFailed, match="fp_warp_s0 trained 2 steps, not the grid's 4"):
        quality_grid.check_steps(quality_grid.parse_args(["--steps", "4"]), "fp_warp_s0", folder)


def test_the_grid_scores_the_untrained_prior_of_every_dis_configuration_as_a_baseline_with_its_warping_and_dead_zone():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import quality_grid
    grid = type("Args", (), {})
    grid.configs = ["bin_warp_mp_soft"]
    assert quality_grid.other_priors(grid) == {}
    grid.configs = ["bin_warp_mp_soft", "bin_warp_disal_soft_ns4"]  # DIS-aligned: the DIS prior's flows
    assert list(quality_grid.other_priors(grid)) == ["dis"]
    grid.configs = ["bin_warp_disf_soft_ns4", "fp_warp_dis_ns4", "bin_warp_disf_soft_ns4_bc", "fp_warp_disf_ns4_bc"]
    priors = quality_grid.other_priors(grid)
    assert list(priors) == ["dis", "dis_fused", "dis_fused_bicubic_dz0.35"]
    bicubic = priors["dis_fused_bicubic_dz0.35"]
    assert (bicubic.prior, bicubic.interpolation, bicubic.dead_zone) == ("dis_fused", "bicubic", 0.35)
    assert bicubic.about() == "fused DIS prior alone, bicubic warping, half motion under 0.35 px ignored, untrained"
    assert (priors["dis_fused"].interpolation, priors["dis_fused"].dead_zone) == ("bilinear", 0.0)


def test_motion_crop_configurations_are_distilled_from_the_teacher_trained_on_motion_crops(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import quality_grid
    args = quality_grid.parse_args(["--teacher_config", "fp_warp_mp", "--output_dir", str(tmp_path)])
    own = quality_grid.config_options(args, "bin_warp_mp_soft_kd_mc4", 1)
    shared = quality_grid.config_options(args, "bin_warp_mp_soft_kd", 1)
    assert quality_grid.option_value(own, "--teacher") == str(tmp_path / "runs" / "fp_warp_mp_mc4_s1" / "checkpoint.pth")
    assert quality_grid.option_value(shared, "--teacher") == str(tmp_path / "runs" / "fp_warp_mp_s1" / "checkpoint.pth")
    assert quality_grid.option_value(own, "--motion_crops") == "4"
    teacher = quality_grid.GRID["fp_warp_mp_mc4"][1]
    assert quality_grid.option_value(teacher, "--motion_crops") == "4"


def test_a_teacher_checkpoint_teaches_every_distilling_configuration_and_must_exist(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import quality_grid
    release = tmp_path / "flavr_2x.pth"
    args = quality_grid.parse_args(["--configs", "bin_warp_mp_soft_kd", "bin_warp_mp_soft_kd_mc4", "--seeds", "0",
                                    "--teacher_checkpoint", str(release), "--output_dir", str(tmp_path / "grid")])
    for config in args.configs:
        assert quality_grid.option_value(quality_grid.config_options(args, config, 0), "--teacher") == str(release)
    with pytest.raises(quality_grid.RunFailed, match=f"has no teacher: {release} does not exist .--teacher_checkpoint."):
        quality_grid.train_all(args)  # checked before anything trains
    assert not (tmp_path / "grid").exists()


def test_a_run_that_fails_ends_the_grid_with_one_line_naming_it(tmp_path):
    clip = panning_clip(tmp_path / "clip")
    done = run_grid(tmp_path / "missing", clip, tmp_path / "grid")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("quality_grid.py: error: fp_warp_s") and "Traceback" not in done.stderr


def test_the_grid_scores_the_clip_its_demo_data_set_holds_out(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import quality_grid
    heldout = {dataset: [os.path.basename(c) for c in quality_grid.scored_clips(quality_grid.parse_args(
        ["--dataset", dataset]))] for dataset in ("demo", "demo_holdout_bikes", "demo_holdout_bigbuckbunny",
                                                   "vimeo90K_septuplet")}
    assert heldout == {"demo": ["carphone_pristine.mp4"], "demo_holdout_bikes": ["bikes.mp4"],
                       "demo_holdout_bigbuckbunny": ["bigbuckbunny.mp4"],
                       "vimeo90K_septuplet": ["carphone_pristine.mp4"]}
    clip = panning_clip(tmp_path / "clip")
    assert quality_grid.scored_clips(quality_grid.parse_args(["--dataset", "demo_holdout_bikes",
                                                              "--videos", str(clip)])) == [str(clip)]
