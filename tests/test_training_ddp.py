"""main_bin_ddp.py under ``torchrun --nproc_per_node=2`` on the CPU (gloo): the ranks train on
disjoint shards (recorded by ``--debug_record``; ``--batch_size`` 4 is both ranks' batch, 2 each),
validation sums every rank's frames, only rank 0 writes the experiment, and the saved model is the
model every rank ends with."""
import json
import os
import subprocess
import sys

import torch

from tests.fixtures import write_vimeo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_torchrun_two_cpu_processes_train_disjoint_shards_into_one_model(tmp_path):
    write_vimeo(tmp_path / "vimeo", n_seqs=4)
    debug = tmp_path / "debug"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "main_bin_ddp.py", "--dataset", "vimeo90K_septuplet", "--data_root", str(tmp_path / "vimeo"),
               "--crop_size", "32", "--batch_size", "4", "--test_batch_size", "1", "--max_epoch", "2",
               "--max_steps_per_epoch", "1", "--val_freq", "2", "--max_val_batches", "1", "--grad_clip", "1.0",
               "--num_workers", "0", "--progress", "False", "--cuda", "False",
               "--checkpoint_dir", str(tmp_path / "runs"), "--exp_name", "ddp", "--debug_record", str(debug)]
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]

    records = [json.loads((debug / f"samples_rank{rank}.json").read_text()) for rank in (0, 1)]
    train_ids = {f"00001/{i:04d}" for i in range(1, 5)}
    for epoch in ("1", "2"):
        shards = [{sample for batch in record["epochs"][epoch] for sample in batch} for record in records]
        assert len(shards[0]) == len(shards[1]) == 2
        assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == train_ids

    folder = tmp_path / "runs/ddp"
    results = (folder / "results.txt").read_text().splitlines()
    assert len(results) == 1 and results[0].startswith("epoch 2") and "frames 2" in results[0]
    assert len(os.listdir(folder / "tensorboard")) == 1
    saved = torch.load(folder / "checkpoint.pth", map_location="cpu", weights_only=True)["state_dict"]
    rank1 = torch.load(debug / "weights_rank1.pth", map_location="cpu", weights_only=True)
    assert saved.keys() == rank1.keys()
    for key, value in rank1.items():
        assert torch.equal(saved[key], value), key


def test_a_rank_that_fails_mid_epoch_stops_the_whole_job_with_its_one_line_error(tmp_path):
    write_vimeo(tmp_path / "vimeo", n_seqs=4)
    (tmp_path / "vimeo/sequences/00001/0003/im4.png").write_bytes(b"not a PNG")  # one rank reads it in step 1 or 2
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "main_bin_ddp.py", "--dataset", "vimeo90K_septuplet", "--data_root", str(tmp_path / "vimeo"),
               "--crop_size", "32", "--batch_size", "2", "--max_epoch", "1", "--num_workers", "0",
               "--progress", "False", "--cuda", "False", "--checkpoint_dir", str(tmp_path / "runs"), "--exp_name", "ddp"]
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)  # the other rank waits
    assert process.returncode != 0  # in a collective for the failed one: torchrun stops it
    errors = [line for line in process.stderr.splitlines() if "error: unreadable image" in line]
    assert len(errors) == 1 and "0003/im4.png" in errors[0] and "--skip_unreadable True" in errors[0], process.stderr
    assert not (tmp_path / "runs/ddp/checkpoint.pth").exists()
