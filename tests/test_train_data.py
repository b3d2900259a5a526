"""Stage two without training: loading the cache, temporal sampling, batches, balancing, splits."""

import numpy as np
import pytest

from framecache.common.cache import CacheWriter
from framecache.common.errors import FramecacheError
from framecache.common.options import option_name
from framecache.train.data import SequenceBatches, load_cache, pad_sequences
from framecache.train.fit import class_weights
from framecache.train.sampling import time_steps
from framecache.train.splits import group_ids, make_folds, make_split
from framecache.train.synthetic import synthetic_provenance, write_synthetic_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "features.h5", videos=36, feature_dim=8, views=3, subjects=9)


# ---- loading ----------------------------------------------------------------------------------


def test_load_cache_keeps_float16_and_every_view(cache):
    data = load_cache(cache)
    assert data.num_videos == 36 and data.classes == ["class0", "class1", "class2"]
    assert all(video.dtype == np.float16 and video.shape[0] == 3 and video.shape[2] == 8 for video in data.features)
    assert np.bincount(data.labels).tolist() == [12, 12, 12]
    assert data.groups[0].startswith("s") and data.weights == "imagenet"


def test_empty_cache_is_refused(tmp_path):
    path = tmp_path / "empty.h5"
    with CacheWriter(path, synthetic_provenance(8, 1)) as writer:
        writer.add_failure("broken.mp4", "a", "not a video")
    with pytest.raises(FramecacheError, match="holds no videos; 1 video"):
        load_cache(path)


def test_one_class_cache_is_refused(tmp_path):
    path = tmp_path / "one.h5"
    with CacheWriter(path, synthetic_provenance(8, 1)) as writer:
        for index in range(4):
            writer.add_video(f"v{index}.mp4", "squat", np.ones((1, 5, 8)))
    with pytest.raises(FramecacheError, match="single class"):
        load_cache(path)


# ---- temporal sampling, padding, batches -----------------------------------------------------


def test_evaluation_sampling_spans_the_whole_video():
    indices = time_steps(100, max_len=10, frame_step=1)
    assert len(indices) == 10 and indices[0] < 10 and indices[-1] >= 90
    assert np.all(np.diff(indices) > 0)
    assert np.array_equal(indices, time_steps(100, 10, 1)), "evaluation sampling is fixed"
    assert np.array_equal(time_steps(7, 10, 1), np.arange(7)), "a short video keeps every frame"
    assert np.array_equal(time_steps(9, 10, 2), [0, 2, 4, 6, 8])


def test_training_sampling_is_random_but_valid():
    rng = np.random.default_rng(0)
    draws = [time_steps(100, 10, 3, rng) for _ in range(20)]
    assert len({tuple(draw) for draw in draws}) > 1
    for draw in draws:
        assert len(draw) == 10 and np.all(np.diff(draw) > 0) and draw.min() >= 0 and draw.max() < 100
    offsets = {int(time_steps(6, 10, 3, rng)[0]) for _ in range(30)}
    assert offsets == {0, 1, 2}, "the stride offset is drawn per epoch"
    assert time_steps(1, 10, 4, rng).tolist() == [0]


def test_pad_sequences_masks_the_padding():
    batch, mask = pad_sequences([np.ones((3, 2), np.float16), np.ones((1, 2), np.float16)], length=4)
    assert batch.dtype == np.float32 and batch.shape == (2, 4, 2)
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert batch[1, 1:].sum() == 0


def test_evaluation_batches_use_the_clean_view(cache):
    data = load_cache(cache)
    batches = SequenceBatches(data.features, data.labels, np.arange(5), max_len=1000, frame_step=1, batch_size=2)
    (inputs, mask), labels = batches[0]
    length = data.features[0].shape[1]
    assert np.array_equal(inputs[0, :length], data.features[0][0].astype(np.float32))
    assert mask[0].sum() == length and labels.tolist() == data.labels[:2].tolist()
    assert len(batches) == 3 and len(batches[2][1]) == 1


def test_batches_without_labels_and_of_another_view(cache):
    """predict and load_features: the same inputs without labels; any cached view instead of the clean one."""
    data = load_cache(cache)
    labelled = SequenceBatches(data.features, data.labels, np.arange(5), max_len=8, frame_step=1, batch_size=5)[0]
    (unlabelled,) = SequenceBatches(data.features, None, np.arange(5), max_len=8, frame_step=1, batch_size=5)[0]
    assert all(np.array_equal(first, second) for first, second in zip(labelled[0], unlabelled))
    ((inputs, mask),) = SequenceBatches(data.features, None, np.arange(5), max_len=None, frame_step=1, batch_size=5, view=2)[0]
    length = data.features[0].shape[1]
    assert np.array_equal(inputs[0, :length], data.features[0][2].astype(np.float32)) and mask[0].sum() == length


