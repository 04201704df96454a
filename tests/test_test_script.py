"""test.py on tiny Vimeo-90K septuplet and GoPro fixtures: its PSNR is the one computed here from the model,
and the same when GoPro is read from its frame cache."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fixtures import REPO, read_png, run_repo_script, write_gopro, write_random_checkpoint, write_vimeo
from model_loader import load_model
from myutils import ssim_batch


@pytest.fixture(scope="module")
def binary_checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("models") / "binary_2x.pth", arch="binary", n_outputs=1)


def run_test_script(*args):
    return run_repo_script("test.py", *args)


def read_frame(path):
    """A PNG as ``1 x 3 x H x W`` float in [0, 1]."""
    return torch.from_numpy(read_png(path)).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def own_predictions(checkpoint, root, sequence_ids):
    """(prediction, target) per sequence: inputs im1, im3, im5, im7 and target im4, read here, all
    sequences in one batch."""
    model, _ = load_model(checkpoint, "cpu")
    folders = [os.path.join(root, "sequences", sequence_id) for sequence_id in sequence_ids]
    inputs = [torch.cat([read_frame(os.path.join(f, f"im{k}.png")) for f in folders]) for k in (1, 3, 5, 7)]
    with torch.no_grad():
        predictions = model(inputs)[0]
    return [(predictions[i:i + 1], read_frame(os.path.join(f, "im4.png"))) for i, f in enumerate(folders)]


def test_vimeo_results_json_matches_psnr_computed_from_the_model(tmp_path, binary_checkpoint):
    root = str(tmp_path / "vimeo")
    ids = write_vimeo(root, n_seqs=2, size=(64, 96))
    results, images = tmp_path / "results.json", tmp_path / "predictions"
    run = run_test_script("--dataset", "vimeo90K_septuplet", "--data_root", root, "--load_from", binary_checkpoint,
                          "--results_json", str(results), "--save_images", str(images), "--test_batch_size", "2")
    assert run.returncode == 0, run.stderr
    assert "PSNR" in run.stdout and "SSIM" in run.stdout
    reported = json.loads(results.read_text())
    assert reported["frames"] == 2 and reported["dataset"] == "vimeo90K_septuplet"
    assert reported["model"] == binary_checkpoint and reported["seconds_per_sample"] > 0

    pairs = own_predictions(binary_checkpoint, root, ids["test"])
    psnrs = [-10 * math.log10(float(((pred - gt) ** 2).mean()) + 1e-8) for pred, gt in pairs]
    assert reported["psnr"] == pytest.approx(sum(psnrs) / len(psnrs), abs=1e-4)
    ssims = [float(ssim_batch(pred, gt)) for pred, gt in pairs]
    assert reported["ssim"] == pytest.approx(sum(ssims) / len(ssims), abs=1e-5)

    for sequence_id, (pred, _) in zip(ids["test"], pairs):
        saved = read_png(str(images / sequence_id / "pred_01.png"))
        expected = (pred[0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
        assert saved.shape == (64, 96, 3)
        assert np.abs(saved.astype(np.float64) - expected).max() <= 1


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    run = run_test_script("--dataset", "vimeo90K_septuplet", "--data_root", str(tmp_path),
                          "--load_from", str(tmp_path / "missing.pth"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "missing.pth" in run.stderr.strip().splitlines()[-1]


def test_missing_data_root_is_one_clear_line(tmp_path, binary_checkpoint):
    run = run_test_script("--dataset", "vimeo90K_septuplet", "--data_root", str(tmp_path / "nowhere"),
                          "--load_from", binary_checkpoint)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "nowhere" in run.stderr.strip().splitlines()[-1]


def test_existing_results_json_is_not_overwritten(tmp_path, binary_checkpoint):
    results = tmp_path / "results.json"
    results.write_text("mine")
    run = run_test_script("--dataset", "vimeo90K_septuplet", "--data_root", str(tmp_path),
                          "--load_from", binary_checkpoint, "--results_json", str(results))
    assert run.returncode == 2 and "--overwrite" in run.stderr
    assert results.read_text() == "mine"


def test_gopro_scores_the_same_from_its_frame_cache(tmp_path):
    root, cache = str(tmp_path / "gopro"), str(tmp_path / "cache")
    write_gopro(root, n_videos=2, n_frames=33)
    checkpoint = write_random_checkpoint(tmp_path / "binary_8x.pth", arch="binary", base_channels=8, n_outputs=7)
    cached = subprocess.run([sys.executable, os.path.join(REPO, "cache_frames.py"), "--dataset", "gopro",
                             "--data_root", root, "--cache_dir", cache], capture_output=True, text=True, timeout=120)
    assert cached.returncode == 0, cached.stderr
    results = []
    for extra in ([], ["--frame_cache", cache]):
        path = tmp_path / f"results{len(results)}.json"
        run = run_test_script("--dataset", "gopro", "--data_root", root, "--load_from", checkpoint,
                              "--results_json", str(path), *extra)
        assert run.returncode == 0, run.stderr
        results.append(json.loads(path.read_text()))
    assert results[0]["frames"] == results[1]["frames"] == 2 * 2 * 7  # 2 clips x 2 windows x 7 new frames
    assert results[0]["psnr"] == results[1]["psnr"] and results[0]["ssim"] == results[1]["ssim"]


def test_a_frame_cache_with_real_videos_is_one_clear_line(tmp_path):
    run = run_test_script("--dataset", "video", "--data_root", str(tmp_path), "--frame_cache", str(tmp_path))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "--frame_cache is for gopro and davis" in run.stderr
