"""Fixture data sets in the real on-disk layouts, at the real frame sizes, with natural content (a
scikit-image photograph panning a few pixels per frame), for the benchmarks that read data as
training does: ``bench_data.py`` (decoding speed) and ``gpu_check.py`` (training on a GPU).

PNG files of photographs decode at the speed of the real data sets' files; flat or random frames
would decode faster or slower."""
import os

import cv2
import numpy as np
from skimage import data as skimage_data

VIMEO_SIZE = (256, 448)  # Vimeo-90K septuplet frames (height, width)
GOPRO_SIZE = (720, 1280)  # GoPro frames


def panning_frames(n_frames, size, speed=3, seed=0):
    """``n_frames`` ``H x W x 3`` uint8 RGB views of a photograph (scaled to cover ``size`` plus the pan),
    moving ``speed`` px right and ``speed // 2`` px down per frame."""
    pictures = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket()]
    picture = pictures[seed % len(pictures)]
    height, width = size[0] + n_frames * speed, size[1] + n_frames * speed
    scale = max(height / picture.shape[0], width / picture.shape[1])
    big = cv2.resize(picture, (int(np.ceil(picture.shape[1] * scale)), int(np.ceil(picture.shape[0] * scale))),
                     interpolation=cv2.INTER_CUBIC)
    return [big[i * speed // 2:i * speed // 2 + size[0], i * speed:i * speed + size[1]] for i in range(n_frames)]


def write_png(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def write_vimeo(root, n_sequences=16, size=VIMEO_SIZE):
    """``root/sequences/00001/<4 digits>/im1..im7.png`` and both list files (every sequence in both)."""
    ids = [f"00001/{i + 1:04d}" for i in range(n_sequences)]
    for index, sequence_id in enumerate(ids):
        for k, frame in enumerate(panning_frames(7, size, seed=index), start=1):
            write_png(os.path.join(root, "sequences", sequence_id, f"im{k}.png"), frame)
    for name in ("sep_trainlist.txt", "sep_testlist.txt"):
        with open(os.path.join(root, name), "w") as handle:
            handle.write("\n".join(ids) + "\n")
    return root


def write_gopro(root, n_clips=1, n_frames=33, size=GOPRO_SIZE):
    """``root/{train,test}/<clip>/<6 digits>.png``: ``n_clips`` clips of ``n_frames`` frames in each split."""
    for split in ("train", "test"):
        for clip in range(n_clips):
            for index, frame in enumerate(panning_frames(n_frames, size, seed=clip)):
                write_png(os.path.join(root, split, f"clip{clip}", f"{index:06d}.png"), frame)
    return root