def test_training_batches_draw_views_frames_and_order_each_epoch(cache):
    data = load_cache(cache)
    batches = SequenceBatches(data.features, data.labels, np.arange(36), max_len=8, frame_step=2, batch_size=36, train=True, seed=1)
    first = (batches.order.copy(), list(batches.views))
    batches.on_epoch_end()
    assert not np.array_equal(first[0], batches.order) or first[1] != batches.views
    assert set(batches.views) == {0, 1, 2}, "every cached view is used"
    (inputs, mask), labels = batches[0]
    assert inputs.shape == (36, 8, 8) and mask.sum(axis=1).max() <= 8
    assert np.array_equal(labels, data.labels[batches.order])


def test_oversampling_balances_every_epoch():
    features = [np.zeros((1, 3, 2), np.float16) for _ in range(12)]
    labels = np.array([0] * 9 + [1] * 3)
    batches = SequenceBatches(features, labels, np.arange(12), 4, 1, batch_size=4, train=True, oversample=True, seed=0)
    for _ in range(3):
        assert np.bincount(labels[batches.order]).tolist() == [9, 9]
        assert set(batches.order[labels[batches.order] == 1]) == {9, 10, 11}
        batches.on_epoch_end()


def test_class_weights_are_inverse_to_class_size():
    weights = class_weights(np.array([0] * 6 + [1] * 2 + [2] * 4), 3)
    assert weights == pytest.approx({0: 12 / 18, 1: 12 / 6, 2: 12 / 12})


# ---- splits -------------------------------------------------------------------------------


def split_inputs(videos=60, classes=3, subjects=12, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([f"c{index % classes}" for index in range(videos)], dtype=object)
    groups = np.array([f"s{index}" for index in rng.integers(0, subjects, size=videos)], dtype=object)
    return labels, groups


@pytest.mark.parametrize("seed", range(5))
def test_group_split_never_leaks_a_subject(seed):
    labels, groups = split_inputs(seed=seed)
    split = make_split(labels, groups, [None] * len(labels), 0.2, 0.2, seed)
    assert split.method == "group"
    parts = [set(groups[indices]) for indices in split.parts().values()]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert sorted(np.concatenate(list(split.parts().values()))) == list(range(len(labels)))
    assert set(labels[split.train]) == set(labels), "every class is in train"
    sizes = split.sizes(groups)
    assert sum(size["groups"] for size in sizes.values()) == len(set(groups))


def test_stratified_split_keeps_class_proportions():
    labels = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10, dtype=object)
    split = make_split(labels, None, [None] * 100, 0.2, 0.2, seed=3)
    assert split.method == "stratified"
    assert split.sizes(None)["test"] == {"videos": 20, "groups": None}
    for indices in split.parts().values():
        shares = np.array([np.mean(labels[indices] == name) for name in "abc"])
        assert np.allclose(shares, [0.6, 0.3, 0.1], atol=0.04)


def test_csv_split_column_wins():
    labels = np.array(["a", "b"] * 5, dtype=object)
    csv = ["train"] * 6 + ["val", "val", "test", "test"]
    split = make_split(labels, None, csv, 0.2, 0.2, seed=0)
    assert split.method == "csv" and split.test.tolist() == [8, 9] and split.val.tolist() == [6, 7]
    assert make_split(labels, None, csv, 0.2, 0.2, seed=0, ignore_csv=True).method == "stratified"
    with pytest.raises(FramecacheError, match="no value in the CSV's split column"):
        make_split(labels, None, csv[:-1] + [None], 0.2, 0.2, seed=0)
    with pytest.raises(FramecacheError, match=r"no video of class\(es\) \['b'\] in 'train'"):
        make_split(labels, None, ["test" if label == "b" else "train" for label in labels], 0.2, 0.2, seed=0)


def test_too_few_groups_says_what_to_do():
    labels = np.array(["a", "b"] * 6, dtype=object)
    groups = np.array(["s1", "s2", "s3"] * 4, dtype=object)
    with pytest.raises(FramecacheError, match="needs at least 5 subjects .groups.; there are 3") as error:
        make_split(labels, groups, [None] * 12, 0.2, 0.2, seed=0)
    assert f"Pass {option_name('test_fraction', 0.34)} (one part in 3) or more" in str(error.value)  # a larger share: fewer parts
    make_split(labels, groups, [None] * 12, 0.34, 0.34, seed=0)  # which works (validation: 1 of the 2 subjects left)


def test_a_class_held_by_one_subject_is_kept_in_train():
    labels = np.array(["a"] * 20 + ["rare"] * 3, dtype=object)
    groups = np.array([f"s{index % 10}" for index in range(20)] + ["s_rare"] * 3, dtype=object)
    for seed in range(5):
        split = make_split(labels, groups, [None] * 23, 0.2, 0.2, seed)
        assert set(split.train) >= {20, 21, 22}


def test_videos_without_a_group_are_their_own_subject():
    ids = group_ids(["s1", None, "s1", None])
    assert ids[0] == ids[2] and ids[1] != ids[3]
    assert group_ids([None, None]) is None


def test_folds_cover_every_video_once_without_leaks():
    labels, groups = split_inputs(videos=48, subjects=10)
    folds = make_folds(labels, groups, 4, 0.2, seed=0)
    tests = np.concatenate([fold.test for fold in folds])
    assert sorted(tests) == list(range(48))
    for fold in folds:
        assert not set(groups[fold.train]) & set(groups[fold.test])
        assert not set(groups[fold.val]) & (set(groups[fold.test]) | set(groups[fold.train]))
        assert set(labels[fold.train]) == set(labels)
    with pytest.raises(FramecacheError, match="needs at least 20 subjects"):
        make_folds(labels, groups, 20, 0.2, seed=0)


