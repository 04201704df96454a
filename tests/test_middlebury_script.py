"""Middleburry_Test.py on a tiny Middlebury ``other`` fixture (61x83 frames, two-frame sequences)."""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fixtures import read_png, run_repo_script, write_middlebury, write_random_checkpoint
from inference.middlebury import interpolation_error
from model_loader import load_model

SIZE = (61, 83)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random full-precision 2x model (the script is the same for every architecture; this one loads fast)."""
    return write_random_checkpoint(tmp_path_factory.mktemp("models") / "flavr_2x.pth", arch="flavr", n_outputs=1)


def run_script(*args):
    return run_repo_script("Middleburry_Test.py", *args)


def expected_result(checkpoint, data_dir, numbers):
    """frame10i11 computed here: the frames replicate-padded to 64x88, the model, cropped, 8-bit."""
    model, _ = load_model(checkpoint, "cpu")
    frames = [torch.from_numpy(read_png(os.path.join(data_dir, f"frame{n:02d}.png"))).permute(2, 0, 1)[None]
              .float() / 255 for n in numbers]
    padded = [F.pad(f, (0, 88 - SIZE[1], 0, 64 - SIZE[0]), mode="replicate") for f in frames]
    with torch.no_grad():
        out = model(padded)[0][0, :, :SIZE[0], :SIZE[1]]
    return (out.clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()


def test_writes_upload_files_at_original_size_and_prints_metrics(tmp_path, checkpoint):
    root, out = str(tmp_path / "other"), tmp_path / "upload"
    write_middlebury(root, size=SIZE)
    run = run_script("--data_root", root, "--load_from", checkpoint, "--output_dir", str(out),
                     "--results_json", str(tmp_path / "scores.json"))
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(out)) == ["Backyard", "Teddy"]  # evaluation sequences only
    for name in ("Backyard", "Teddy"):
        assert read_png(str(out / name / "frame10i11.png")).shape == (*SIZE, 3)

    teddy = expected_result(checkpoint, os.path.join(root, "other-data", "Teddy"), (10, 10, 11, 11))
    assert np.abs(read_png(str(out / "Teddy" / "frame10i11.png")).astype(np.float64) - teddy).max() <= 1

    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines() if line.strip()}
    assert {"Beanbags", "Dimetrodon", "average"} <= set(rows)
    assert "Baker" in run.stdout and "IE" in run.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    beanbags = scores["sequences"]["Beanbags"]
    assert float(rows["Beanbags"][0]) == pytest.approx(beanbags["psnr"], abs=1e-3)
    assert float(rows["average"][2]) == pytest.approx((beanbags["ie"] + scores["sequences"]["Dimetrodon"]["ie"]) / 2,
                                                      abs=1e-3)


def test_interpolation_error_is_rms_of_the_rgb_difference_norm():
    result = np.zeros((2, 3, 3), np.uint8)
    gt = np.full((2, 3, 3), 4, np.uint8)
    gt[0, 0] = (0, 0, 0)  # one pixel of six right: mean squared norm = 5/6 * 3 * 16
    assert interpolation_error(result, gt) == pytest.approx(math.sqrt(5 / 6 * 48))


def test_data_root_without_other_data_is_one_clear_line(tmp_path):
    run = run_script("--data_root", str(tmp_path), "--load_from", str(tmp_path / "unused.pth"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "other-data" in run.stderr.strip().splitlines()[-1]


def test_existing_upload_file_is_not_overwritten(tmp_path):
    root = str(tmp_path / "other")
    write_middlebury(root, size=SIZE)
    mine = tmp_path / "upload" / "Teddy" / "frame10i11.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    run = run_script("--data_root", root, "--load_from", str(tmp_path / "unused.pth"),
                     "--output_dir", str(tmp_path / "upload"))
    assert run.returncode == 2 and "--overwrite" in run.stderr
    assert mine.read_bytes() == b"mine"
