"""``--debug_record DIR``: evidence of what each process trained on, for checking data sharding.

Every process writes ``DIR/samples_rank<R>.json`` (``{"rank", "world_size", "epochs": {epoch: [[sample
ids of step 1], ...]}}``) after every epoch and ``DIR/weights_rank<R>.pth`` (its model's latent state
dict) at the end of every epoch, so the ranks' shards and final models can be compared.
"""
import json
import os

import torch


class SampleRecorder:
    """``--debug_record DIR``: the sample ids of every step of this rank, and its final weights."""

    def __init__(self, folder, rank):
        self.samples_path = os.path.join(folder, f"samples_rank{rank}.json")
        self.weights_path = os.path.join(folder, f"weights_rank{rank}.pth")
        for path in (self.samples_path, self.weights_path):
            if os.path.exists(path):
                raise ValueError(f"{path} exists: give --debug_record an empty folder")
        os.makedirs(folder, exist_ok=True)
        self.rank = rank
        self.epochs = {}

    def record(self, epoch, sample_ids):
        self.epochs.setdefault(str(epoch), []).append(list(sample_ids))

    def write(self, model, world_size):
        with open(self.samples_path, "w", encoding="utf-8") as handle:
            json.dump({"rank": self.rank, "world_size": world_size, "epochs": self.epochs}, handle, indent=1)
        torch.save(model.state_dict(), self.weights_path)
