"""main_bin.py's training loop on a tiny Vimeo-90K-layout data set (64x96 frames, 32x32 crops,
one step of batch 2 per epoch): its artefacts, exact resume, divergence, and bad input."""
import glob
import io
import os
import re
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from model import build_model, model_config
from model.files import read_checkpoint, state_dict_of
from model_loader import load_model
from tests.fixtures import write_vimeo
from training import main
from training.trainer import initialise_from_pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_run(data_root, checkpoint_dir, exp_name, *extra):
    """Options of a tiny CPU run: 1 training step and 1 validation batch per epoch."""
    return ["--dataset", "vimeo90K_septuplet", "--data_root", str(data_root), "--crop_size", "32",
            "--batch_size", "2", "--test_batch_size", "2", "--max_steps_per_epoch", "1",
            "--max_val_batches", "1", "--num_workers", "0", "--progress", "False", "--cuda", "False",
            "--checkpoint_dir", str(checkpoint_dir), "--exp_name", exp_name, *extra]


# The default soft-sign phase is a share of --max_epoch: a run extended with --resume fixes it explicitly
# (as --lr_decay_steps fixes a decay), here at 0 for the 2-epoch run and its 1 + 1 epoch copy.
HARD_SIGNS = ("--soft_sign_epochs", "0")


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def vimeo(tmp_path_factory):
    root = tmp_path_factory.mktemp("vimeo")
    write_vimeo(root, n_seqs=4)
    return root


@pytest.fixture(scope="module")
def two_epoch_run(vimeo, tmp_path_factory):
    """The experiment folder of an uninterrupted 2-epoch run."""
    checkpoint_dir = tmp_path_factory.mktemp("runs")
    assert main(tiny_run(vimeo, checkpoint_dir, "full", "--max_epoch", "2", *HARD_SIGNS)) == 0
    return checkpoint_dir / "full"


