"""The GRU: padding never changes a prediction, input transforms respect the mask, and a saved model keeps its metadata."""

import numpy as np
import pytest

from framecache.common.errors import FramecacheError
from framecache.train.baseline import fit_baseline, pooled_inputs
from framecache.train.combine import Combiner, combine
from framecache.train.data import SequenceBatches, pad_sequences
from framecache.train.model import (
    TemporalInputs,
    assemble,
    build_model,
    load_model,
    predict_probabilities,
    read_metadata,
    save_model,
)
from framecache.train.temporal import feature_statistics, input_statistics, temporal_inputs

FEATURE_DIM = 6


def model(**options):
    rng = np.random.default_rng(0)
    inputs = FEATURE_DIM * ((2 if options.get("inputs", "centred") == "both" else 1) + bool(options.get("differences")))
    return build_model(
        FEATURE_DIM, 3, units=8, head_units=8, mean=rng.normal(size=inputs), variance=rng.uniform(0.5, 2, inputs), **options
    )


VARIANTS = {
    "gru": {},
    "2-layer-bidirectional": {"layers": 2, "bidirectional": True},
    "last-state-raw": {"pooling": "last", "inputs": "raw"},
    "centred-differences-noise": {"inputs": "centred", "differences": True, "noise": 0.5, "input_dropout": 0.2, "recurrent_dropout": 0.2, "l2": 1e-3},
    "both-differences": {"inputs": "both", "differences": True},
    "mean-pooled-bidirectional": {"pooling": "mean", "bidirectional": True, "layers": 2},
}


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())
def test_padding_never_changes_the_output(options):
    gru = model(**options)
    video = np.random.default_rng(1).normal(size=(7, FEATURE_DIM)).astype(np.float32)
    outputs = []
    for length in (7, 12, 40):
        batch, mask = pad_sequences([video], length)
        batch[0, 7:] = 123.0  # whatever sits in the padding is ignored, not only zeros
        outputs.append(np.asarray(gru([batch, mask], training=False)))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)
    np.testing.assert_allclose(outputs[0], outputs[2], atol=1e-6)


def test_a_video_gets_the_same_output_alone_or_batched_with_longer_ones():
    gru = model(layers=2)
    rng = np.random.default_rng(2)
    videos = [rng.normal(size=(1, length, FEATURE_DIM)).astype(np.float16) for length in (3, 30, 11)]
    labels = np.zeros(3, dtype=np.int64)
    together = predict_probabilities(gru, SequenceBatches(videos, labels, np.arange(3), 64, 1, batch_size=3))
    alone = predict_probabilities(gru, SequenceBatches(videos, labels, np.array([0]), 64, 1, batch_size=1))
    np.testing.assert_allclose(together[0], alone[0], atol=1e-6)


def test_a_fit_traces_its_training_step_once():
    """Every variable exists before fit: one made while tracing (Adam's slots, a metric's counts) makes TensorFlow trace
    the whole step again, seconds per fit."""
    gru = model()
    traced = []
    train_step = gru.train_step
    gru.train_step = lambda data: (traced.append(1), train_step(data))[1]  # runs once per trace, not per batch
    rng = np.random.default_rng(3)
    videos = [rng.normal(size=(2, length, FEATURE_DIM)).astype(np.float16) for length in rng.integers(4, 20, size=10)]
    labels = np.arange(10) % 3
    gru.fit(SequenceBatches(videos, labels, np.arange(10), 16, 1, batch_size=4, train=True), epochs=2, shuffle=False, verbose=0)
    assert len(traced) == 1


def test_temporal_inputs_use_only_the_valid_frames():
    rng = np.random.default_rng(3)
    videos = [rng.normal(size=(length, FEATURE_DIM)).astype(np.float32) for length in (5, 9, 1)]
    batch, mask = pad_sequences(videos, 12)
    batch[~mask] = 50.0  # padding content must not leak into the mean or the differences
    for centre, keep_raw in ((False, False), (True, False), (True, True)):
        for differences in (False, True):
            layer = TemporalInputs(centre=centre, differences=differences, keep_raw=keep_raw)
            outputs = np.asarray(layer([batch, mask]))
            assert outputs.shape == (3, 12, FEATURE_DIM * (1 + keep_raw + differences))
            assert layer.compute_output_shape(((None, None, FEATURE_DIM), (None, None)))[-1] == outputs.shape[-1]
            for row, video in enumerate(videos):
                expected = temporal_inputs(video, centre, differences)
                if keep_raw:  # the raw features first, then the centred ones (and differences)
                    expected = np.concatenate([video, expected], axis=1)
                np.testing.assert_allclose(outputs[row, : len(video)], expected, atol=1e-5)
                assert not outputs[row, len(video) :].any(), "padded steps come out as zeros"


def test_input_statistics_follow_the_transforms():
    rng = np.random.default_rng(4)
    features = [rng.normal(loc=subject, size=(1, 20, 3)).astype(np.float16) for subject in (0.0, 10.0)]
    _, raw_variance = feature_statistics(features, np.arange(2))
    mean, variance = feature_statistics(features, np.arange(2), centre=True, differences=True)
    assert raw_variance.min() > 20, "the subjects' offsets dominate the raw variance"
    assert mean.shape == (6,) and np.abs(mean[:3]).max() < 1e-6 and variance[:3].max() < 3, "centring removes them"


