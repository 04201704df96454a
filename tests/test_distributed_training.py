"""Several processes mean what they say (gloo on the CPU, one process then two): ``--batch_size`` is
the batch of all processes together, as FLAVR's; binary layers normalise N processes' batches as one;
a run stopped mid-epoch on one process resumes on two with exactly the samples it had not seen, each
later step on the samples one process trains on, to the same weights and learning rates; what cannot
be resumed or shared is refused in one line. (Two processes from the start, against one:
``benchmarks/gpu_check.py --device cpu --smoke``, tests/test_gpu_check.py.)"""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from model.binconv import BinConv3d, batch_norm_backward, batch_norm_forward, synchronize_binary_batch_norms
from tests.fixtures import run_two_processes, write_vimeo
from tests.test_training_survives_a_kill import finish, training_process, wait_for_mid_epoch_checkpoint
from training import main
from training.distributed import Runtime, cuda_index
from training.trainer import StepLosses, check_same_checkpoint, process_batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EPOCHS, BATCH = 4, 2, 2


def options(data_root, checkpoint_dir, exp_name, *extra):
    """A tiny CPU run: ``EPOCHS`` epochs of ``STEPS`` steps of ``BATCH`` samples (all processes together)."""
    return ["--dataset", "vimeo90K_septuplet", "--data_root", str(data_root), "--crop_size", "32",
            "--batch_size", str(BATCH), "--test_batch_size", "2", "--max_steps_per_epoch", str(STEPS),
            "--max_epoch", str(EPOCHS), "--max_val_batches", "1", "--num_workers", "0", "--progress", "False",
            "--cuda", "False", "--base_channels", "8", "--lr_schedule", "cosine", "--checkpoint_dir",
            str(checkpoint_dir), "--exp_name", exp_name, *extra]


def torchrun(arguments, processes=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "main_bin_ddp.py", *arguments]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def recorded_steps(folder, ranks):
    """{epoch: [the samples of each step, all ranks together]} from ``--debug_record`` files."""
    records = [json.loads((folder / f"samples_rank{rank}.json").read_text())["epochs"] for rank in range(ranks)]
    return {epoch: [sorted(s for record in records for s in record[epoch][step])
                    for step in range(len(records[0][epoch]))] for epoch in records[0]}


