"""Recipes as files: recipes/<name>.json fill the training options a run leaves out, the command line
overrides them, a recipe's requirements and mistakes are one line, and the quality grid's
configurations are overlays that main_bin.py accepts."""
import json
import os
import sys

import pytest
import torch

from fixtures import REPO, run_repo_script, write_vimeo
from training import main
from training.options import build_parser, model_config_from, read_recipe, recipe_actions, recipe_names, resolve_options


def resolved(*argv):
    return resolve_options(build_parser("test", "").parse_args(list(argv)))


def test_the_named_recipes_are_complete_and_valid():
    assert {"demo", "vimeo_2x_binary", "vimeo_2x_distilled", "gopro_8x", "flavr"} <= set(recipe_names())
    actions = recipe_actions(build_parser("test", ""))
    for name in recipe_names():
        options, _ = read_recipe(name)
        assert set(options) == set(actions), name


def test_main_bin_alone_runs_the_demo_recipe_and_flags_override_it():
    args, demo = resolved(), read_recipe("demo")[0]
    assert args.recipe == "demo"
    assert all(getattr(args, name) == value for name, value in demo.items() if name != "num_workers")
    assert (args.dataset, args.base_channels, args.crop_size, args.arch, args.head) == ("demo", 16, 64, "binary", "warp")
    overridden = resolved("--lr", "0.01", "--base_channels", "8")
    assert (overridden.lr, overridden.base_channels, overridden.crop_size) == (0.01, 8, 64)


def test_a_recipes_data_workers_share_the_nodes_cpus_among_its_training_processes(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    assert resolved("--recipe", "flavr").num_workers == min(4, cpus)  # FLAVR's 4 workers, capped at the CPUs
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cpus))  # torchrun: more processes on this node than CPUs
    assert resolved("--recipe", "flavr").num_workers == 1
    assert resolved("--recipe", "flavr", "--num_workers", "3").num_workers == 3  # the user's number stands


def test_a_named_recipe_sets_data_set_factor_and_model():
    args = resolved("--recipe", "gopro_8x")
    assert (args.dataset, args.n_outputs, args.arch, args.batch_size, args.lr) == ("gopro", 7, "binary", 32, 2e-4)
    assert args.exp_name == "gopro_binary_8x"
    flavr = resolved("--recipe", "flavr")
    assert (flavr.arch, flavr.head, flavr.motion_prior, flavr.lr_schedule) == ("flavr", "frames", "none", "plateau")


def test_without_a_recipe_the_data_set_and_arch_choose_one():
    assert resolved("--dataset", "vimeo90K_septuplet").recipe == "vimeo_2x_binary"
    assert resolved("--dataset", "vimeo90K_septuplet", "--arch", "flavr").recipe == "flavr"
    assert resolved("--arch", "flavr").recipe == "demo_flavr"
    assert resolved("--dataset", "demo_holdout_bikes").recipe == "demo"


def test_a_head_without_flows_has_no_motion_prior_unless_the_command_line_gives_one():
    assert resolved().network_scale == 4 and resolved("--head", "frames").network_scale == 1
    assert resolved("--head", "frames").motion_prior == "none"
    with pytest.raises(ValueError, match="corrects the warp head's flows"):
        resolved("--head", "frames", "--motion_prior", "matching")


def test_the_demo_warps_bicubically_and_ignores_its_priors_sub_pixel_motion_only_where_there_is_a_prior():
    demo = resolved()
    assert (demo.warp_interpolation, demo.prior_dead_zone) == ("bicubic", 0.35)
    assert model_config_from(demo)["warp_interpolation"] == "bicubic"
    assert resolved("--head", "frames").prior_dead_zone == 0 and resolved("--motion_prior", "none").prior_dead_zone == 0
    assert resolved("--recipe", "flavr").warp_interpolation == "bilinear"
    assert resolved("--arch", "flavr").warp_interpolation == "bilinear"  # demo_flavr: FLAVR's head, which does not warp
    assert resolved("--head", "frames").warp_interpolation == "bilinear"
    assert resolved("--head", "frames", "--warp_interpolation", "bicubic").warp_interpolation == "bicubic"
    with pytest.raises(ValueError, match="add --head warp --motion_prior"):
        resolved("--motion_prior", "none", "--prior_dead_zone", "0.5")
    with pytest.raises(ValueError, match="0 or more pixels"):
        resolved("--prior_dead_zone", "-1")


