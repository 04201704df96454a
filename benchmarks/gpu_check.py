"""The checks that need a GPU, in one command: at most ~10 minutes on one GPU, never part of CI.

    python benchmarks/gpu_check.py                         # on a machine with CUDA (one GPU or more)
    python benchmarks/gpu_check.py --json gpu_check.json   # also write the figures
    python benchmarks/gpu_check.py --device cpu --smoke    # the same checks at tiny sizes on the CPU

It needs requirements.txt's packages (PyAV included) and says in one line which are missing. Its JSON is
rewritten after every check, and the checks share a deadline (``--budget``, 540 s): a check that would
start after it is skipped, and every subprocess is stopped at it, so a hang costs that check alone. The
DDP check, last, runs only with two or more GPUs and needs a few minutes more: there give ``--budget 900``.

1. cuda tests: the test suite's tests that need a CUDA device (``pytest -m cuda``);
2. training steps: full-precision FLAVR, binary FLAVR in FLAVR's layout and the default binary model
   at 256x256 (width 64, batch 8) in float32 and in the GPU's autocast (bf16 where native, else fp16):
   step time, samples/s, peak memory and saved MB/sample, as ``bench_train.py`` measures them;
3. a run: ``main_bin.py`` on a Vimeo-90K-layout fixture (fixture_data.py) for a few dozen steps with data
   workers, pinned memory, autocast, validation and checkpoints; it must finish, and its checkpoint,
   evaluated as ``test.py`` does, must give the PSNR its validation logged (validation runs the exact
   float32 model);
4. packed engine: the bit-packed model against the simulated binary model on the device (1e-4), with the
   matching prior (tensor code on the device), and with the DIS, the fused DIS and the quadratic DIS priors
   (OpenCV on the host) and the network at half resolution;
5. host flows: the same run with the demo's DIS prior (``recipes/demo.json``'s) and ``--flow_supervision dis`` under
   autocast (OpenCV's flows computed by the data workers, ``HostFlowsCollate``): it must finish; its wall time
   beside the run's says what DIS costs a GPU step;
6. ddp: ``main_bin_ddp.py`` with 2 processes over NCCL (2 GPUs or more; ``--smoke``: gloo on the CPU):
   disjoint shards, one model on every rank, and after one step the model one process trains with the
   whole batch (float32; later steps would amplify the different order of the sums).

Each check prints one line (ok / FAILED / skipped, with why) and the training figures a table; the
exit code is the number of failed checks. ``--smoke`` makes everything tiny (32x32, width 8, a few
steps) so that the script runs inside the CPU test suite and does not rot between GPU sessions.
"""
import argparse
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NEEDED = {"av": "av", "cv2": "opencv-python-headless", "skimage": "scikit-image", "tensorboard": "tensorboard",
          "tqdm": "tqdm", "pytest": "pytest"}  # import name: package that the checks and the scripts they run import
MISSING = [package for name, package in NEEDED.items() if importlib.util.find_spec(name) is None]
if MISSING:
    print(f"gpu_check.py: error: {', '.join(MISSING)} not installed: pip install -r requirements.txt pytest",
          file=sys.stderr)
    sys.exit(2)
import bench_train  # noqa: E402
import fixture_data  # noqa: E402
from cli import exact_float32_on_cuda  # noqa: E402
from engine import pack_binary_model  # noqa: E402
from model import build_model  # noqa: E402
from model.files import write_atomically  # noqa: E402
from training.options import choose_amp, read_recipe  # noqa: E402
from util import BinOp  # noqa: E402

FULL = {"size": 256, "width": 64, "batch": 8, "steps": 30, "timed_steps": 10, "fixture": fixture_data.VIMEO_SIZE,
        "workers": 4, "epochs": 2}
SMOKE = {"size": 32, "width": 8, "batch": 2, "steps": 2, "timed_steps": 2, "fixture": (64, 96), "workers": 2,
         "epochs": 1}
LIMITS = {"pytest": 240, "child": 150, "script": 200}  # seconds a subprocess may take, within the deadline
DEMO_PRIOR = read_recipe("demo")[0]["motion_prior"]  # the host flows check's prior


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the CPU test suite runs this)")
    parser.add_argument("--json", metavar="PATH", help="write every check's outcome and figures as JSON "
                        "(rewritten after each check)")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all the checks (default 540)")
    args = parser.parse_args(argv)
    args.deadline = time.monotonic() + args.budget
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "gpu_check.py: error: no CUDA device: run it on a GPU machine, or --device cpu --smoke\n")
    args.sizes = SMOKE if args.smoke else FULL
    return args


