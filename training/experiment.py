"""The experiment folder ``<checkpoint_dir>/<exp_name>/`` and what writes into it (``Experiment``: logs,
results, TensorBoard, checkpoints written atomically, only by the main process), and the record of the
samples each process trained on (``--debug_record``, ``SampleRecorder``)."""
import glob
import json
import logging
import os

import torch

from model.files import save_checkpoint


log = logging.getLogger(__name__)


class ExperimentWriteError(RuntimeError):
    """The experiment folder could not be written (full disk, permissions); the message says what
    was kept and what to do."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def experiment_folder(args):
    return os.path.join(args.checkpoint_dir, args.exp_name)


def check_experiment_folder(folder, resume):
    """ValueError when ``folder`` exists and the run is not a resume: never clobber an experiment."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{folder} exists and is not a folder: choose another --exp_name or --checkpoint_dir")
    if os.path.exists(folder) and not resume:
        raise ValueError(f"experiment {folder} already exists: continue it with --resume, "
                         "or start a new one with another --exp_name")


def resume_checkpoint_path(folder, resume):
    """The checkpoint ``--resume`` names: the experiment's latest (``--resume`` alone) or a path."""
    return os.path.join(folder, "checkpoint.pth") if resume == "latest" else resume


class Experiment:
    """Writes the experiment's artefacts (when ``enabled``, i.e. on the main process)."""

    def __init__(self, folder, enabled=True):
        self.folder = folder
        self.enabled = enabled
        self.checkpoint_path = os.path.join(folder, "checkpoint.pth")
        self.best_path = os.path.join(folder, "model_best.pth")
        self.results_path = os.path.join(folder, "results.txt")
        self.log_path = os.path.join(folder, "train.log")
        self.tensorboard_dir = os.path.join(folder, "tensorboard")
        self._log_handler = None
        self._writer = None

    def open(self, args, resumed_epoch=None):
        """Create the folder, start ``train.log``, save the arguments and open TensorBoard (a resumed
        run drops the events logged after ``resumed_epoch``: it continues from there)."""
        if not self.enabled:
            return self
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as error:
            raise ExperimentWriteError(f"cannot create the experiment folder {self.folder}: {error.strerror}; "
                                       "choose a writable --checkpoint_dir") from None
        self._remove_partial_writes()
        self._log_handler = logging.FileHandler(self.log_path, encoding="utf-8")
        self._log_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(self._log_handler)
        name = "args.json" if resumed_epoch is None else f"args_resume_epoch{resumed_epoch}.json"
        self._write_new_file(name, json.dumps(vars(args), indent=2, sort_keys=True) + "\n")
        from torch.utils.tensorboard import SummaryWriter  # slow import: only where events are written
        self._writer = SummaryWriter(self.tensorboard_dir,
                                     purge_step=resumed_epoch + 1 if resumed_epoch is not None else None)
        log.info("experiment folder: %s", self.folder)
        return self

    def _remove_partial_writes(self):
        """Delete the temporary files of checkpoint writes a killed run left (``.tmp-*``)."""
        for path in glob.glob(os.path.join(glob.escape(self.folder), ".tmp-*")):
            os.remove(path)
            log.info("removed %s, a checkpoint write the previous run did not finish", path)

    def _write_new_file(self, name, text):
        """Write ``name`` in the folder, or ``<stem>.<n><ext>`` when it exists (never overwrites)."""
        stem, ext = os.path.splitext(name)
        for n in range(1000):
            path = os.path.join(self.folder, name if n == 0 else f"{stem}.{n}{ext}")
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(text)
                return path
            except FileExistsError:
                continue
        raise ValueError(f"too many {name} files in {self.folder}")

    def scalars(self, values, step):
        """``{tag: float}`` to TensorBoard at ``step`` (the epoch)."""
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, step)

    def images(self, tag, frames, step):
        """``N x 3 x H x W`` frames in [0, 1] to TensorBoard."""
        if self._writer is not None:
            self._writer.add_images(tag, frames.detach().float().cpu().clamp(0, 1), step)

    def append_result(self, line):
        if self.enabled:
            with open(self.results_path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def save(self, checkpoint, path):
        """Write ``checkpoint`` to ``path`` atomically (main process only); ExperimentWriteError, with
        the previous file intact, when it cannot be written."""
        if not self.enabled:
            return
        try:
            save_checkpoint(checkpoint, path)
        except OSError as error:
            kept = f"the previous {os.path.basename(path)} is kept" if os.path.exists(path) else "nothing was saved"
            raise ExperimentWriteError(f"cannot write {path}: {error.strerror or error}; {kept}: free space "
                                       "(or fix the folder's permissions) and continue with --resume") from None

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


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