@pytest.mark.parametrize("inputs", ["both", "centred", "raw"])
@pytest.mark.parametrize("differences", [False, True])
def test_input_statistics_match_the_models_inputs(inputs, differences):
    """The scaling statistics line up with TemporalInputs' output, part by part, whatever the inputs."""
    rng = np.random.default_rng(5)
    features = [rng.normal(loc=subject, size=(1, 9 + subject, FEATURE_DIM)).astype(np.float16) for subject in range(4)]
    found = input_statistics(features, np.arange(4), inputs, differences, max_len=64, frame_step=1)
    layer = TemporalInputs(centre=inputs != "raw", differences=differences, keep_raw=inputs == "both")
    transformed = np.concatenate([np.asarray(layer([video[:1].astype(np.float32), np.ones((1, video.shape[1]), bool)]))[0] for video in features])
    np.testing.assert_allclose(found["mean"], transformed.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(found["variance"], np.maximum(transformed.var(axis=0), 1e-4), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("classes", [2, 3])
def test_the_appearance_model_inside_the_gru_model_is_the_baseline(classes, tmp_path):
    """assemble: the saved model's output is the combination of the GRU's and the baseline's probabilities (the baseline
    on each video's mean and std), padding ignored, for both combiners; and it loads back."""
    rng = np.random.default_rng(6)
    videos = [(rng.normal(size=(length, FEATURE_DIM)) + index % classes).astype(np.float32) for index, length in enumerate((4, 9, 6, 7, 5, 8))]
    pooled = pooled_inputs([video[None] for video in videos], np.arange(6))
    assert pooled.shape == (6, 2 * FEATURE_DIM)
    np.testing.assert_allclose(pooled[:, FEATURE_DIM:], np.stack([video.std(axis=0) for video in videos]), rtol=1e-5)
    baseline = fit_baseline(pooled, np.arange(6) % classes, classes)
    gru = build_model(FEATURE_DIM, classes, units=4, head_units=4)
    batch, mask = pad_sequences(videos, 12)
    batch[~mask] = 99.0
    alone = np.asarray(gru([batch, mask]))
    combiners = [Combiner("weight", np.array([[w] * classes, [1 - w] * classes]), np.zeros(classes)) for w in (0.0, 0.3, 1.0)]
    combiners.append(Combiner("classwise", rng.uniform(0, 2, (2, classes)), rng.normal(size=classes)))
    for combiner in combiners:
        mixed = assemble(FEATURE_DIM, [gru], [baseline], combiner)
        expected = combine(combiner, [alone, baseline.probabilities(pooled)])
        np.testing.assert_allclose(np.asarray(mixed([batch, mask])), expected, atol=1e-5)
    save_model(mixed, tmp_path / "mixed.keras", {"labels": list("abc")[:classes]})
    loaded, _ = load_model(tmp_path / "mixed.keras")
    np.testing.assert_allclose(np.asarray(loaded([batch, mask])), np.asarray(mixed([batch, mask])), atol=1e-6)


def test_a_part_reads_its_own_columns_and_only_the_frames_with_a_person():
    """A GRU on a part: other columns never change its output, nor do frames whose presence score is 0 (masked like
    padding); a video without a person in any frame still gets a prediction (every frame counts then)."""
    rng = np.random.default_rng(3)
    presence = 2  # the part's own column 2 is its presence score
    gru = build_model(2 * FEATURE_DIM, 3, units=4, head_units=4, part=(FEATURE_DIM, 2 * FEATURE_DIM, presence))
    video = rng.normal(size=(6, 2 * FEATURE_DIM)).astype(np.float32)
    video[:, FEATURE_DIM + presence] = 1.0
    gap = video[[0, 1, 1, 2, 3, 4, 5]].copy()
    gap[2, FEATURE_DIM:] = 0.0  # an inserted frame where the person is lost: the pose part is all zeros
    other = video.copy()
    other[:, :FEATURE_DIM] = rng.normal(size=(6, FEATURE_DIM))
    nobody = np.zeros((5, 2 * FEATURE_DIM), np.float32)
    batch, mask = pad_sequences([video, gap, other, nobody], 8)
    found = np.asarray(gru([batch, mask]))
    np.testing.assert_allclose(found[1], found[0], atol=1e-6)
    np.testing.assert_allclose(found[2], found[0], atol=1e-6)
    assert np.all(np.isfinite(found[3])) and np.isclose(found[3].sum(), 1.0)


def test_saved_model_round_trip_keeps_metadata_and_outputs(tmp_path):
    gru = model(bidirectional=True, inputs="both", differences=True)
    path = tmp_path / "model.keras"
    save_model(gru, path, {"labels": ["a", "b", "c"], "max_len": 16})
    batch, mask = pad_sequences([np.ones((4, FEATURE_DIM), np.float32)], 16)
    loaded, metadata = load_model(path)
    assert metadata == {"labels": ["a", "b", "c"], "max_len": 16} and read_metadata(path) == metadata
    np.testing.assert_allclose(np.asarray(loaded([batch, mask])), np.asarray(gru([batch, mask])), atol=1e-6)


def test_a_model_without_framecache_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.keras"
    model().save(path)
    with pytest.raises(FramecacheError, match="not a model saved by framecache"):
        read_metadata(path)
    with pytest.raises(FramecacheError, match="no model at"):
        read_metadata(tmp_path / "missing" / "model.keras")


def test_a_model_whose_metadata_would_inflate_past_any_run_is_refused_unread(tmp_path):
    """A 'model.keras' of a few hundred KB whose framecache.json would inflate past any run's metadata (a zip bomb)."""
    import resource
    import zipfile

    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("framecache.json", "w", force_zip64=True) as member:
            block = b" " * (64 << 20)
            for _ in range(5):  # 335 MB of spaces, 330 KB compressed
                member.write(block)
    assert path.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FramecacheError, match=r"framecache.json declares 0.3 GB, not a framecache model's metadata"):
        read_metadata(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: nothing inflated
