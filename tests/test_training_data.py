"""Training data that keeps up with a GPU and survives a multi-day run: loaders send 8-bit frames
through the workers (float on the device, the data set's own values), keep their workers between
epochs and still draw each epoch's augmentation, compute a host motion prior (DIS) in the workers
with the numbers the model would compute, read GoPro from a frame cache (decoded once) with the same
samples as its PNGs, Vimeo-90K starts with one folder listing instead of
a check of every file, and ``--skip_unreadable`` replaces a corrupt sample, counted in the log and
the results, instead of stopping the run."""
import math
import os
import pickle
import subprocess
import sys

import cv2
import pytest
import torch

from dataset import DatasetError, frames_to, get_dataset, get_loader, set_epoch, unreadable_samples
from evaluation import evaluate
from model import build_model
from model.motion_prior import find_motion, reference_flows
from tests.fixtures import REPO, textured_image, write_frame_folder, write_gopro, write_png, write_vimeo
from cache_frames import main as cache_frames_main
from cli import run_script
from training import main


def corrupt(path):
    with open(path, "wb") as handle:
        handle.write(b"this is not an image")


def test_loader_batches_are_bytes_that_become_the_data_sets_float_frames_on_the_device(tmp_path):
    write_vimeo(tmp_path, n_seqs=3)
    loader = get_loader("vimeo90K_septuplet", "test", tmp_path, batch_size=3, crop_size=32)
    inputs, targets = next(iter(loader))
    assert inputs[0].dtype == torch.uint8 and inputs[0].shape == (3, 3, 32, 32)
    converted = frames_to(torch.device("cpu"), inputs + targets)
    assert all(f.dtype == torch.float32 for f in converted)
    dataset = get_dataset("vimeo90K_septuplet", "test", tmp_path, crop_size=32)
    for row in range(3):
        frames = dataset[row][0] + dataset[row][1]
        assert all(torch.equal(converted[k][row], frames[k]) for k in range(len(frames)))


def test_workers_kept_between_epochs_draw_each_epochs_augmentation(tmp_path):
    write_frame_folder(str(tmp_path / "clip"), n_frames=17, image=textured_image((64, 96)))
    epochs = {}
    for workers in (0, 2):
        loader = get_loader("custom", "train", tmp_path, batch_size=2, num_workers=workers, seed=1,
                            val_fraction=0.0, crop_size=32)
        assert loader.persistent_workers == (workers > 0)
        epochs[workers] = []
        for epoch in (1, 2, 3):
            set_epoch(loader, epoch)
            epochs[workers].append(torch.cat([inputs[0] for inputs, _ in loader]))
    assert all(torch.equal(a, b) for a, b in zip(epochs[0], epochs[2]))
    assert not torch.equal(epochs[2][0], epochs[2][1]) and not torch.equal(epochs[2][1], epochs[2][2])


def write_panning_clip(folder, n_frames=13, size=(48, 64), step=3):
    """Frames of a smooth texture moving ``step`` pixels left per frame, as PNGs in ``folder``."""
    texture = cv2.GaussianBlur(textured_image((size[0], size[1] + step * n_frames), seed=3), (5, 5), 1.5)
    for i in range(n_frames):
        write_png(os.path.join(folder, f"{i:06d}.png"), texture[:, step * i:step * i + size[1]].copy())