def test_two_epochs_write_every_artefact(two_epoch_run):
    names = set(os.listdir(two_epoch_run))
    assert {"checkpoint.pth", "model_best.pth", "results.txt", "train.log", "args.json", "tensorboard"} <= names
    assert not [n for n in names if n.startswith(".tmp-")]
    results = (two_epoch_run / "results.txt").read_text().splitlines()
    assert [line.split()[:2] for line in results] == [["epoch", "1"], ["epoch", "2"]]
    assert "psnr" in results[0] and "ssim" in results[0]
    assert "epoch 2" in (two_epoch_run / "train.log").read_text()
    events = EventAccumulator(str(two_epoch_run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/L1", "lr", "val/loss", "val/psnr", "val/ssim"} <= scalars
    assert [e.step for e in events.Scalars("val/psnr")] == [1, 2]
    assert {"val/prediction", "val/target"} <= set(events.Tags()["images"])


def test_checkpoint_holds_the_training_state_and_loads_as_a_model(two_epoch_run):
    checkpoint = load(two_epoch_run / "checkpoint.pth")  # weights_only: no numpy arrays inside
    assert checkpoint["epoch"] == 2 and checkpoint["config"]["arch"] == "binary"
    assert {"optimizer", "scheduler", "scaler", "rng", "best_psnr", "args"} <= set(checkpoint)
    assert set(checkpoint["rng"][0]) >= {"torch", "python", "numpy"}
    best = load(two_epoch_run / "model_best.pth")
    assert best["psnr"] == pytest.approx(checkpoint["best_psnr"])
    model, description = load_model(str(two_epoch_run / "checkpoint.pth"), "cpu")
    assert "binary unet_18 2x" in description and model.binop.is_binarized
    assert model.config == checkpoint["config"]
    with torch.no_grad():
        (frame,) = model([torch.rand(1, 3, 32, 32) for _ in range(4)])
    assert frame.shape == (1, 3, 32, 32) and torch.isfinite(frame).all()


def test_resumed_run_reaches_the_same_weights_as_an_uninterrupted_one(two_epoch_run, vimeo, tmp_path):
    assert main(tiny_run(vimeo, tmp_path, "split", "--max_epoch", "1", *HARD_SIGNS)) == 0
    assert main(tiny_run(vimeo, tmp_path, "split", "--max_epoch", "2", "--resume", *HARD_SIGNS)) == 0
    resumed, uninterrupted = load(tmp_path / "split/checkpoint.pth"), load(two_epoch_run / "checkpoint.pth")
    assert resumed["epoch"] == uninterrupted["epoch"] == 2
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    for state in ("exp_avg", "exp_avg_sq"):
        for index, param_state in uninterrupted["optimizer"]["state"].items():
            assert torch.equal(resumed["optimizer"]["state"][index][state], param_state[state])
    assert (tmp_path / "split/results.txt").read_text() == (two_epoch_run / "results.txt").read_text()
    assert (tmp_path / "split/args_resume_epoch1.json").is_file()


def test_an_epoch_longer_than_the_data_trains_every_step_it_asks_for(vimeo, tmp_path):
    assert main(tiny_run(vimeo, tmp_path, "long", "--max_epoch", "2", "--max_steps_per_epoch", "5",
                         "--base_channels", "8")) == 0  # 4 samples: 2 batches of 2 per pass
    checkpoint = load(tmp_path / "long" / "checkpoint.pth")
    assert max(int(state["step"]) for state in checkpoint["optimizer"]["state"].values()) == 10
    assert "4 training samples (epochs of 3 passes, 6 batches per process)" in (tmp_path / "long" / "train.log").read_text()


def test_compact_layout_trains_from_a_flavr_checkpoint_and_is_recorded(vimeo, tmp_path, caplog):
    flavr = build_model(model_config(arch="flavr"), log_summary=False)
    torch.save({"state_dict": flavr.state_dict()}, tmp_path / "flavr.pth")
    compact = ["--bin_downsample", "True", "--gate_reduction", "16", "--pretrained", str(tmp_path / "flavr.pth")]
    with caplog.at_level("INFO"):
        assert main(tiny_run(vimeo, tmp_path, "compact", "--max_epoch", "1", *compact)) == 0
    assert "13 full gating convs copied as their best low-rank factorisation" in caplog.text
    checkpoint = load(tmp_path / "compact/checkpoint.pth")
    assert checkpoint["config"]["gate_reduction"] == 16 and checkpoint["config"]["bin_downsample"]
    _, description = load_model(str(tmp_path / "compact/checkpoint.pth"), "cpu")
    assert "gates factorised 1/16, binary shortcuts" in description


def test_flavr_release_checkpoint_initialises_the_binary_model(tmp_path):
    flavr = build_model(model_config(arch="flavr"), log_summary=False)
    path = tmp_path / "FLAVR_2x.pth"  # the release layout: DataParallel keys under "state_dict"
    torch.save({"state_dict": {f"module.{k}": v for k, v in flavr.state_dict().items()}, "epoch": 200}, path)
    binary = build_model(model_config(arch="binary"), log_summary=False)
    report = initialise_from_pretrained(binary, state_dict_of(read_checkpoint(str(path)), path), path)
    assert not report.unused and not report.mismatched
    assert report.missing and all(".bn." in key for key in report.missing)  # the binary layers' input BN
    binary_weights = binary.state_dict()
    for key, value in flavr.state_dict().items():
        assert torch.equal(binary_weights[key], value), key


def test_existing_experiment_is_refused_without_resume(two_epoch_run, vimeo, capsys):
    before = (two_epoch_run / "checkpoint.pth").stat().st_mtime_ns
    assert main(tiny_run(vimeo, two_epoch_run.parent, "full", "--max_epoch", "3")) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "--resume" in error and "--exp_name" in error
    assert (two_epoch_run / "checkpoint.pth").stat().st_mtime_ns == before


def test_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(vimeo, tmp_path, capsys):
    # Adam moves every weight by about lr on its first step: with lr 1e30 the real-valued layers
    # overflow float32, so the second step's loss is not finite. No validation before epoch 2.
    # FLAVR's head: the zero-initialised warp head can stay finite in training (the sampling
    # positions clamp to the border) and then the validation loss, not the step, catches it.
    code = main(tiny_run(vimeo, tmp_path, "diverge", "--max_epoch", "2", "--val_freq", "2", "--lr", "1e30",
                         "--head", "frames", "--shortcuts", "False"))
    assert code == 3
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "epoch 2, step 1" in error and "checkpoint.pth (epoch 1)" in error
    assert "nan" in error or "inf" in error
    checkpoint = load(tmp_path / "diverge/checkpoint.pth")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "diverge/model_best.pth").exists()
    assert not glob.glob(str(tmp_path / "diverge/.tmp-*"))


BAD_INPUTS = ["missing data root", "missing pretrained", "unrelated pretrained", "garbage resume", "bad crop",
              "bad gate reduction", "bad motion crops", "bad prior context", "prior context without a prior"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_line_and_exit_code_2(case, vimeo, tmp_path, capsys):
    garbage, unrelated = tmp_path / "garbage.pth", tmp_path / "unrelated.pth"
    garbage.write_text("not a checkpoint")
    torch.save({"state_dict": {"classifier.weight": torch.zeros(3, 3)}}, unrelated)
    extra = {"missing data root": ["--data_root", str(tmp_path / "nowhere")],
             "missing pretrained": ["--pretrained", str(tmp_path / "none.pth")],
             "unrelated pretrained": ["--pretrained", str(unrelated)],
             "garbage resume": ["--resume", str(garbage)],
             "bad crop": ["--crop_size", "30"],
             "bad gate reduction": ["--gate_reduction", "0"],
             "bad motion crops": ["--motion_crops", "0"],
             "bad prior context": ["--prior_context", "6"],
             "prior context without a prior": ["--prior_context", "8", "--motion_prior", "none"]}[case]
    assert main(tiny_run(vimeo, tmp_path, "bad") + extra) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("error:"), error
    assert not (tmp_path / "bad").exists()


def test_script_reports_a_missing_data_root_without_traceback(tmp_path):
    missing = tmp_path / "vimeo_septuplet"
    process = subprocess.run([sys.executable, "main_bin.py", "--dataset", "vimeo90K_septuplet", "--data_root",
                              str(missing), "--checkpoint_dir", str(tmp_path)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines() == [process.stderr.strip()] and str(missing) in process.stderr
    assert os.listdir(tmp_path) == []


def test_losses_read_every_few_steps_still_name_the_first_step_that_was_not_finite():
    from training.distributed import single_process_runtime
    from training.trainer import StepLosses, TrainingDiverged
    losses = StepLosses({"loss": [1.0, 2]})  # a resumed epoch's sums
    for step, value in enumerate([0.5, 0.25, float("nan"), float("inf")], start=3):
        losses.add(step, 2, {"loss": torch.tensor(value), "L1": torch.tensor(value)})
    with pytest.raises(TrainingDiverged, match="the training loss is nan at epoch 4, step 5"):
        losses.sync(single_process_runtime(False), 4)
    good = StepLosses({"loss": [1.0, 2]})
    for step, value in enumerate([0.5, 0.25], start=3):
        good.add(step, 2, {"loss": torch.tensor(value)})
    assert good.pending and good.average() == 0.5  # nothing read yet
    good.sync(single_process_runtime(False), 4)
    assert not good.pending and good.average() == (1.0 + 0.5 * 2 + 0.25 * 2) / 6


def test_progress_written_to_a_log_file_is_plain_lines_not_carriage_return_frames(tmp_path):
    write_vimeo(tmp_path / "vimeo", n_seqs=4)
    with open(tmp_path / "train.log", "w") as log:  # as `python main_bin.py ... > train.log 2>&1`
        process = subprocess.run([sys.executable, "main_bin.py", "--dataset", "vimeo90K_septuplet", "--data_root",
                                  str(tmp_path / "vimeo"), "--checkpoint_dir", str(tmp_path), "--exp_name", "run",
                                  "--batch_size", "2", "--test_batch_size", "2", "--crop_size", "32",
                                  "--base_channels", "8", "--max_epoch", "1", "--num_workers", "0", "--cuda", "False"],
                                 cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    text = (tmp_path / "train.log").read_text()
    assert process.returncode == 0, text[-2000:]
    assert "\r" not in text and "\x1b[" not in text
    assert re.search(r"^\[\d\d:\d\d:\d\d\] epoch 1  train_loss \d", text, re.M), text  # the epoch's own line


def test_plain_progress_writes_a_line_every_tenth_of_the_work(monkeypatch):
    import cli
    monkeypatch.setattr(cli, "PLAIN_PROGRESS_SECONDS", 0.0)
    stream = io.StringIO()
    for _ in cli.progress_bar(range(20), file=stream, desc="gaps", unit="gap"):
        pass
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == [f"{p}%" for p in range(10, 101, 10)]
    assert lines[-1].startswith("gaps: 100% (20/20 gap, ") and "\r" not in stream.getvalue()
    quiet = io.StringIO()
    for _ in cli.progress_bar(range(3), file=quiet, leave=False):  # a bar that leaves nothing behind
        pass
    assert [line.split()[0] for line in quiet.getvalue().splitlines()] == ["33%", "67%", "100%"]
