"""requirements.txt asks for the oldest PyTorch that has every feature the code relies on, and the
scripts refuse an older one in one line."""
import os
import re

import pytest
import torch

from cli import TORCH_FLOOR, check_torch_version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A feature, the PyTorch release that introduced it, a call that uses it, and what the code writes to use it.
FEATURES = {
    "device-generic autocast queries": ((2, 4), lambda: (torch.get_autocast_dtype("cpu"), torch.is_autocast_enabled("cpu")),
                                        "get_autocast_dtype(device)"),
    "torch.amp.GradScaler for any device": ((2, 3), lambda: torch.amp.GradScaler("cpu", enabled=False),
                                            "torch.amp.GradScaler("),
    "loading checkpoints without pickle": ((1, 13), lambda: None, "weights_only=True"),
}


def code_text():
    text = []
    for folder, _, names in os.walk(REPO):
        if "/." in folder or "/tests" in folder:
            continue
        text += [open(os.path.join(folder, n), encoding="utf-8").read() for n in names if n.endswith(".py")]
    return "\n".join(text)


def test_requirements_ask_for_the_torch_that_has_every_feature_the_code_uses():
    requirements = open(os.path.join(REPO, "requirements.txt"), encoding="utf-8").read()
    floor = tuple(int(v) for v in re.search(r"^torch>=(\d+)\.(\d+)", requirements, re.M).groups())
    assert floor == TORCH_FLOOR == max(version for version, _, _ in FEATURES.values())
    code = code_text()
    for name, (_, use, spelled) in FEATURES.items():
        use()  # present in the installed torch
        assert spelled in code, f"{name}: no longer used, its version need not set the floor"


def test_an_older_torch_is_refused_in_one_line():
    check_torch_version("2.4.0") and check_torch_version("2.14.1+cu130")
    with pytest.raises(ValueError, match=r"PyTorch 2.3.1 is older than 2.4.*pip install") as error:
        check_torch_version("2.3.1")
    assert "\n" not in str(error.value)
