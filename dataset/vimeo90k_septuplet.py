"""Vimeo-90K septuplet: ``ROOT/sequences/<5 digits>/<4 digits>/im1.png .. im7.png`` (448x256)
listed in ``ROOT/sep_trainlist.txt`` and ``ROOT/sep_testlist.txt``.

Inputs are the frames named by ``input_frames`` (default "1357"); targets are the frames strictly
between the middle two inputs (im4 for "1357"). 'val' reads the test list, as FLAVR did."""
import os

from .base import InterpolationDataset
from .errors import DatasetError, require_data_root, require_file
from .image_io import read_rgb

NAME = "vimeo90K_septuplet"
LIST_FILES = {"train": "sep_trainlist.txt", "val": "sep_testlist.txt", "test": "sep_testlist.txt"}


def parse_input_frames(input_frames, n_inputs, n_outputs):
    """``"1357"`` -> input frame numbers (1, 3, 5, 7) and target numbers (4,); DatasetError when the
    string is not ``n_inputs`` increasing digits 1-7 with ``n_outputs`` frames between the middle two."""
    if not (input_frames.isdigit() and len(input_frames) == n_inputs and set(input_frames) <= set("1234567")
            and list(input_frames) == sorted(set(input_frames))):
        raise DatasetError(f"input_frames must be {n_inputs} increasing digits from 1-7 (e.g. '1357'), "
                           f"got '{input_frames}'")
    inputs = tuple(int(c) for c in input_frames)
    middle = n_inputs // 2
    targets = tuple(range(inputs[middle - 1] + 1, inputs[middle]))
    if len(targets) != n_outputs:
        raise DatasetError(f"input_frames '{input_frames}' leaves {len(targets)} target frame(s) between "
                           f"im{inputs[middle - 1]} and im{inputs[middle]}, but n_outputs={n_outputs}")
    return inputs, targets


def read_sequence_list(list_path):
    """Sequence ids (``"00001/0001"``) from a list file, skipping blank lines; DatasetError if none."""
    with open(require_file(list_path, "Vimeo-90K list file")) as handle:
        ids = [line.strip() for line in handle if line.strip()]
    if not ids:
        raise DatasetError(f"Vimeo-90K list file is empty: {list_path}")
    return ids


def require_listed_sequences(folder, sequence_ids):
    """DatasetError naming the first listed sequence that is not a folder under ``folder``. One listing
    per top-level folder (96 for Vimeo-90K), not a check of every file: on a network file system,
    ~390k ``stat`` calls on every process would make the start slow. Frames are checked as they are
    read (``--skip_unreadable`` skips unreadable ones)."""
    present = {}
    for sequence_id in sequence_ids:
        top, _, name = sequence_id.partition("/")
        if top not in present:
            path = os.path.join(folder, top)
            present[top] = set(os.listdir(path)) if os.path.isdir(path) else set()
        if name not in present[top]:
            raise DatasetError(f"Vimeo-90K listed sequence folder not found: {os.path.join(folder, sequence_id)} "
                               f"(is the data root right?)")
    return sequence_ids


class Vimeo90KSeptuplet(InterpolationDataset):
    """Septuplets of the list for ``split``; ``sample_id`` is the sequence id, e.g. ``"00001/0001"``."""

    def __init__(self, root, split, *, input_ids, target_ids, crop_hw, augment, seed):
        super().__init__(root=root, crop_hw=crop_hw, augment=augment, seed=seed)
        self.input_ids, self.target_ids = input_ids, target_ids
        self.sequence_ids = read_sequence_list(os.path.join(root, LIST_FILES[split]))
        require_listed_sequences(os.path.join(root, "sequences"), self.sequence_ids)
        self.check_first_sample()

    def _frame_path(self, sequence_id, number):
        return os.path.join(self.root, "sequences", sequence_id, f"im{number}.png")

    def __len__(self):
        return len(self.sequence_ids)

    def sample_id(self, index):
        return self.sequence_ids[index]

    def load_frames(self, index):
        sequence_id = self.sequence_ids[index]
        inputs = [read_rgb(self._frame_path(sequence_id, n)) for n in self.input_ids]
        targets = [read_rgb(self._frame_path(sequence_id, n)) for n in self.target_ids]
        return inputs, targets


def build(split, data_root, options):
    """Vimeo-90K septuplet for ``split``; test and val use full frames unless ``crop_size`` is set."""
    root = require_data_root(NAME, data_root)
    input_ids, target_ids = parse_input_frames(options.input_frames, options.n_inputs, options.n_outputs)
    return Vimeo90KSeptuplet(root, split, input_ids=input_ids, target_ids=target_ids,
                             crop_hw=options.crop_for(test_default=None), augment=options.augment,
                             seed=options.seed)
