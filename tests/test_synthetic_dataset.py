"""The synthetic data set renders reproducible clips of smooth, consistent motion from still
pictures: scikit-image's by default, or a folder of the user's."""
import time

import cv2
import numpy as np
import pytest
import torch

from dataset import DATASETS, DatasetError, get_dataset, get_loader
from dataset.synthetic import Camera, Path, Scene, frame_times, pyramid, render
from dataset.windows import WindowLayout
from tests.fixtures import textured_image, write_png


def _equal_samples(first, second):
    """Whether two ``(inputs, targets)`` samples hold equal tensors."""
    return all(torch.equal(a, b) for frames, others in zip(first, second) for a, b in zip(frames, others))


def test_synthetic_is_registered_and_needs_no_data_root():
    assert "synthetic" in DATASETS
    train, val = get_dataset("synthetic", "train"), get_dataset("synthetic", "val")
    assert len(train) == 4096 and len(val) == len(get_dataset("synthetic", "test")) == 64
    assert train.sample_id(123) == "synthetic/000123" and "scikit-image" in train.root
    assert {"astronaut", "chelsea", "coffee", "rocket"} <= set(train.names)


def test_same_seed_epoch_and_index_give_identical_samples_and_another_epoch_differs():
    first, second = get_dataset("synthetic", "train", seed=3), get_dataset("synthetic", "train", seed=3)
    first.set_epoch(2)
    second.set_epoch(2)
    assert all(_equal_samples(first[i], second[i]) for i in (5, 0, 4095))
    second.set_epoch(3)
    assert not any(_equal_samples(first[i], second[i]) for i in range(4))
    assert not _equal_samples(first[0], first[1])


def test_val_samples_are_fixed_whatever_the_epoch_and_differ_from_training():
    val, again, train = (get_dataset("synthetic", split) for split in ("val", "val", "train"))
    again.set_epoch(7)
    assert all(_equal_samples(val[i], again[i]) for i in (0, 63))
    assert not _equal_samples(val[0], get_dataset("synthetic", "train", augment=False)[0])
    assert not _equal_samples(val[0], train[0])


def test_loader_workers_give_the_same_samples_even_after_parallel_opencv_calls():
    batches = []
    for workers in (0, 2):
        loader = get_loader("synthetic", "val", batch_size=32, num_workers=workers)
        loader.timeout = 30 if workers else 0  # a worker hanging in OpenCV fails the test
        cv2.resize(np.zeros((720, 1280, 3), np.uint8), (640, 360), interpolation=cv2.INTER_AREA)
        time.sleep(1)  # OpenCV's thread pool idle at the fork: cv2.setNumThreads(1) used to hang there
        batches.append([targets[0] for _, targets in loader])
    assert len(batches[0]) == 2 and all(torch.equal(a, b) for a, b in zip(*batches))


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_samples_have_the_layout_of_the_interpolation_factor(n_outputs):
    data = get_dataset("synthetic", "train", n_outputs=n_outputs, crop_size=(32, 48))
    inputs, targets = data[0]
    assert len(inputs) == 4 and len(targets) == n_outputs
    assert all(f.shape == (3, 32, 48) and f.dtype == torch.float32 for f in inputs + targets)
    assert get_dataset("synthetic", "val")[0][0][0].shape == (3, 64, 64)


def test_a_folder_of_pictures_is_what_gets_rendered(tmp_path):
    colour = (10, 200, 30)
    write_png(str(tmp_path / "a.png"), np.full((80, 120, 3), colour, np.uint8))
    write_png(str(tmp_path / "b.png"), np.full((50, 40, 3), colour, np.uint8))
    (tmp_path / "notes.txt").write_text("not a picture")
    data = get_dataset("synthetic", "train", tmp_path, augment=False, crop_size=32)
    assert data.names == ["a.png", "b.png"] and data.root == str(tmp_path)
    frames = torch.stack([frame for frames in data[0] for frame in frames])
    assert frames.shape == (5, 3, 32, 32)
    assert torch.equal(frames, torch.tensor(colour).view(1, 3, 1, 1).expand_as(frames) / 255.0)


def test_missing_or_empty_picture_folder_is_one_dataset_error_naming_it(tmp_path):
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(DatasetError, match="synthetic picture folder") as error:
            get_dataset("synthetic", "train", folder)
        assert str(folder) in str(error.value) and "\n" not in str(error.value)


def _blurred_texture(size=(300, 400)):
    return cv2.GaussianBlur(textured_image(size, seed=1), (0, 0), 2.0)


@pytest.mark.parametrize("factor, velocity", [(2, (3.0, -2.0)), (2, (2.5, -1.25)), (4, (1.5, 2.0))])
def test_targets_of_a_pure_translation_lie_on_the_straight_path_between_the_inputs(factor, velocity):
    layout = WindowLayout(4, factor)
    camera = Camera(picture=0, level=0, centre=(200.0, 150.0), zoom=1.0, zoom_rate=0.0, angle=0.0, spin=0.0,
                    path=Path(start=(0.0, 0.0), velocity=velocity, accel=(0.0, 0.0)))
    frames = render(Scene(camera, ()), [pyramid(_blurred_texture())], (64, 64), frame_times(layout))
    before, after, targets = frames[1].astype(np.float32), frames[2].astype(np.float32), frames[4:]
    interior = (slice(8, -8), slice(8, -8))
    for step, target in enumerate(targets, 1):  # target[p] = before[p + step v], after[p + (step - f) v]
        for frame, steps in ((before, step), (after, step - factor)):
            shift = np.float32([[1, 0, steps * velocity[0]], [0, 1, steps * velocity[1]]])
            expected = cv2.warpAffine(frame, shift, (64, 64), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            error = np.abs(target[interior] - expected[interior])
            assert error.mean() < 1 and error.max() <= 4  # grey levels of 255: bilinear resampling
        assert np.abs(target[interior] - before[interior]).mean() > 5  # it did move