@pytest.mark.parametrize("prior", ["dis", "dis_fused_still", "dis_quadratic"])
def test_workers_compute_the_dis_prior_and_reference_flows_the_step_would_compute_from_the_batch(tmp_path, prior):
    write_panning_clip(str(tmp_path / "clip"))
    loader = get_loader("custom", "train", tmp_path, batch_size=2, num_workers=1, seed=1, val_fraction=0.0,
                        crop_size=32, host_prior=prior, reference_flows=True)
    set_epoch(loader, 1)
    batches = 0
    for inputs, targets, motion, references in loader:
        frames, truths = frames_to(torch.device("cpu"), inputs), frames_to(torch.device("cpu"), targets)
        assert torch.equal(motion, find_motion(prior, frames))  # a quadratic prior's from all four inputs
        assert motion.shape == (2, 4 if prior == "dis_quadratic" else 2, 32, 32)
        assert motion[:, :2].abs().amax() > 1  # 3 px per frame, flips either way
        for (flows, holds), truth in zip(references, truths):
            expected = reference_flows(truth, frames[1], frames[2])
            assert torch.equal(flows, expected[0]) and torch.equal(holds.float(), expected[1])
            assert holds.dtype == torch.bool and holds.float().mean() > 0.5
        batches += 1
    assert batches == len(loader) > 1
    inputs, targets, motion, references = next(iter(get_loader(
        "custom", "train", tmp_path, batch_size=2, val_fraction=0.0, crop_size=32, reference_flows=True)))
    assert motion is None and len(references) == 1  # flow supervision with a prior that is tensor code
    with pytest.raises(ValueError, match="host prior"):
        get_loader("custom", "train", tmp_path, val_fraction=0.0, crop_size=32, host_prior="matching")


def test_with_prior_context_the_workers_compute_the_reference_flows_of_the_inner_crop(tmp_path):
    """``--prior_context 8 --flow_supervision dis``: the step sees the crop without its 8 px border, and
    the workers compute the reference flows of that inner crop (not the step, waiting for the GPU)."""
    write_panning_clip(str(tmp_path / "clip"))
    inputs, targets, motion, references = next(iter(get_loader(
        "custom", "train", tmp_path, batch_size=2, seed=1, val_fraction=0.0, crop_size=32, host_prior="dis",
        reference_flows=True, reference_margin=8)))
    frames, truths = frames_to(torch.device("cpu"), inputs), frames_to(torch.device("cpu"), targets)
    assert motion.shape == (2, 2, 32, 32)  # the prior sees the whole crop
    (flows, holds), = references
    inner = (Ellipsis, slice(8, -8), slice(8, -8))
    expected = reference_flows(truths[0][inner], frames[1][inner], frames[2][inner])
    assert flows.shape == (2, 4, 16, 16) and torch.equal(flows, expected[0]) and torch.equal(holds.float(), expected[1])


def test_evaluation_with_the_workers_prior_scores_as_the_model_computing_its_own(tmp_path):
    write_panning_clip(str(tmp_path / "clip"), n_frames=27)
    model = build_model({"arch": "binary", "base_channels": 8, "head": "warp", "motion_prior": "dis"},
                        log_summary=False)
    loaders = [get_loader("custom", "test", tmp_path, batch_size=2, val_fraction=0.5, host_prior=prior)
               for prior in (None, "dis")]
    results = [evaluate(model, loader, torch.device("cpu"), progress=False) for loader in loaders]
    assert results[0].samples == results[1].samples > 0
    assert results[0].psnr == results[1].psnr


