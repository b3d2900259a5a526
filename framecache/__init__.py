"""framecache: classify short labelled videos with a frozen CNN whose features are cached once."""

# First, before any framecache module can import TensorFlow: its C++ log level defaults to 3
# (fatal messages only; a TF_CPP_MIN_LOG_LEVEL the user set is kept), applied also to the lines
# it prints while loading, which the variable alone does not reach (see _quiet_tensorflow.py).
from framecache import _quiet_tensorflow

_quiet_tensorflow.quiet()

__version__ = "0.1.0"

# The public API: light to import (TensorFlow loads only when a function needs it).
# `train` is the stage-two package, made callable (see train/__init__.py): `framecache.train(...)` trains.
from framecache import train  # noqa: E402
from framecache.api import (  # noqa: E402
    PaddedFeatures,
    augment_video,
    build_model,
    encode_labels,
    extract_features,
    load_dataset,
    load_features,
    load_video,
    predict,
)

__all__ = [
    "PaddedFeatures",
    "augment_video",
    "build_model",
    "encode_labels",
    "extract_features",
    "load_dataset",
    "load_features",
    "load_video",
    "predict",
    "train",
]
