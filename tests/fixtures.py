"""Tiny data sets in every real on-disk layout, written into a test's ``tmp_path``.

Frames are flat grey 8-bit images whose value encodes their frame index, ``frame_value(i) =
OFFSET + STEP * i`` in every channel, so a test can tell which frame a loader returned with
``frame_index(tensor)``. Videos use a larger step (mp4v is lossy); compare with ``step=VIDEO_STEP``.
Sizes are (height, width). Also the helpers the script tests share: run a script, read a PNG,
save a random checkpoint, run a function in two gloo processes."""
import multiprocessing
import os
import subprocess
import sys

import cv2
import numpy as np

from model import build_model
from model.files import make_checkpoint, save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OFFSET, STEP, VIDEO_STEP = 5, 7, 20


def frame_value(index, step=STEP):
    """The grey level (0-255) that encodes frame ``index``."""
    value = OFFSET + step * index
    if not 0 <= value <= 255:
        raise ValueError(f"frame index {index} does not fit in 8 bits with step {step}")
    return value


def frame_index(frame, step=STEP):
    """Decode the frame index from a ``3 x H x W`` tensor in [0, 1] written by these fixtures."""
    return round((float(frame.float().mean()) * 255 - OFFSET) / step)


def grey_image(value, size):
    """A flat ``H x W x 3`` uint8 image of grey level ``value``."""
    return np.full((*size, 3), value, np.uint8)


def write_png(path, image):
    """Write an ``H x W x 3`` uint8 RGB array as an 8-bit PNG (making folders); returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def read_png(path):
    """An image file as an ``H x W x 3`` uint8 RGB array."""
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def run_repo_script(script, *args, cwd=REPO):
    """Run one of the repository's scripts on CPU (``--cuda False``) as a user would; the
    CompletedProcess with text stdout and stderr."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), "--cuda", "False", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def run_two_processes(target, args_of_rank, timeout=120):
    """Run ``target(rank, *args_of_rank(rank))`` in two forked processes (rank 0 and 1) and wait;
    the processes have called ``init_process_group`` themselves. Asserts both exited with 0."""
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=target, args=(rank, *args_of_rank(rank))) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=timeout)
    assert [process.exitcode for process in processes] == [0, 0]


def write_random_checkpoint(path, **config):
    """A randomly initialised model of ``config`` (see ``model.DEFAULT_CONFIG``) saved as our checkpoint."""
    save_checkpoint(make_checkpoint(build_model(config, log_summary=False)), str(path))
    return str(path)


def textured_image(size, seed=0):
    """A random ``H x W x 3`` uint8 RGB texture (for checking spatial augmentation)."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def write_frame_folder(folder, n_frames, size=(64, 96), *, step=STEP, ext=".png", image=None):
    """``folder/000000.png ...``: frame i has grey level ``frame_value(i)``, or is ``image`` if given."""
    return [write_png(os.path.join(folder, f"{i:06d}{ext}"), image if image is not None
                      else grey_image(frame_value(i, step), size)) for i in range(n_frames)]


def write_vimeo(root, n_seqs=2, size=(64, 96)):
    """Vimeo-90K septuplet layout; ``imK.png`` encodes index K. Returns {"train": ids, "test": ids}
    (``n_seqs`` each; list files end with a blank line, like the real ones)."""
    ids = {"train": [f"00001/{i + 1:04d}" for i in range(n_seqs)],
           "test": [f"00002/{i + 1:04d}" for i in range(n_seqs)]}
    for split, list_name in (("train", "sep_trainlist.txt"), ("test", "sep_testlist.txt")):
        for sequence_id in ids[split]:
            for k in range(1, 8):
                path = os.path.join(root, "sequences", sequence_id, f"im{k}.png")
                write_png(path, grey_image(frame_value(k), size))
        with open(os.path.join(root, list_name), "w") as handle:
            handle.write("\n".join(ids[split]) + "\n\n")
    return ids


def write_gopro(root, n_videos=2, n_frames=33, size=(64, 96)):
    """GoPro layout ``root/{train,test}/video<i>/000000.png ...`` (frame i encodes i). Returns root."""
    for split in ("train", "test"):
        for v in range(n_videos):
            write_frame_folder(os.path.join(root, split, f"video{v}"), n_frames, size)
    return root


def write_ucf101(root, n_samples=2, size=(64, 96)):
    """UCF101 layout ``root/<id>/frame0..3.png, framet.png``; they encode the times 0, 2, 4, 6 and
    3 (framet lies between frame1 and frame2). Returns the sample ids."""
    times = {"frame0": 0, "frame1": 2, "frame2": 4, "frame3": 6, "framet": 3}
    ids = [f"{i + 1}" for i in range(n_samples)]
    for sample_id in ids:
        for name, time in times.items():
            write_png(os.path.join(root, sample_id, f"{name}.png"), grey_image(frame_value(time), size))
    return ids


def write_davis(root, n_seqs=2, n_frames=11, size=(64, 96)):
    """DAVIS layout ``root/<sequence>/000000.png ...`` (frame i encodes i). Returns the names."""
    names = [f"seq{i}" for i in range(n_seqs)]
    for name in names:
        write_frame_folder(os.path.join(root, name), n_frames, size)
    return names


def write_middlebury(root, size=(61, 83)):
    """Middlebury ``other`` layout at an odd size. ``frameNN.png`` has grey level 10 * NN and the
    ground truth ``frame10i11.png`` 105. Beanbags (frames 07-14) and Dimetrodon (frame10/11 only)
    have ground truth; Backyard and Teddy are evaluation sequences without it.
    Returns {"with_gt": [...], "without_gt": [...]}."""
    sequences = {"Beanbags": range(7, 15), "Dimetrodon": (10, 11),
                 "Backyard": range(7, 15), "Teddy": (10, 11)}
    for name, numbers in sequences.items():
        for n in numbers:
            write_png(os.path.join(root, "other-data", name, f"frame{n:02d}.png"), grey_image(10 * n, size))
    for name in ("Beanbags", "Dimetrodon"):
        write_png(os.path.join(root, "other-gt-interp", name, "frame10i11.png"), grey_image(105, size))
    return {"with_gt": ["Beanbags", "Dimetrodon"], "without_gt": ["Backyard", "Teddy"]}


def write_video(path, n_frames=12, size=(64, 96), fps=25.0, step=VIDEO_STEP):
    """A video (cv2.VideoWriter, mp4v) whose frame i is flat grey ``frame_value(i, step)``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write video {path}")
    for i in range(n_frames):
        writer.write(grey_image(frame_value(i, step), size))
    writer.release()
    return path