def autocast_mode(device):
    """The autocast a training run picks by default on ``device`` (bf16 for the CPU)."""
    if device == "cpu":
        return "bf16"
    return choose_amp(None, "cuda", torch.cuda.get_device_capability())


class OutOfTime(Exception):
    """The checks' deadline (``--budget``) has passed: the check that raises it is skipped, not failed."""


def seconds_left(args, limit):
    """``limit`` seconds, or fewer where the checks' deadline comes first; OutOfTime once it has passed."""
    left = args.deadline - time.monotonic()
    if left <= 0:
        raise OutOfTime(f"out of time (--budget {args.budget:.0f} s spent)")
    return min(limit, left)


def run(command, args, limit):
    """A subprocess's (exit code, stdout + stderr); it and its own children (torchrun's workers, pytest's
    scripts) are stopped after ``seconds_left(args, limit)`` (exit code 124). It imports this repository
    first, then what the caller's PYTHONPATH holds."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    timeout = seconds_left(args, limit)
    process = subprocess.Popen([str(c) for c in command], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, PYTHONPATH=path), start_new_session=True)
    try:
        output, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, errors = process.communicate()
        return 124, f"{output}{errors}\nstopped after {timeout:.0f} s"
    return process.returncode, output + errors


def check_cuda_tests(args, scratch):
    if args.device != "cuda":
        return "skipped", "no CUDA device (the CUDA tests skip themselves on the CPU)", {}
    code, output = run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"], args,
                       LIMITS["pytest"])
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    ran = code == 0 and "passed" in summary and "skipped" not in summary  # on a GPU none may skip itself
    return ("ok" if ran else "FAILED"), summary if code != 124 else output.strip()[-1500:], {}


def check_training_steps(args, scratch):
    sizes = args.sizes
    options = bench_train.parse_args(["--device", args.device, "--width", str(sizes["width"]), "--size",
                                      str(sizes["size"]), "--batch", str(sizes["batch"]), "--steps",
                                      str(sizes["timed_steps"]), "--warmup", "0" if args.smoke else "2",
                                      "--time_cpu_autocast"])
    figures = {}
    for amp in ("none", autocast_mode(args.device)):
        for name in bench_train.MODELS:  # --smoke: in this process (its peak memory is then not the model's)
            measure = bench_train.measure if args.smoke else functools.partial(
                bench_train.run_child, timeout=seconds_left(args, LIMITS["child"]))
            measured = measure(name, amp, sizes["batch"], options)
            measured["samples_per_s"] = sizes["batch"] / measured["step_s"]
            figures[f"{name} {amp}"] = measured
    rows = [f"{'model':16s} {'precision':9s} {'step s':>8s} {'samples/s':>10s} {'peak MB':>9s} {'saved MB/sample':>16s}"]
    for key, m in figures.items():
        name, amp = key.split()
        rows.append(f"{name:16s} {amp:9s} {m['step_s']:8.3f} {m['samples_per_s']:10.1f} {m['peak_mb']:9.0f} "
                    f"{m['saved_mb_per_sample']:16.2f}")
    lighter = all(figures[f"binary {amp}"]["saved_mb_per_sample"] <= figures[f"flavr {amp}"]["saved_mb_per_sample"]
                  for amp in ("none", autocast_mode(args.device)))
    detail = "\n".join(rows) + ("" if lighter else "\nthe default binary model keeps more bytes than FLAVR")
    return ("ok" if lighter else "FAILED"), detail, figures


def fixture(args, scratch):
    root = Path(scratch) / "vimeo"
    if not root.exists():
        fixture_data.write_vimeo(str(root), n_sequences=8 if args.smoke else 32, size=args.sizes["fixture"])
    return root


def training_options(args, root, checkpoint_dir, exp_name, batch):
    sizes = args.sizes
    return ["--dataset", "vimeo90K_septuplet", "--data_root", root, "--crop_size", sizes["size"],
            "--base_channels", sizes["width"], "--batch_size", batch, "--test_batch_size", 4,
            "--max_steps_per_epoch", sizes["steps"], "--max_epoch", sizes["epochs"], "--num_workers", sizes["workers"],
            "--progress", "False", "--cuda", args.device == "cuda", "--checkpoint_dir", checkpoint_dir,
            "--exp_name", exp_name, "--lr_schedule", "cosine", "--seed", 0]


def check_training_run(args, scratch):
    root, runs = fixture(args, scratch), Path(scratch) / "runs"
    amp = autocast_mode(args.device)
    code, output = run([sys.executable, "main_bin.py", *training_options(args, root, runs, "run", args.sizes["batch"]),
                        "--amp", amp, "--save_every", args.sizes["steps"] // 2], args, LIMITS["script"])
    if code != 0:
        return "FAILED", f"main_bin.py exited with {code}: {output.strip()[-1500:]}", {}
    last = (runs / "run" / "results.txt").read_text().strip().splitlines()[-1].split()
    logged = float(last[last.index("psnr") + 1])
    report = Path(scratch) / "test.json"
    code, output = run([sys.executable, "test.py", "--dataset", "vimeo90K_septuplet", "--data_root", root,
                        "--load_from", runs / "run" / "checkpoint.pth", "--engine", "simulated", "--cuda",
                        args.device == "cuda", "--test_batch_size", 4, "--results_json", report], args,
                       LIMITS["script"])
    if code != 0:
        return "FAILED", f"test.py exited with {code}: {output.strip()[-1500:]}", {}
    evaluated = json.loads(report.read_text())["psnr"]
    same = abs(evaluated - logged) < 1e-3
    detail = f"--amp {amp}: validation PSNR {logged:.4f} dB, test.py on its checkpoint {evaluated:.4f} dB"
    return ("ok" if same else "FAILED"), detail, {"amp": amp, "validation_psnr": logged, "test_psnr": evaluated}


def check_host_flows(args, scratch):
    """``check_training_run``'s run with the demo's DIS prior (``DEMO_PRIOR``) and DIS flow supervision (OpenCV's
    flows in the data workers)."""
    root, runs = fixture(args, scratch), Path(scratch) / "runs"
    amp = autocast_mode(args.device)
    started = time.perf_counter()
    code, output = run([sys.executable, "main_bin.py", *training_options(args, root, runs, "dis", args.sizes["batch"]),
                        "--amp", amp, "--motion_prior", DEMO_PRIOR, "--flow_supervision", "dis"], args,
                       LIMITS["script"])
    seconds = time.perf_counter() - started
    if code != 0:
        return "FAILED", (f"main_bin.py --motion_prior {DEMO_PRIOR} --flow_supervision dis exited with {code}: "
                          f"{output.strip()[-1500:]}"), {}
    steps = args.sizes["steps"] * args.sizes["epochs"]
    detail = f"--amp {amp}, {DEMO_PRIOR} prior and flow supervision: {seconds:.0f} s for {steps} steps and validations"
    return "ok", detail, {"amp": amp, "seconds": seconds, "steps": steps}


PACKED_LAYOUTS = {  # the packed engine is checked on the device for each: the priors' device paths differ
    "matching prior": {"motion_prior": "matching"},  # batched tensor code on the device
    "DIS prior, network at 1/2": {"motion_prior": "dis", "network_scale": 2},  # OpenCV on the host, copied back
    "fused DIS prior, network at 1/2": {"motion_prior": "dis_fused_still", "network_scale": 2},
    "quadratic DIS prior, network at 1/2": {"motion_prior": "dis_quadratic", "network_scale": 2},  # 4-channel motion
}


@torch.no_grad()
def check_packed_engine(args, scratch):
    device = torch.device(args.device)
    if device.type == "cuda":
        exact_float32_on_cuda()  # as the scripts run a model on a GPU: no TF32 in the simulated model's convolutions
    size = args.sizes["size"]
    differences = {}
    for name, layout in PACKED_LAYOUTS.items():
        torch.manual_seed(0)
        model = build_model({"arch": "binary", "base_channels": args.sizes["width"], "head": "warp", **layout},
                            log_summary=False).eval()
        for module in model.modules():  # BatchNorm statistics of a trained model, not the initial 0 / 1
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        torch.nn.init.normal_(model.outconv[1].weight, std=0.01)  # a head that moves the flows: they are checked too
        model.to(device)  # before binarizing: BinOp's binarized weights are plain attributes, which .to() leaves
        BinOp(model).binarization()
        packed = pack_binary_model(model).to(device)
        frames = [torch.rand(1, 3, size, size + 16, device=device) for _ in range(4)]
        differences[name] = max(float((a - b).abs().max()) for a, b in zip(packed(frames), model(frames)))
    worst = max(differences.values())
    detail = ", ".join(f"{name}: largest difference {value:.2e}" for name, value in differences.items())
    return ("ok" if worst <= 1e-4 else "FAILED"), f"{detail} (at most 1e-4)", \
        {"max_difference": worst, "max_difference_per_layout": differences}


def check_ddp(args, scratch):
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        return "skipped", f"{torch.cuda.device_count()} GPU: DDP over NCCL needs 2 or more", {}
    root, runs = fixture(args, scratch), Path(scratch) / "ddp_runs"
    batch = 2 * args.sizes["batch"]
    records = {name: Path(scratch) / f"record_{name}" for name in ("one", "two")}
    # float32, one step: the two runs differ only by the order of sums, which later steps would amplify (a
    # latent weight near 0 takes another sign, and then its layer's outputs differ)
    exact = ["--amp", "none", "--max_steps_per_epoch", 1, "--max_epoch", 1, "--debug_record"]
    code, output = run([sys.executable, "main_bin.py", *training_options(args, root, runs, "one", batch),
                        *exact, records["one"]], args, LIMITS["script"])
    if code != 0:
        return "FAILED", f"one process exited with {code}: {output.strip()[-1500:]}", {}
    code, output = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "main_bin_ddp.py", *training_options(args, root, runs, "two", batch), *exact, records["two"]],
                       args, LIMITS["script"])
    if code != 0:
        return "FAILED", f"torchrun exited with {code}: {output.strip()[-1500:]}", {}
    return compare_ddp_records(records)


def compare_ddp_records(records):
    """Two ranks' samples (disjoint, together the one-process run's) and weights (the same on both ranks,
    close to the one-process run's)."""
    one = json.loads((records["one"] / "samples_rank0.json").read_text())["epochs"]
    ranks = [json.loads((records["two"] / f"samples_rank{r}.json").read_text())["epochs"] for r in (0, 1)]
    for epoch, steps in one.items():
        for step, batch in enumerate(steps):
            halves = [set(rank[epoch][step]) for rank in ranks]
            if halves[0] & halves[1] or sorted(halves[0] | halves[1]) != sorted(batch):
                return "FAILED", f"epoch {epoch}, step {step + 1}: the ranks' samples are not the one process's", {}
    weights = [torch.load(records["two"] / f"weights_rank{r}.pth", map_location="cpu", weights_only=True) for r in (0, 1)]
    single = torch.load(records["one"] / "weights_rank0.pth", map_location="cpu", weights_only=True)
    if any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0]):
        return "FAILED", "the two ranks end with different weights", {}
    difference = torch.cat([(weights[0][k].float() - single[k].float()).abs().flatten() for k in single
                            if single[k].is_floating_point()])
    apart = float((difference > 1e-5).float().mean())  # GPU reductions are not bit-reproducible
    detail = (f"each step's samples split between the ranks; weights from one process's: largest difference "
              f"{float(difference.max()):.2e}, {100 * apart:.2f}% apart by more than 1e-5 (at most 1%)")
    return ("ok" if apart <= 0.01 else "FAILED"), detail, {"max_weight_difference": float(difference.max()),
                                                           "fraction_apart": apart}


