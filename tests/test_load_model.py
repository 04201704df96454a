"""One loader for every model file: our checkpoints, FLAVR release checkpoints, bad files."""
import os

import pytest
import torch

from cli import select_device
from engine import PackedFLAVR, read_packed, write_packed
from export_packed import export
from fixtures import run_repo_script, write_video
from model import build_model
from model.files import ModelFileError, make_checkpoint, read_checkpoint, save_checkpoint
from model_loader import load_model
from util import BinOp


def frames(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, 16, 24, generator=g) for _ in range(4)]


def test_flavr_release_checkpoint_loads_and_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    fp = build_model({"arch": "flavr", "n_outputs": 3, "base_channels": 8}, log_summary=False).eval()
    path = tmp_path / "FLAVR_4x.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in fp.state_dict().items()}, "epoch": 7}, path)
    loaded, description = load_model(str(path), "cpu", n_outputs=3)
    assert loaded.config["arch"] == "flavr" and loaded.config["n_outputs"] == 3
    assert "4x" in description and not loaded.training
    with torch.no_grad():
        for a, b in zip(loaded(frames()), fp(frames())):
            assert torch.equal(a, b)


def test_binary_checkpoint_loads_binarized_and_equals_the_model_in_eval(tmp_path):
    torch.manual_seed(0)
    model = build_model({"arch": "binary", "base_channels": 8}, log_summary=False)
    path = tmp_path / "model_best.pth"
    save_checkpoint(make_checkpoint(model, epoch=2), str(path))
    loaded, description = load_model(str(path))
    assert "binary" in description and "epoch 2" in description
    binop = BinOp(model)
    model.eval()
    with torch.no_grad(), binop.binarized():
        expected = model(frames(1))
        actual = loaded(frames(1))
    assert torch.equal(actual[0], expected[0])


def test_a_checkpoint_saved_before_bicubic_warping_existed_keeps_bilinear_warping_and_its_whole_prior(tmp_path):
    torch.manual_seed(0)
    model = build_model({"arch": "binary", "base_channels": 8, "head": "warp", "motion_prior": "matching"},
                        log_summary=False)
    checkpoint = make_checkpoint(model)
    for key in ("warp_interpolation", "prior_dead_zone"):  # what a checkpoint of 2026-12-06 and before holds
        del checkpoint["config"][key]
    path = tmp_path / "older.pth"
    save_checkpoint(checkpoint, str(path))
    loaded, description = load_model(str(path))
    assert (loaded.warp_interpolation, loaded.prior_dead_zone) == ("bilinear", 0.0) and "bicubic" not in description


