"""Long runs survive a kill: ``--save_every N`` writes the whole training state mid-epoch, a run
killed with SIGKILL and resumed reaches the weights of a run never interrupted, and a checkpoint
that cannot be written (full disk, a folder that cannot be created) is one line, exit code 4,
with the previous checkpoint intact. Tiny Vimeo-90K-layout data, real subprocesses."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.fixtures import write_vimeo
from training import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH, EPOCHS = 4, 3


def run_options(data_root, checkpoint_dir, exp_name, *extra):
    """A tiny CPU run of ``EPOCHS`` epochs of ``STEPS_PER_EPOCH`` steps (batch 2, 32x32 crops)."""
    return ["--dataset", "vimeo90K_septuplet", "--data_root", str(data_root), "--crop_size", "32",
            "--batch_size", "2", "--test_batch_size", "2", "--max_steps_per_epoch", str(STEPS_PER_EPOCH),
            "--max_epoch", str(EPOCHS), "--max_val_batches", "1", "--num_workers", "0", "--progress", "False",
            "--cuda", "False", "--base_channels", "8", "--checkpoint_dir", str(checkpoint_dir),
            "--exp_name", exp_name, *extra]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def training_process(options, preamble=""):
    """``main_bin.py options`` in a new Python process, after running ``preamble`` there (one thread:
    the same float sums in every process)."""
    script = f"import sys, runpy\n{preamble}\nsys.argv = ['main_bin.py'] + {options!r}\n" \
             "runpy.run_path('main_bin.py', run_name='__main__')"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def vimeo(tmp_path_factory):
    root = tmp_path_factory.mktemp("vimeo")
    write_vimeo(root, n_seqs=2 * STEPS_PER_EPOCH)
    return root


def wait_for_mid_epoch_checkpoint(path, process, timeout=240):
    """Poll until ``path`` holds a mid-epoch state; returns (epoch, epoch_step) of what was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.exists(path):
            checkpoint = load(path)  # written atomically: always a whole file
            if checkpoint.get("epoch_step", 0) > 0:
                return checkpoint["epoch"], checkpoint["epoch_step"]
        time.sleep(0.02)
    raise AssertionError(f"no mid-epoch checkpoint appeared (exit code {process.poll()})")


def finish(process):
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-2000:]


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(vimeo, tmp_path):
    finish(training_process(run_options(vimeo, tmp_path, "whole", "--save_every", "1")))
    killed = training_process(run_options(vimeo, tmp_path, "killed", "--save_every", "1"))
    epoch, step = wait_for_mid_epoch_checkpoint(str(tmp_path / "killed" / "checkpoint.pth"), killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL and (epoch, step) < (EPOCHS, 0)

    finish(training_process(run_options(vimeo, tmp_path, "killed", "--save_every", "1", "--resume")))
    whole, resumed = load(tmp_path / "whole" / "checkpoint.pth"), load(tmp_path / "killed" / "checkpoint.pth")
    assert resumed["epoch"] == EPOCHS and "epoch_step" not in resumed
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert resumed["optimizer"]["state"][0]["step"] == whole["optimizer"]["state"][0]["step"]
    assert not [n for n in os.listdir(tmp_path / "killed") if n.startswith(".tmp-")]
    whole_losses = [line.split()[3] for line in (tmp_path / "whole" / "results.txt").read_text().splitlines()]
    resumed_losses = [line.split()[3] for line in (tmp_path / "killed" / "results.txt").read_text().splitlines()]
    assert resumed_losses[-1] == whole_losses[-1]  # the epoch's mean loss counts the steps before the kill


def test_a_mid_epoch_checkpoint_records_its_position_and_loss_sums(vimeo, tmp_path):
    process = training_process(run_options(vimeo, tmp_path, "run", "--save_every", "3"))
    epoch, step = wait_for_mid_epoch_checkpoint(str(tmp_path / "run" / "checkpoint.pth"), process)
    process.kill()
    process.communicate()
    checkpoint = load(tmp_path / "run" / "checkpoint.pth")
    assert (epoch * STEPS_PER_EPOCH + step) % 3 == 0 and 0 < step < STEPS_PER_EPOCH
    loss_sum, samples = checkpoint["epoch_meters"]["loss"]
    assert samples == 2 * step and loss_sum > 0


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_the_previous_one_survives(vimeo, tmp_path):
    assert main(run_options(vimeo, tmp_path, "full", "--max_epoch", "1")) == 0
    before = (tmp_path / "full" / "checkpoint.pth").read_bytes()
    limit = 256 * 1024  # files may not grow past 256 KiB in this process: the checkpoint write fails (EFBIG)
    full_disk = (f"import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                 f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))")
    process = training_process(run_options(vimeo, tmp_path, "full", "--max_epoch", "2", "--resume"), full_disk)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 4, stderr[-3000:]
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("error: cannot write") and "checkpoint.pth" in error and "is kept" in error
    assert "--resume" in error and "Traceback" not in stderr
    assert (tmp_path / "full" / "checkpoint.pth").read_bytes() == before
    assert not [n for n in os.listdir(tmp_path / "full") if n.startswith(".tmp-")]


def test_an_experiment_folder_that_cannot_be_created_is_one_line(vimeo, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the checkpoint folder should go")
    assert main(run_options(vimeo, blocker / "runs", "run")) == 4
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: cannot create the experiment folder") and "--checkpoint_dir" in error


def test_save_every_must_be_positive(vimeo, tmp_path, capsys):
    assert main(run_options(vimeo, tmp_path, "bad", "--save_every", "0")) == 2
    assert "--save_every must be at least 1" in capsys.readouterr().err