def epoch_losses(folder):
    """{epoch: the training loss logged for it} from a run's TensorBoard events."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_close_weights(a, b):
    for key, value in a.items():
        if value.is_floating_point():
            torch.testing.assert_close(b[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def vimeo(tmp_path_factory):
    root = tmp_path_factory.mktemp("vimeo")
    write_vimeo(root, n_seqs=STEPS * BATCH)
    return root


@pytest.fixture(scope="module")
def one_process(vimeo, tmp_path_factory):
    """An uninterrupted one-process run: (its folder, its record folder)."""
    folder = tmp_path_factory.mktemp("one")
    finish(training_process(options(vimeo, folder, "run", "--debug_record", str(folder / "record"))))
    return folder / "run", folder / "record"


def _normalise_half(rank, init_file, batch, out_file):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    layer = _layer()
    synchronize_binary_batch_norms(layer)
    half = batch[rank * 2:(rank + 1) * 2].clone().requires_grad_()
    out = layer(half)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    torch.save({"out": out.detach(), "grad": half.grad, "bn_grad": layer.bn.weight.grad,
                "running_var": layer.bn.running_var}, out_file)
    torch.distributed.destroy_process_group()


def _layer():
    torch.manual_seed(0)
    layer = BinConv3d(6, 4, 3, 1, 1).train()
    with torch.no_grad():
        layer.bn.weight.uniform_(0.5, 1.5)
        layer.bn.bias.uniform_(-0.3, 0.3)
    return layer


def test_binary_layers_normalise_two_processes_half_batches_as_one_process_the_whole_batch(tmp_path):
    batch = torch.randn(4, 6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    outputs = [tmp_path / f"rank{rank}.pt" for rank in range(2)]
    run_two_processes(_normalise_half, lambda rank: (tmp_path / "init", batch, outputs[rank]))
    ranks = [torch.load(path, weights_only=True) for path in outputs]

    layer, whole = _layer(), batch.clone().requires_grad_()
    out = layer(whole)
    (out * torch.cat([torch.linspace(-1, 1, out[:2].numel()).view_as(out[:2])] * 2)).sum().backward()
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), whole.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ranks[0]["bn_grad"] + ranks[1]["bn_grad"], layer.bn.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ranks[0]["running_var"], layer.bn.running_var, rtol=1e-5, atol=1e-6)


def peak_new_bytes(profile):
    """The most bytes that the operations ``profile`` recorded (``profile_memory``) held at once."""
    changes = sorted((event.time_range.start, event.cpu_memory_usage if event.name == "[memory]"
                      else event.self_cpu_memory_usage) for event in profile.events())
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


def test_the_synchronized_backward_of_a_low_precision_batch_keeps_at_most_two_float32_copies_of_it(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:  # on GPUs under AMP every binary layer's BatchNorm is synchronized: a bfloat16 batch, one process
        layer = _layer()
        synchronize_binary_batch_norms(layer)
        batch = torch.randn(4, 6, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
        x = batch.to(torch.bfloat16)
        grad_y = torch.linspace(-1, 1, x.numel()).view_as(x).to(torch.bfloat16)
        _, mode, statistics = batch_norm_forward(layer.bn, x)
        assert mode == "synchronized"
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                     profile_memory=True) as profile:
            grad_x, _, _ = batch_norm_backward(layer.bn, grad_y, x, mode, statistics, (True, True, True))
    finally:
        torch.distributed.destroy_process_group()
    assert peak_new_bytes(profile) <= 2 * 4 * x.numel()  # it held five float32 copies before
    reference = x.float().requires_grad_()
    torch.nn.functional.batch_norm(reference, None, None, layer.bn.weight, layer.bn.bias, True).backward(
        grad_y.float())
    torch.testing.assert_close(grad_x.float(), reference.grad, rtol=2e-2, atol=2e-2)  # bfloat16's precision


@pytest.fixture(scope="module")
def stopped_mid_epoch(vimeo, tmp_path_factory):
    """A one-process run killed after a mid-epoch checkpoint: (its checkpoint folder, epoch, step)."""
    folder = tmp_path_factory.mktemp("stopped")
    process = training_process(options(vimeo, folder, "run", "--save_every", "1"))
    epoch, step = wait_for_mid_epoch_checkpoint(str(folder / "run" / "checkpoint.pth"), process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    checkpoint = folder / "run" / "checkpoint.pth"
    (folder / "stopped.pth").write_bytes(checkpoint.read_bytes())  # the tests below resume the run itself
    return folder, load(checkpoint)["epoch"], load(checkpoint)["epoch_step"]


def test_a_run_stopped_mid_epoch_on_one_process_resumes_on_two_with_the_samples_it_had_not_seen(
        vimeo, one_process, stopped_mid_epoch):
    folder, epochs_done, steps_done = stopped_mid_epoch
    assert 0 < steps_done < STEPS
    process = torchrun(options(vimeo, folder, "run", "--resume", "--debug_record", str(folder / "record")))
    assert process.returncode == 0, process.stderr[-3000:]
    resumed, uninterrupted = recorded_steps(folder / "record", 2), recorded_steps(one_process[1], 1)
    epoch = str(epochs_done + 1)
    assert resumed[epoch] == uninterrupted[epoch][steps_done:]  # none repeated, none skipped
    assert all(resumed[e] == uninterrupted[e] for e in resumed if int(e) > epochs_done + 1)
    assert_close_weights(load(one_process[1] / "weights_rank0.pth"), load(folder / "record" / "weights_rank0.pth"))
    rates = [[line.split()[5] for line in (path / "results.txt").read_text().splitlines()]
             for path in (folder / "run", one_process[0])]
    assert rates[0][-1] == rates[1][-1]
    losses = [epoch_losses(path / "tensorboard") for path in (folder / "run", one_process[0])]
    assert losses[0][epochs_done + 1] == pytest.approx(losses[1][epochs_done + 1], rel=1e-4)  # its samples' mean


def test_a_mid_epoch_resume_at_another_batch_size_is_refused_in_one_line(vimeo, stopped_mid_epoch, capsys):
    folder, _, _ = stopped_mid_epoch
    arguments = options(vimeo, folder, "other", "--resume", str(folder / "stopped.pth"))
    arguments[arguments.index("--batch_size") + 1] = str(2 * BATCH)
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"--batch_size {BATCH}" in error and "end of an epoch" in error
    assert not (folder / "other").exists()


def test_a_batch_that_the_processes_cannot_share_evenly_is_one_line():
    assert process_batch(32, 4) == 8 and process_batch(3, 1) == 3
    with pytest.raises(ValueError) as error:
        process_batch(3, 2)
    message = str(error.value)
    assert "--batch_size 3" in message and "multiple of 2" in message and "use 2 or 4" in message
    assert "\n" not in message


def _check_resumed(rank, init_file, cases, out_file):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    runtime, answers = Runtime(device=torch.device("cpu"), rank=rank, world_size=2), []
    for checkpoints in cases:  # (rank 0's, rank 1's)
        try:
            check_same_checkpoint(runtime, checkpoints[rank])
            answers.append("same")
        except ValueError as error:
            answers.append(str(error))
    out_file.write_text(json.dumps(answers))
    torch.distributed.destroy_process_group()


def test_processes_that_read_different_checkpoints_to_resume_are_refused_on_every_rank_in_one_line(tmp_path):
    weights = {"conv.weight": torch.ones(2, 3), "bn.num_batches_tracked": torch.tensor(4)}
    run = {"epoch": 2, "epoch_step": 1, "state_dict": weights}
    stale = {"epoch": 1, "epoch_step": 3, "state_dict": weights}  # an older copy on another node
    retrained = dict(run, state_dict=dict(weights, **{"conv.weight": torch.full((2, 3), 2.0)}))
    cases = [(run, dict(run)), (run, stale), (run, retrained)]
    outputs = [tmp_path / f"rank{rank}.json" for rank in range(2)]
    run_two_processes(_check_resumed, lambda rank: (tmp_path / "init", cases, outputs[rank]))
    answers = [json.loads(path.read_text()) for path in outputs]
    assert answers[0] == answers[1]  # every rank stops, none waits for the others
    same, older, other = answers[0]
    assert same == "same"
    assert "rank 0: epoch 2, step 1; rank 1: epoch 1, step 3" in older and "--checkpoint_dir" in older
    assert "rank 1: epoch 2, step 1, or other weights" in other
    assert "\n" not in older + other


def test_each_process_takes_its_local_ranks_gpu_or_the_one_its_launcher_gave_it_and_too_few_gpus_are_one_line():
    assert [cuda_index(rank, 4) for rank in range(4)] == [0, 1, 2, 3]  # torchrun: every process sees the node's
    srun = dict(torchrun=False)  # srun --gpus-per-task: each process sees its own GPU alone
    assert cuda_index(3, 1, "3", **srun) == 0 and cuda_index(1, 1, "GPU-5d6c", **srun) == 0
    for local_rank, count, visible, launcher in ((1, 1, None, srun), (1, 1, "", srun), (2, 2, "0,1", srun),
                                                 (1, 1, "0", {})):  # torchrun's 2 processes, one GPU
        with pytest.raises(ValueError) as error:
            cuda_index(local_rank, count, visible, **launcher)
        assert "lower --nproc_per_node" in str(error.value) and f"LOCAL_RANK {local_rank}" in str(error.value)


def _sum_losses(rank, init_file, cases, out_file):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    runtime = Runtime(device=torch.device("cpu"), rank=rank, world_size=2)
    out_file.write_text(json.dumps([StepLosses(sums[rank]).state(runtime) for sums in cases]))
    torch.distributed.destroy_process_group()


def test_loss_sums_add_up_over_the_processes_whatever_terms_each_one_holds(tmp_path):
    cases = [({"loss": [1.0, 2]}, {"loss": [3.0, 2]}),
             ({"loss": [1.0, 2], "distill": [0.5, 2]}, {"loss": [3.0, 2]}),  # a term one process has not logged
             ({"loss": [1.0, 2]}, {})]  # resumed with no step left: rank 0 alone holds the saved sums
    outputs = [tmp_path / f"rank{rank}.json" for rank in range(2)]
    run_two_processes(_sum_losses, lambda rank: (tmp_path / "init", cases, outputs[rank]))
    expected = [{"loss": [4.0, 4]}, {"distill": [0.5, 2], "loss": [4.0, 4]}, {"loss": [1.0, 2]}]
    assert [json.loads(path.read_text()) for path in outputs] == [expected, expected]