def test_gopro_from_its_frame_cache_gives_the_samples_of_its_pngs(tmp_path):
    write_gopro(tmp_path / "gopro", n_videos=2, n_frames=33)
    for name in ("000005.png", "000020.png"):  # texture, so that crops and flips differ
        write_png(str(tmp_path / "gopro" / "train" / "video1" / name), textured_image((64, 96), seed=7))
    cache = tmp_path / "cache"
    assert cache_frames_main(["--dataset", "gopro", "--data_root", str(tmp_path / "gopro"), "--cache_dir",
                              str(cache), "--progress", "False"]) == 0
    assert sorted(os.listdir(cache / "train")) == ["video0.json", "video0.npy", "video1.json", "video1.npy"]
    for split, epoch in (("train", 1), ("train", 2), ("test", 1)):
        options = dict(n_outputs=7, crop_size=32)
        pngs = get_dataset("gopro", split, tmp_path / "gopro", **options)
        cached = get_dataset("gopro", split, tmp_path / "gopro", frame_cache=str(cache), **options)
        assert len(cached) == len(pngs) > 1
        for index in range(len(pngs)):
            for a, b in zip(sum(pngs.sample(index, epoch), []), sum(cached.sample(index, epoch), [])):
                assert torch.equal(a, b)
    written = os.path.getmtime(cache / "train" / "video0.npy")
    again = subprocess.run([sys.executable, os.path.join(REPO, "cache_frames.py"), "--dataset", "gopro", "--data_root",
                            str(tmp_path / "gopro"), "--cache_dir", str(cache), "--progress", "False"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 clip caches written, 4 already current" in again.stderr, again.stderr
    assert os.path.getmtime(cache / "train" / "video0.npy") == written
    assert main(run_options(tmp_path / "gopro", tmp_path / "runs", "--dataset", "gopro", "--n_outputs", "7",
                            "--frame_cache", str(cache), "--num_workers", "1")) == 0


def test_a_missing_stale_or_misplaced_frame_cache_is_one_clear_line(tmp_path, capsys):
    write_gopro(tmp_path / "gopro", n_videos=1, n_frames=33)
    with pytest.raises(DatasetError, match="no frame cache .* cache_frames.py"):
        get_dataset("gopro", "train", tmp_path / "gopro", frame_cache=str(tmp_path / "cache"))
    cache_frames_main(["--dataset", "gopro", "--data_root", str(tmp_path / "gopro"), "--cache_dir",
                       str(tmp_path / "cache"), "--progress", "False"])
    running = get_dataset("gopro", "train", tmp_path / "gopro", frame_cache=str(tmp_path / "cache"))
    write_png(str(tmp_path / "gopro" / "train" / "video0" / "000033.png"), textured_image((64, 96)))
    with pytest.raises(DatasetError, match="no longer matches .* again"):
        get_dataset("gopro", "train", tmp_path / "gopro", frame_cache=str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="gopro, davis, not 'vimeo90K_septuplet'"):
        get_dataset("vimeo90K_septuplet", "train", tmp_path, frame_cache=str(tmp_path / "cache"))
    capsys.readouterr()
    assert main(run_options(tmp_path / "gopro", tmp_path / "runs", "--dataset", "gopro", "--n_outputs", "7",
                            "--frame_cache", str(tmp_path / "cache"))) == 2  # what a run says about the stale clip
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no longer matches" in error and "cache_frames.py" in error
    cache_frames_main(["--dataset", "gopro", "--data_root", str(tmp_path / "gopro"), "--cache_dir",
                       str(tmp_path / "cache"), "--progress", "False"])  # rewritten under the running data set
    worker_clip = pickle.loads(pickle.dumps(running.spans[0].clip))  # as a spawned worker receives it
    with pytest.raises(DatasetError, match="changed while this run used it"):
        worker_clip.read([0])
    assert run_script(cache_frames_main, ["--dataset", "gopro", "--data_root", str(tmp_path / "gopro"), "--cache_dir",
                                          str(tmp_path / "gopro")]) == 2
    assert "a folder of its own" in capsys.readouterr().err
    assert run_script(cache_frames_main, ["--dataset", "gopro", "--data_root", str(tmp_path / "gopro"), "--cache_dir",
                                          str(tmp_path / "gopro" / "cache")]) == 2  # inside it: listed as clips
    assert "inside the data set's folder" in capsys.readouterr().err
    assert run_script(cache_frames_main, ["--dataset", "gopro", "--data_root", str(tmp_path / "nothing"),
                                          "--cache_dir", str(tmp_path / "cache")]) == 2
    assert "no GoPro train or test folder" in capsys.readouterr().err


def test_vimeo_starts_without_checking_every_file_and_names_a_missing_frame_when_it_is_read(tmp_path):
    write_vimeo(tmp_path, n_seqs=3)
    missing = tmp_path / "sequences" / "00001" / "0003" / "im4.png"
    os.remove(missing)
    dataset = get_dataset("vimeo90K_septuplet", "train", tmp_path, crop_size=32)  # no file-by-file check
    with pytest.raises(DatasetError, match="im4.png"):
        dataset[2]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_sample_is_replaced_by_the_next_readable_one_and_counted(tmp_path, workers):
    write_vimeo(tmp_path, n_seqs=4)
    corrupt(tmp_path / "sequences" / "00001" / "0002" / "im3.png")
    loader = get_loader("vimeo90K_septuplet", "train", tmp_path, batch_size=1, num_workers=workers, crop_size=32,
                        shuffle=False, skip_unreadable=True)
    for epoch in (1, 2):
        set_epoch(loader, epoch)
        batches = list(loader)
        assert len(batches) == 4 and unreadable_samples(loader) == epoch
    with pytest.raises(DatasetError, match="im3.png"):
        list(get_loader("vimeo90K_septuplet", "train", tmp_path, batch_size=1, crop_size=32, shuffle=False))


def run_options(data_root, checkpoint_dir, *extra):
    return ["--dataset", "vimeo90K_septuplet", "--data_root", str(data_root), "--crop_size", "32",
            "--batch_size", "2", "--test_batch_size", "2", "--max_steps_per_epoch", "2", "--max_epoch", "2",
            "--max_val_batches", "1", "--num_workers", "0", "--progress", "False", "--cuda", "False",
            "--base_channels", "8", "--checkpoint_dir", str(checkpoint_dir), "--exp_name", "run", *extra]


def test_a_run_with_skip_unreadable_finishes_and_counts_the_skipped_samples(tmp_path, capsys):
    write_vimeo(tmp_path / "vimeo", n_seqs=4)
    broken = tmp_path / "vimeo" / "sequences" / "00001" / "0003" / "im5.png"
    corrupt(broken)
    assert main(run_options(tmp_path / "vimeo", tmp_path / "stops", "--num_workers", "2")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # a worker's error too is one line
    assert error.startswith("error: unreadable image") and str(broken) in error and "--skip_unreadable" in error

    assert main(run_options(tmp_path / "vimeo", tmp_path / "runs", "--skip_unreadable", "True")) == 0
    results = (tmp_path / "runs" / "run" / "results.txt").read_text().splitlines()
    assert len(results) == 2 and all("unreadable_samples_skipped 1" in line for line in results)
    log = (tmp_path / "runs" / "run" / "train.log").read_text()
    assert str(broken) in log and "1 unreadable training samples were replaced" in log


def test_bench_data_prints_each_layouts_worker_speed_with_the_dis_prior_and_the_workers_a_gpu_step_needs(tmp_path):
    """Vimeo, GoPro and GoPro read from its frame cache, the DIS prior computed in the workers."""
    write_vimeo(tmp_path / "vimeo", n_seqs=4)
    write_gopro(tmp_path / "gopro", n_videos=1, n_frames=33)
    cache_frames_main(["--dataset", "gopro", "--data_root", str(tmp_path / "gopro"), "--cache_dir",
                       str(tmp_path / "cache"), "--progress", "False"])
    command = [sys.executable, os.path.join(REPO, "benchmarks", "bench_data.py"), "--vimeo_root",
               str(tmp_path / "vimeo"), "--gopro_root", str(tmp_path / "gopro"), "--gopro_cache", str(tmp_path / "cache"),
               "--samples", "4", "--workers", "1",
               "--batch", "4", "--crop", "32", "--step_seconds", "0.5", "1", "--host_prior", "dis"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "motion prior in the workers: dis" in run.stdout.splitlines()[1]
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines()[3:]}
    assert rows["vimeo90K_septuplet"][2] == "5" and rows["gopro"][2] == "11"  # frames per sample: 4 + 1, 4 + 7
    assert rows["gopro_cached"][2] == "11"
    for row in rows.values():
        rate, workers = float(row[3]), [int(n) for n in row[-2:]]
        assert rate > 0 and workers[0] >= workers[1] >= 1 and workers[1] == math.ceil(4 / (1.0 * rate))