# ---- classes too small to split: refused before scikit-learn, naming the class -----------------

FOUR_EACH = np.array(["jack", "squat", "lunge"] * 4, dtype=object)  # 4 videos per class: fewer than 5 parts
ONE_SUBJECT_EACH = np.array([f"s{index}" for index in range(12)], dtype=object)


@pytest.mark.parametrize("groups", [None, ONE_SUBJECT_EACH], ids=["videos", "groups"])
def test_cross_validation_with_classes_smaller_than_k_names_them(groups):
    # scikit-learn: "n_splits=5 cannot be greater than the number of members in each class."
    with pytest.raises(FramecacheError) as error:
        make_folds(FOUR_EACH, groups, 5, 0.2, seed=0)
    message = str(error.value)
    assert "n_splits" not in message and "members" not in message
    assert "'jack' (4 videos" in message and "at least 5 videos" in message
    assert ("4 subjects" in message) == (groups is not None)
    assert f"Pass {option_name('cv', 4)} or less" in message
    assert len(make_folds(FOUR_EACH, groups, 4, 0.25, seed=0)) == 4  # which works (validation: one part in 3 of the rest)


@pytest.mark.parametrize("groups", [None, ONE_SUBJECT_EACH], ids=["videos", "groups"])
def test_single_split_with_classes_smaller_than_its_parts_names_them(groups):
    # test_fraction 0.2 is one part in 5; scikit-learn refused it with the same raw error
    with pytest.raises(FramecacheError) as error:
        make_split(FOUR_EACH, groups, [None] * 12, 0.2, 0.2, seed=0)
    message = str(error.value)
    assert "n_splits" not in message and message.startswith("cannot hold out a test part")
    assert "'lunge' (4 videos" in message and f"Pass {option_name('test_fraction', 0.25)} (one part in 4) or more" in message
    make_split(FOUR_EACH, groups, [None] * 12, 0.25, 0.25, seed=0)  # the advice works (validation too: 0.25 of 0.75 left)


def test_validation_part_too_fine_names_its_own_option():
    labels = np.array(["a", "b", "c"] * 5, dtype=object)
    with pytest.raises(FramecacheError, match="cannot hold out a validation part") as error:
        make_split(labels, None, [None] * 15, 0.1, 0.2, seed=0)  # 0.1 of all = one part in 8 of the 12 left
    assert f"Pass {option_name('val_fraction', 0.2)} (one part in 4) or more" in str(error.value)
    make_split(labels, None, [None] * 15, 0.2, 0.2, seed=0)


@pytest.mark.parametrize("groups", [None, np.array([f"s{index % 10}" for index in range(10)] + ["rare"] * 3, dtype=object)],
                         ids=["videos", "groups"])
def test_cross_validation_refuses_a_class_of_one_video_or_subject(groups):
    labels = np.array(["a"] * 10 + ["rare"] * 3, dtype=object)
    if groups is None:
        labels = labels[:11]  # one 'rare' video
    with pytest.raises(FramecacheError) as error:
        make_folds(labels, groups, 3, 0.2, seed=0)
    message = str(error.value)
    expected = "'rare' (3 videos, 1 subject)" if groups is not None else "'rare' (1 video)"
    assert expected in message and option_name("cv", 0) in message and "smaller" not in message  # no K helps


def test_a_hold_out_that_takes_a_whole_class_names_it():
    labels = np.array([f"c{index}" for index in range(5)] * 6, dtype=object)
    groups = np.array([f"s{index}" for index in range(5)] * 6, dtype=object)  # each class is one subject
    with pytest.raises(FramecacheError, match=r"keep every class in training.*'c0' \(6 videos, 1 subject\)"):
        make_split(labels, groups, [None] * 30, 0.2, 0.2, seed=0)


def test_no_small_dataset_reaches_scikit_learns_own_errors():
    """Every tiny dataset either splits, every class in training, or is refused with a FramecacheError of ours."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        classes = int(rng.integers(1, 4))
        labels = np.array([f"c{code}" for code in rng.integers(0, classes, size=int(rng.integers(2, 14)))], dtype=object)
        groups = None if trial % 2 else np.array([f"s{subject}" for subject in rng.integers(0, 6, size=len(labels))], dtype=object)
        try:
            if trial % 3 == 0:
                splits = make_folds(labels, groups, int(rng.integers(2, 6)), 0.2, seed=trial)
            else:
                fractions = rng.choice([0.1, 0.2, 0.25, 0.34]), rng.choice([0.1, 0.2, 0.3])
                splits = [make_split(labels, groups, [None] * len(labels), *fractions, seed=trial)]
        except FramecacheError as error:
            assert "n_splits" not in str(error) and "cannot split" not in str(error), (trial, str(error))
            continue
        for split in splits:
            assert set(labels[split.train]) == set(labels)