def test_a_recipe_that_needs_a_teacher_says_so_in_one_line(capsys):
    assert main(["--recipe", "vimeo_2x_distilled", "--data_root", "missing", "--cuda", "False"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: recipe vimeo_2x_distilled needs --") and "FLAVR_2x.pth" in line
    assert "\n" not in line


@pytest.mark.parametrize("recipe, message", [
    ({"extends": "demo", "options": {"learning_rate": 0.1}}, "learning_rate: not options a recipe sets"),
    ({"extends": "demo", "options": {"crop_size": "large"}}, "crop_size: 'large' is not valid"),
    ({"extends": "demo", "options": {"arch": "ternary"}}, "arch: 'ternary' is not valid"),
    ({"extends": "demo", "options": {"shortcuts": "yes"}}, "shortcuts: 'yes' is not valid"),
    ({"extends": "demo", "options": {"input_frames": 1357}}, "input_frames: 1357 is not valid (expected a string)"),
    ({"options": {"lr": 0.1}}, "missing: a recipe extends flavr"),
    ({"extends": "demo", "options": []}, "is not a recipe"),
    ({"extends": "demo", "options": {}, "requires": ["teacher"]}, "is not a recipe"),
    ({"extends": ["demo"], "options": {}}, "is not a recipe"),
])
def test_a_bad_recipe_file_is_one_line_naming_what_is_wrong(tmp_path, recipe, message):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(recipe))
    done = run_repo_script("main_bin.py", "--recipe", str(path), "--checkpoint_dir", str(tmp_path / "runs"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "runs").exists()


def test_recipes_that_extend_each_other_in_a_circle_and_unknown_names_are_refused(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"extends": "b.json", "options": {}}))  # beside it
    (tmp_path / "b.json").write_text(json.dumps({"extends": str(tmp_path / "a.json"), "options": {}}))
    with pytest.raises(ValueError, match="in a circle"):
        read_recipe(str(tmp_path / "a.json"))
    with pytest.raises(ValueError, match="no such recipe; the recipes are demo"):
        resolved("--recipe", "vimeo_4x")


def test_a_users_recipe_file_trains_and_is_recorded_in_the_folder_and_checkpoint(tmp_path):
    write_vimeo(tmp_path / "vimeo", n_seqs=2)
    mine = tmp_path / "tiny.json"
    mine.write_text(json.dumps({"about": "a tiny run", "extends": "vimeo_2x_binary", "options": {
        "crop_size": 32, "batch_size": 2, "test_batch_size": 2, "max_epoch": 1, "max_steps_per_epoch": 1,
        "base_channels": 8, "num_workers": 0, "lr_schedule": "cosine"}}))
    assert main(["--recipe", str(mine), "--data_root", str(tmp_path / "vimeo"), "--progress", "False",
                 "--cuda", "False", "--checkpoint_dir", str(tmp_path / "runs"), "--exp_name", "mine"]) == 0
    saved = json.loads((tmp_path / "runs/mine/args.json").read_text())
    checkpoint = torch.load(tmp_path / "runs/mine/checkpoint.pth", map_location="cpu", weights_only=True)
    for args in (saved, checkpoint["args"]):
        assert (args["recipe"], args["crop_size"], args["base_channels"], args["head"]) == (str(mine), 32, 8, "warp")


def test_every_quality_grid_configuration_is_an_overlay_main_bin_accepts(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import quality_grid
    args = quality_grid.parse_args(["--output_dir", str(tmp_path)])
    assert quality_grid.RECIPE in recipe_names() and set(quality_grid.DEFAULT_CONFIGS) <= set(quality_grid.GRID)
    for config in quality_grid.GRID:
        options = quality_grid.budget_options(args) + quality_grid.config_options(args, config, 0)
        run = resolved(*options)
        assert run.recipe == "demo" and run.max_epoch * run.max_steps_per_epoch == args.steps, config
        assert run.network_scale == (4 if "_ns4" in config else 2 if "_ns2" in config else 1), config
    soft = resolved(*quality_grid.budget_options(args), *quality_grid.config_options(args, "bin_warp_mp_soft_kd_mc4", 0))
    assert (soft.motion_crops, soft.soft_sign_epochs, soft.teacher) == (
        4, 5, str(tmp_path / "runs" / "fp_warp_mp_mc4_s0" / "checkpoint.pth"))
