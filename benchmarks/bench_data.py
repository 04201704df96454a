"""How fast the training data loads: samples per second of one data-loading worker for the Vimeo-90K
septuplet (2x) and GoPro (8x) layouts, the batches' bytes through the workers' shared memory, and
how many workers a GPU step of a given speed needs.

    python benchmarks/bench_data.py                                  # fixtures at the real frame sizes
    python benchmarks/bench_data.py --step_seconds 0.3 --batch 32    # a GPU step measured by bench_train.py
    python benchmarks/bench_data.py --vimeo_root input/vimeo_septuplet --gopro_root input/GOPRO   # your copies
    python benchmarks/bench_data.py --host_prior dis                 # workers also computing the DIS prior
    python benchmarks/bench_data.py --gopro_root input/GOPRO --gopro_cache cache/gopro   # and its frame cache

One worker's speed is a single process drawing training samples (``dataset.sample(index, epoch)``: decode,
256x256 crop, flips, colour jitter, time reversal, 8-bit tensors) as a DataLoader worker does; the
DataLoader with ``--workers`` workers is timed too (with its shared-memory transfer). A worker needs
``batch / (step seconds x samples per second)`` ... rounded up, per training process (each process has
its own workers). ``--host_prior dis``: each sample's worker also computes the DIS motion prior between
its middle inputs (``HostFlowsCollate``, what training a model with ``--motion_prior dis`` makes the
workers do, so that a GPU step does not wait for OpenCV). The row ``gopro_cached`` reads GoPro from a
frame cache (``cache_frames.py``: decoded once, crops read from a memory map): built in a scratch folder
for the fixture, ``--gopro_cache`` for your copy. Without roots the frames are ``fixture_data``'s photographs at the real sizes
(448x256, 1280x720); your own copies, on your own disks, give your figures.
"""
import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fixture_data  # noqa: E402
from cache_frames import cache_dataset  # noqa: E402
from cli import run_script  # noqa: E402
from dataset import HostFlowsCollate, get_dataset, get_loader, set_epoch  # noqa: E402
from model.motion_prior import HOST_PRIORS  # noqa: E402

LAYOUTS = {"vimeo90K_septuplet": {"n_outputs": 1}, "gopro": {"n_outputs": 7}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vimeo_root", help="a Vimeo-90K septuplet folder (default: a fixture)")
    parser.add_argument("--gopro_root", help="a GoPro folder (default: a fixture)")
    parser.add_argument("--gopro_cache", help="the frame cache of --gopro_root (cache_frames.py; default: built "
                        "in a scratch folder for the fixture, none for --gopro_root)")
    parser.add_argument("--samples", type=int, default=24, help="samples timed per layout (default: 24)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers to time too (default: 2)")
    parser.add_argument("--batch", type=int, default=32, help="batch of one training process (default: 32)")
    parser.add_argument("--crop", type=int, default=256, help="training crop (default: 256, FLAVR's)")
    parser.add_argument("--step_seconds", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="GPU step times to feed, seconds (default: 0.25 0.5 1)")
    parser.add_argument("--host_prior", choices=HOST_PRIORS, help="workers also compute this motion prior")
    return parser.parse_args(argv)


def one_worker_rate(dataset, samples, host_prior=None):
    """Samples per second of one process drawing training samples in turn (and computing ``host_prior``
    on each, as a batch of one), and frames per sample."""
    collate = HostFlowsCollate(host_prior) if host_prior else None
    times = []
    for i in range(samples):
        start = time.perf_counter()
        inputs, targets = dataset.sample(i % len(dataset), 1)
        if collate is not None:
            collate([(inputs, targets)])
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times), len(inputs) + len(targets)


def loader_rate(name, root, options, workers, batch, samples, host_prior=None, frame_cache=None):
    """Samples per second through a DataLoader with ``workers`` workers (after its first batch)."""
    loader = get_loader(name, "train", root, batch_size=batch, num_workers=workers, crop_size=options["crop"],
                        n_outputs=options["n_outputs"], min_batches=max(2, samples // batch + 1),
                        host_prior=host_prior, frame_cache=frame_cache)
    set_epoch(loader, 1)
    batches = iter(loader)
    next(batches)
    start, count = time.perf_counter(), 0
    for inputs, *_ in batches:
        count += inputs[0].shape[0]
        if count >= samples:
            break
    return count / (time.perf_counter() - start), inputs[0].element_size()


def measure(name, root, args, frame_cache=None):
    options = {"crop": args.crop, **LAYOUTS[name]}
    dataset = get_dataset(name, "train", root, crop_size=args.crop, n_outputs=options["n_outputs"],
                          frame_cache=frame_cache)
    dataset.frames_as_uint8 = True
    rate, frames = one_worker_rate(dataset, args.samples, args.host_prior)
    through_loader, element = loader_rate(name, root, options, args.workers, min(args.batch, 8), args.samples,
                                          args.host_prior, frame_cache)
    batch_bytes = args.batch * frames * 3 * args.crop * args.crop
    return {"rate": rate, "frames": frames, "loader_rate": through_loader, "batch_mb_uint8": batch_bytes / 2 ** 20,
            "batch_mb_float": 4 * batch_bytes / 2 ** 20, "element": element}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(0)  # OpenCV on this thread alone, as in a DataLoader worker (dataset._init_worker)
    with tempfile.TemporaryDirectory() as scratch:
        roots = {"vimeo90K_septuplet": args.vimeo_root or fixture_data.write_vimeo(os.path.join(scratch, "vimeo")),
                 "gopro": args.gopro_root or fixture_data.write_gopro(os.path.join(scratch, "gopro"))}
        results = {name: measure(name, root, args) for name, root in roots.items()}
        cache = args.gopro_cache
        if cache is None and not args.gopro_root:
            cache = os.path.join(scratch, "gopro_cache")
            cache_dataset("gopro", roots["gopro"], cache, progress=False)
        if cache is not None:
            results["gopro_cached"] = measure("gopro", roots["gopro"], args, frame_cache=cache)
    print("python benchmarks/bench_data.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"{os.cpu_count()} CPUs; crop {args.crop}, batch {args.batch} per training process; frames: "
          f"{'your data' if args.vimeo_root or args.gopro_root else 'fixtures at the real sizes'}; "
          f"motion prior in the workers: {args.host_prior or 'none'}")
    header = " ".join(f"{f'workers for {s:g} s':>17s}" for s in args.step_seconds)
    print(f"{'layout':22s} {'frames/sample':>13s} {'samples/s/worker':>16s} "
          f"{f'loader, {args.workers} workers':>18s} {'batch MB uint8 (float)':>23s} {header}")
    for name, r in results.items():
        needed = " ".join(f"{math.ceil(args.batch / (s * r['rate'])):17d}" for s in args.step_seconds)
        print(f"{name + (' 8x' if name.startswith('gopro') else ' 2x'):22s} {r['frames']:13d} {r['rate']:16.1f} "
              f"{r['loader_rate']:18.1f} {r['batch_mb_uint8']:10.0f} ({r['batch_mb_float']:.0f}){'':6s} {needed}")


if __name__ == "__main__":
    run_script(main)