def test_binary_checkpoint_runs_on_the_packed_engine_with_the_simulated_outputs(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model_best.pth"
    save_checkpoint(make_checkpoint(build_model({"arch": "binary", "base_channels": 8}, log_summary=False)), str(path))
    simulated, _ = load_model(str(path), "cpu", engine="simulated")
    for engine in ("auto", "packed"):
        packed, description = load_model(str(path), "cpu", engine=engine)
        assert isinstance(packed, PackedFLAVR) and "packed 1-bit on load (" in description
        with torch.no_grad():
            assert torch.allclose(packed(frames(2))[0], simulated(frames(2))[0], atol=1e-4)


def test_an_engine_that_cannot_run_the_model_is_a_clear_error(tmp_path):
    fp, binary = tmp_path / "fp.pth", tmp_path / "binary.pth"
    save_checkpoint(make_checkpoint(build_model({"arch": "flavr", "base_channels": 8}, log_summary=False)), str(fp))
    save_checkpoint(make_checkpoint(build_model({"arch": "binary", "base_channels": 8}, log_summary=False)), str(binary))
    assert load_model(str(fp), "cpu", engine="auto")[0].config["arch"] == "flavr"
    with pytest.raises(ModelFileError, match="full-precision model: --engine packed runs binary models only"):
        load_model(str(fp), "cpu", engine="packed")
    with pytest.raises(ModelFileError, match="unknown engine 'xnor'"):
        load_model(str(binary), "cpu", engine="xnor")
    packed_file = tmp_path / "binary.bfl"
    export(str(binary), str(packed_file))
    with pytest.raises(ModelFileError, match="binary.bfl is a packed model, which runs on the packed engine only"):
        load_model(str(packed_file), "cpu", engine="simulated")


def test_a_packed_model_runs_on_the_cpu_and_asking_for_cuda_is_one_line(tmp_path):
    """The packed engine is CPU-only: without --cuda a .bfl (or --engine packed) gets the CPU (where a GPU
    is present too: the CUDA test below); --cuda True is refused in one line by the scripts, a GPU device
    by the loader."""
    binary, packed_file = tmp_path / "binary.pth", tmp_path / "binary.bfl"
    save_checkpoint(make_checkpoint(build_model({"arch": "binary", "base_channels": 8}, log_summary=False)), str(binary))
    export(str(binary), str(packed_file))
    assert select_device(None, str(packed_file)) == torch.device("cpu")
    assert select_device(None, str(binary), "packed") == torch.device("cpu")
    with pytest.raises(ValueError, match="binary.bfl is a packed model, which runs on the CPU only"):
        select_device(True, str(packed_file))
    with pytest.raises(ValueError, match="--engine packed runs on the CPU only"):
        select_device(True, str(binary), "packed")
    with pytest.raises(ValueError, match="binary.bfl is a packed model"):  # not "--engine auto": it cannot be simulated
        select_device(True, str(packed_file), "packed")
    with pytest.raises(ModelFileError, match="binary.bfl is a packed model, which runs on the CPU only"):
        load_model(str(packed_file), "cuda")
    clip = write_video(str(tmp_path / "clip.mp4"), n_frames=4)
    run = run_repo_script("interpolate.py", "--load_model", str(packed_file), "--input_video", clip, "--cuda", "True")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "runs on the CPU only" in run.stderr and "--cuda False" in run.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_chosen_for_a_checkpoint_computes_float32_in_float32_and_a_packed_model_gets_the_cpu(tmp_path):
    binary, packed_file = tmp_path / "binary.pth", tmp_path / "binary.bfl"
    save_checkpoint(make_checkpoint(build_model({"arch": "binary", "base_channels": 8}, log_summary=False)), str(binary))
    export(str(binary), str(packed_file))
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # PyTorch's cuDNN default
    assert select_device(None, str(binary)) == torch.device("cuda")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert select_device(None, str(packed_file)) == select_device(None, str(binary), "packed") == torch.device("cpu")


def test_a_factor_that_contradicts_the_request_is_a_clear_error(tmp_path):
    model = build_model({"arch": "binary", "n_outputs": 7, "base_channels": 8}, log_summary=False)
    path = tmp_path / "eight.pth"
    save_checkpoint(make_checkpoint(model), str(path))
    with pytest.raises(ModelFileError, match="interpolates 8x"):
        load_model(str(path), n_outputs=1)


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_a_file_that_is_no_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="junk.pth"):
        load_model(str(path))


def test_a_state_dict_of_another_network_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ModelFileError, match="not a FLAVR model"):
        load_model(str(path))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(str(tmp_path / "absent.pth"))


def test_save_checkpoint_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "run" / "checkpoint.pth"
    save_checkpoint({"epoch": 1}, str(path))
    save_checkpoint({"epoch": 2}, str(path))
    assert read_checkpoint(str(path))["epoch"] == 2
    assert os.listdir(path.parent) == ["checkpoint.pth"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"epoch": 1}, str(path))
    with pytest.raises(Exception):
        save_checkpoint({"epoch": 2, "bad": lambda: None}, str(path))  # lambdas cannot be pickled
    assert read_checkpoint(str(path))["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_checkpoint_of_a_binarized_model_cannot_be_made():
    model = build_model({"arch": "binary", "base_channels": 8}, log_summary=False)
    binop = BinOp(model)
    with binop.binarized(), pytest.raises(RuntimeError, match="binarized"):
        make_checkpoint(model)


@pytest.mark.parametrize("kind", ["packed", "checkpoint"])
def test_a_configuration_that_contradicts_the_files_tensors_is_one_line_before_anything_is_built(tmp_path, kind):
    """A file anyone can write: a valid checksum, small tensors, and a header saying width 200000 (a
    model of ~135 GB). It is refused from the shapes alone, in one line, by the loader and the scripts."""
    torch.manual_seed(0)
    model = build_model({"arch": "binary", "base_channels": 8}, log_summary=False)
    checkpoint = str(tmp_path / "small.pth")
    save_checkpoint(make_checkpoint(model, epoch=1), checkpoint)
    path = str(tmp_path / ("huge.bfl" if kind == "packed" else "huge.pth"))
    if kind == "packed":
        export(checkpoint, str(tmp_path / "small.bfl"))
        config, tensors, metadata = read_packed(str(tmp_path / "small.bfl"))
        write_packed(path, {**config, "base_channels": 200000}, tensors, metadata)
    else:
        stored = read_checkpoint(checkpoint)
        save_checkpoint({**stored, "config": {**stored["config"], "base_channels": 200000}}, path)
    with pytest.raises(ModelFileError, match=r"do not fit .*width 200000.*in the file") as error:
        load_model(path)
    assert "\n" not in str(error.value)
    clip = write_video(str(tmp_path / "clip.mp4"), n_frames=4)
    run = run_repo_script("interpolate.py", "--load_model", path, "--input_video", clip)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "do not fit" in run.stderr
