"""The baseline beside every result, and the bootstrap intervals beside every figure (no training: fast)."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from framecache.train.baseline import (
    INNER_FOLDS,
    Baseline,
    baseline_split,
    choose_pooling,
    fit_baseline,
    mean_columns,
    pooled_inputs,
)
from framecache.train.data import InMemoryFeatures
from framecache.train.figures import bootstrap_intervals, classification_metrics, figures_from_confusion
from framecache.train.splits import Split


def test_pooled_inputs_are_the_clean_views_mean_and_std_in_any_order():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(2, length, 4)).astype(np.float16) for length in (3, 7, 5)]
    source = InMemoryFeatures(arrays, locality=np.array([2, 0, 1]))  # read in the cache's order, returned in the asked order
    pooled = pooled_inputs(source, np.array([2, 0]))
    clean = [arrays[index][0].astype(np.float64) for index in (2, 0)]
    np.testing.assert_allclose(pooled, [np.concatenate([video.mean(0), video.std(0)]) for video in clean], atol=1e-12)
    np.testing.assert_allclose(pooled_inputs(source, np.array([2, 0]), pooling="mean"), [video.mean(0) for video in clean])
    assert pooled_inputs(arrays, np.array([1])).shape == (1, 8), "a plain list of arrays works too"


def test_a_pose_parts_frames_without_a_person_are_left_out_of_its_pooling():
    """spans: each part's columns pooled on their own; a frame whose presence score is 0 does not count for its part,
    unless no frame has a person (then all count)."""
    frames = np.array([[1.0, 5.0, 1.0], [3.0, 0.0, 0.0], [2.0, 7.0, 1.0]])  # column 0: a CNN's; columns 1-2: pose, score last
    nobody = np.zeros((2, 3))
    nobody[:, 0] = [4.0, 6.0]
    pooled = pooled_inputs([frames[None], nobody[None]], np.arange(2), spans=[(0, 1, None), (1, 3, 1)])
    np.testing.assert_allclose(pooled[0], [2.0, np.std([1, 3, 2]), 6.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(pooled[1], [5.0, 1.0, 0.0, 0.0, 0.0, 0.0])


def test_the_mean_pooling_is_each_parts_mean_alone():
    """pooling="mean" keeps each part's mean columns of "mean_std" (mean_columns), the pose part's empty frames left out."""
    frames = np.array([[1.0, 5.0, 1.0], [3.0, 0.0, 0.0], [2.0, 7.0, 1.0]])  # as in the test above
    nobody = np.zeros((2, 3))
    nobody[:, 0] = [4.0, 6.0]
    spans = [(0, 1, None), (1, 3, 1)]
    pooled = pooled_inputs([frames[None], nobody[None]], np.arange(2), spans=spans, pooling="mean")
    np.testing.assert_array_equal(pooled, [[2.0, 6.0, 1.0], [5.0, 0.0, 0.0]])
    np.testing.assert_array_equal(mean_columns(spans, 6), [0, 2, 3])
    np.testing.assert_array_equal(mean_columns(None, 8), [0, 1, 2, 3])


def test_a_baseline_chosen_on_the_mean_is_bit_identical_to_one_fitted_on_the_mean_pooling():
    """The baseline's last bits depend on its inputs' layout (scikit-learn sums over rows), not only on their values."""
    rng = np.random.default_rng(5)
    labels = np.arange(300) % 3
    arrays = [rng.normal(size=(1, 8, 6)) + 0.4 * label for label in labels]  # the level tells the class, the spread nothing
    split = Split(train=np.arange(0, 240), val=np.arange(240, 270), test=np.arange(270, 300), method="stratified")
    result = baseline_split(arrays, labels, split, 3)
    assert result.model.pooling == "mean"
    alone = fit_baseline(pooled_inputs(arrays, split.train, pooling="mean"), labels[split.train], 3)
    np.testing.assert_array_equal(result.model.centre, alone.centre)
    np.testing.assert_array_equal(result.model.coef, alone.coef)
    np.testing.assert_array_equal(result.test_probabilities, alone.probabilities(pooled_inputs(arrays, split.test, pooling="mean")))


def test_a_baseline_standardised_in_place_is_the_same_baseline():
    """overwrite_means spares a copy of the inputs (100-200 MB on 10,000 videos): the inputs become standardised, the
    baseline stays bit for bit the one fitted on a copy."""
    rng = np.random.default_rng(6)
    labels = np.arange(60) % 3
    means = rng.normal(size=(60, 7)) * rng.uniform(0.1, 5.0, size=7) + labels[:, None]
    kept = fit_baseline(means, labels, 3)
    overwritten = means.copy()
    in_place = fit_baseline(overwritten, labels, 3, overwrite_means=True)
    for name in ("centre", "scale", "coef", "intercept"):
        np.testing.assert_array_equal(getattr(in_place, name), getattr(kept, name), err_msg=name)
    np.testing.assert_allclose(overwritten, (means - kept.centre) / kept.scale)


def test_the_poolings_cross_validation_reads_the_mean_poolings_columns_fold_by_fold():
    """choose_pooling takes the mean pooling as the mean-and-std inputs' mean columns, fold by fold: the same losses
    as cross-validating a baseline on the mean pooling itself."""
    from sklearn.model_selection import GroupKFold

    from framecache.train.combine import cross_entropy

    rng = np.random.default_rng(7)
    labels = np.arange(48) % 2
    groups = np.repeat(np.arange(8), 6)
    arrays = [np.concatenate([rng.normal(size=(1, 5, 3)) + 0.5 * label, rng.normal(size=(1, 5, 2)) * (1 + label)], axis=2)
              for label in labels]  # fmt: skip
    spans = [(0, 3, None), (3, 5, None)]
    videos = np.arange(48)
    chosen, losses = choose_pooling(pooled_inputs(arrays, videos, spans), labels, groups, 2, True, 0, spans)
    mean = pooled_inputs(arrays, videos, spans, pooling="mean")
    folds = GroupKFold(min(INNER_FOLDS, 8)).split(labels, groups=groups)
    expected = np.mean([cross_entropy(labels[test], fit_baseline(mean[train], labels[train], 2).probabilities(mean[test])) for train, test in folds])
    assert losses["mean"] == round(float(expected), 6)
    assert chosen == min(losses, key=losses.get) and set(losses) == {"mean", "mean_std"}


@pytest.mark.parametrize("classes", [2, 4])
def test_the_saved_baseline_is_scikit_learns_logistic_regression(classes):
    rng = np.random.default_rng(1)
    means, labels = rng.normal(size=(40, 6)), np.arange(40) % classes
    means[:, 0] += labels
    fitted = fit_baseline(means, labels, classes)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced", random_state=0)).fit(means, labels)
    np.testing.assert_allclose(fitted.probabilities(means), reference.predict_proba(means), atol=1e-9)
    again = Baseline.from_dict(json.loads(json.dumps(fitted.to_dict())))
    np.testing.assert_allclose(again.probabilities(means), reference.predict_proba(means), atol=1e-9)


def test_a_class_missing_from_training_gets_probability_zero():
    rng = np.random.default_rng(2)
    means, labels = rng.normal(size=(12, 3)), np.array([0, 2] * 6)
    probabilities = fit_baseline(means, labels, num_classes=3).probabilities(means)
    assert probabilities.shape == (12, 3) and np.all(probabilities[:, 1] == 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_baseline_split_fits_on_train_only():
    rng = np.random.default_rng(3)
    labels = np.arange(30) % 3
    arrays = [(rng.normal(size=(1, 6, 5)) + 2.0 * label).astype(np.float16) for label in labels]
    split = Split(train=np.arange(0, 18), val=np.arange(18, 24), test=np.arange(24, 30), method="stratified")
    result = baseline_split(arrays, labels, split, 3)
    assert result.val_probabilities.shape == (6, 3) and result.test_probabilities.shape == (6, 3)
    assert (result.test_probabilities.argmax(axis=1) == labels[24:]).all(), "an easy appearance cue is learnt"
    pooling = result.model.pooling
    train_only = fit_baseline(pooled_inputs(arrays, split.train, pooling=pooling), labels[split.train], 3)
    np.testing.assert_allclose(result.test_probabilities, train_only.probabilities(pooled_inputs(arrays, split.test, pooling=pooling)))
    assert result.model.inputs(arrays, split.test).shape == (6, 10 if pooling == "mean_std" else 5), "it reads its own inputs"


@pytest.mark.parametrize("cue", ["spread", "level"])
def test_the_pooling_is_chosen_by_cross_validation_on_the_training_videos(cue):
    """Classes that differ only in how much the frames vary need the std; where the level alone decides and the spread is
    noise in many dimensions, the mean alone predicts the held-out training videos better."""
    rng = np.random.default_rng(4)
    labels = np.arange(36) % 2
    groups = np.repeat(np.arange(6), 6)
    if cue == "spread":
        arrays = [(rng.normal(size=(1, 20, 4)) * (0.3 + 2.0 * label)).astype(np.float16) for label in labels]
    else:
        arrays = [(rng.normal(size=(1, 4, 40)) * rng.uniform(0.2, 3.0) + 0.8 * label).astype(np.float16) for label in labels]
    split = Split(train=np.arange(24), val=np.arange(24, 30), test=np.arange(30, 36), method="group")
    result = baseline_split(arrays, labels, split, 2, groups=groups)
    assert result.model.pooling == ("mean_std" if cue == "spread" else "mean")
    assert baseline_split(arrays, labels, split, 2, pooling="mean").model.pooling == "mean", "a pooling asked for is kept"


def test_figures_from_confusion_agree_with_scikit_learn():
    rng = np.random.default_rng(4)
    for _ in range(20):
        classes = int(rng.integers(2, 5))
        labels = rng.integers(0, classes, size=int(rng.integers(3, 30)))
        probabilities = rng.random((len(labels), classes))
        expected = classification_metrics(labels, probabilities, [str(code) for code in range(classes)])
        figures = figures_from_confusion(np.asarray(expected["confusion_matrix"])[None])
        for name in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert figures[name][0] == pytest.approx(expected[name]), name


def test_bootstrap_intervals_by_video_and_by_subject():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), 10)
    probabilities = rng.random((40, 4))
    probabilities[np.arange(40), labels] += (rng.random(40) < 0.75).astype(float)  # about 3 in 4 right
    accuracy = classification_metrics(labels, probabilities, list("abcd"))["accuracy"]
    by_video = bootstrap_intervals(labels, probabilities, 4)
    assert by_video["accuracy"][0] < accuracy < by_video["accuracy"][1] and "40 test videos" in by_video["method"]
    assert by_video == bootstrap_intervals(labels, probabilities, 4), "seeded: the same interval every time"
    groups = np.tile(np.arange(8), 5)
    by_subject = bootstrap_intervals(labels, probabilities, 4, groups=groups)
    assert "8 test subjects" in by_subject["method"]
    few = bootstrap_intervals(labels, probabilities, 4, groups=np.tile(np.arange(2), 20))
    assert "only 2 test subjects" in few["method"] and "by video" in few["method"], "too few subjects to resample: said so"
    perfect = bootstrap_intervals(labels, np.eye(4)[labels], 4)
    assert perfect["balanced_accuracy"] == [1.0, 1.0]


def test_curves_mark_the_restored_epoch_and_both_panels_have_a_legend(tmp_path):
    import pandas as pd

    from framecache.train.report import plot_curves

    history = pd.DataFrame({"epoch": range(6), "loss": [1, 0.8, 0.6, 0.5, 0.4, 0.3], "val_loss": [1, 0.9, 0.7, 0.75, 0.8, 0.9],
                            "accuracy": [0.3, 0.5, 0.7, 0.8, 0.9, 1.0], "val_accuracy": [0.3, 0.4, 0.6, 0.6, 0.5, 0.5]})
    figure = plot_curves(tmp_path / "curves.png", [history, history], "run", best_epochs=[3, 2])
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for axes in figure.axes:
        labels = [text.get_text() for text in axes.get_legend().get_texts()]
        assert "fold 1 best epoch 3 (weights kept)" in labels and "fold 2 best epoch 2 (weights kept)" in labels
        assert "fold 1 val" in labels and "fold 2 train" in labels
        vertical = [line.get_xdata()[0] for line in axes.get_lines() if line.get_linestyle() == ":"]
        assert sorted(vertical) == [2, 3]