CHECKS = {"cuda tests": check_cuda_tests, "training steps": check_training_steps, "run": check_training_run,
          "host flows": check_host_flows, "packed engine": check_packed_engine, "ddp": check_ddp}


def main(argv=None):
    args = parse_args(argv)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"gpu_check on {device}, torch {torch.__version__}{' (smoke)' if args.smoke else ''}", flush=True)
    outcomes = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, check in CHECKS.items():
            started = time.perf_counter()
            try:
                seconds_left(args, 0)  # OutOfTime once the deadline has passed
                status, detail, figures = check(args, scratch)
            except OutOfTime as error:
                status, detail, figures = "skipped", str(error), {}
            except (Exception, SystemExit) as error:  # a check that crashes fails; the others still run
                status, detail, figures = "FAILED", f"{type(error).__name__}: {error}", {}
            seconds = time.perf_counter() - started
            outcomes[name] = {"status": status, "detail": detail, "figures": figures, "seconds": seconds}
            print(f"{name} ({seconds:.0f} s): {status}{': ' if detail else ''}{detail}", flush=True)
            if args.json:
                report = json.dumps({"device": device, "torch": torch.__version__, "smoke": args.smoke,
                                     "checks": outcomes}, indent=1)
                write_atomically(args.json, lambda handle: handle.write(report.encode("utf-8")))
    failed = [name for name, outcome in outcomes.items() if outcome["status"] == "FAILED"]
    print(f"{len(failed)} check(s) failed" + (f": {', '.join(failed)}" if failed else ""))
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
