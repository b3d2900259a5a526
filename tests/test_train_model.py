"""The GRU: padding never changes a prediction, and a saved model keeps its metadata."""

import numpy as np
import pytest

from common.errors import FramecacheError
from train.data import SequenceBatches, pad_sequences
from train.model import build_model, load_model, predict_probabilities, read_metadata, save_model

FEATURE_DIM = 6


def model(**options):
    rng = np.random.default_rng(0)
    return build_model(
        FEATURE_DIM, 3, units=8, head_units=8, mean=rng.normal(size=FEATURE_DIM), variance=rng.uniform(0.5, 2, FEATURE_DIM), **options
    )


@pytest.mark.parametrize("options", [{}, {"layers": 2, "bidirectional": True}], ids=["gru", "2-layer-bidirectional"])
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


def test_saved_model_round_trip_keeps_metadata_and_outputs(tmp_path):
    gru = model(bidirectional=True)
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
