"""Decode a frame-folder data set once into a frame cache, so that training reads crops instead of
decoding PNGs (GoPro 8x: eleven 1280x720 frames per sample).

    python cache_frames.py --dataset gopro --data_root input/GOPRO --cache_dir cache/gopro
    python main_bin.py --recipe gopro_8x --data_root input/GOPRO --frame_cache cache/gopro

Each clip folder becomes ``<cache_dir>/<parent>/<clip>.npy`` (uint8 RGB, the decoded frames: the
same samples) and a manifest of the frames it was made from; a clip whose cache is current is left
as it is, so the command can be run again after adding or changing clips. A full-resolution clip takes
its decoded size on disk (GoPro: 2.76 MB per 1280x720 frame). Internals: ``dataset/frame_cache.py``.
"""
import logging
import os
import sys

from cli import OneLineErrorParser, progress_bar, run_script, setup_logging, true_or_false
from dataset import FRAME_CACHE_SOURCES
from dataset.frame_cache import cache_is_current, write_clip_cache
from dataset.image_io import list_subfolders

log = logging.getLogger("cache_frames")


def parse_args(argv=None):
    parser = OneLineErrorParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=list(FRAME_CACHE_SOURCES), help="data set layout")
    parser.add_argument("--data_root", required=True, help="the data set's folder")
    parser.add_argument("--cache_dir", required=True, help="folder for the cache (made if missing); give it to "
                        "training as --frame_cache")
    parser.add_argument("--progress", type=true_or_false, default=True, metavar="True|False",
                        help="progress bar (default: True)")
    return parser.parse_args(argv)


def clip_folders(dataset, data_root):
    """Every clip folder of ``dataset`` under ``data_root``, in order."""
    return [os.path.join(parent, name) for parent in FRAME_CACHE_SOURCES[dataset](data_root)
            for name in list_subfolders(parent)]


def cache_dataset(dataset, data_root, cache_dir, progress=True):
    """Write the cache of every clip of ``dataset`` whose cache is missing or stale; returns (written, kept)."""
    cache, data = os.path.realpath(cache_dir), os.path.realpath(data_root)
    if os.path.commonpath([cache, data]) == data:  # inside it, a cache would be listed as clips
        raise ValueError(f"--cache_dir {cache_dir} is inside the data set's folder {data_root}: give the cache a "
                         "folder of its own")
    written = kept = 0
    for folder in progress_bar(clip_folders(dataset, data_root), desc="cache clips", disable=not progress):
        if cache_is_current(folder, cache_dir):
            kept += 1
            continue
        write_clip_cache(folder, cache_dir)
        written += 1
    return written, kept


def main(argv=None):
    args = parse_args(argv)
    setup_logging()
    written, kept = cache_dataset(args.dataset, args.data_root, args.cache_dir, args.progress)
    log.info("%s: %d clip caches written, %d already current, in %s; give main_bin.py or test.py --frame_cache %s",
             args.dataset, written, kept, args.cache_dir, args.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
