"""The default model holds where motion decides and where appearance does: it wins or ties against either single input.

Tiny synthetic caches (:mod:`framecache.train.synthetic`): in ``motion`` every
class has the same mean feature and only the order of its frames differs; in
``appearance`` each class has its own look and the order says nothing. The
real-feature measurements behind the defaults are in docs/accuracy.md
(``python -m framecache.train.measure_defaults``).
"""

import pytest

from framecache.train.config import TrainConfig
from framecache.train.fit import run_training
from framecache.train.synthetic import write_synthetic_cache

FAST = dict(units=16, head_units=16, max_len=16, epochs=20, patience=5, batch_size=16, learning_rate=0.01, dropout=0.1)
SINGLE = {"centred only": {"inputs": "centred", "appearance": False}, "raw only": {"inputs": "raw", "appearance": False}}
NOISE = 0.1  # one or two of the ~12 test videos


@pytest.fixture(scope="module", params=["motion", "appearance"])
def regime(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    cache = write_synthetic_cache(folder / "features.h5", videos=48, classes=4, feature_dim=16, subjects=12, frames=(10, 40), regime=request.param)
    figures = {}
    for name, settings in {"default": {}, **SINGLE}.items():
        metrics = run_training(TrainConfig(features=str(cache), run=str(folder / name.replace(" ", "-")), quiet=True, **FAST, **settings))
        figures[name] = metrics
    return request.param, figures


@pytest.mark.slow  # six training runs (~55 s): with the kill loops in `make test-slow` and CI
def test_the_default_wins_or_ties(regime):
    name, figures = regime
    default = figures["default"]["balanced_accuracy"]
    for single in SINGLE:
        assert default >= figures[single]["balanced_accuracy"] - NOISE, (name, {key: value["balanced_accuracy"] for key, value in figures.items()})
    assert default >= 0.75, (name, default)
    if name == "appearance":  # what the old default (centred only) could not do
        assert default >= figures["centred only"]["balanced_accuracy"] + 0.25
        weights = figures["default"]["mix"]["part_weights"]
        assert weights["baseline"] > weights["GRU alone"], "validation puts the weight on the appearance model"


@pytest.mark.slow  # shares the six training runs above
def test_the_baseline_is_reported_beside_it(regime):
    name, figures = regime
    baseline = figures["default"]["baseline"]
    assert {"accuracy", "balanced_accuracy", "macro_f1", "ci", "val"} <= set(baseline)
    if name == "motion":  # every class has the same mean feature: the baseline is near chance (0.25), the GRU is not
        assert baseline["balanced_accuracy"] <= 0.5 < figures["default"]["balanced_accuracy"]
