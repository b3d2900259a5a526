"""framecache: classify short labelled videos with a frozen CNN whose features are cached once.

Importing it changes nothing outside framecache (no environment variables, no
hooks, no logging filters): what the ``framecache`` command sets up for its own
process is in :mod:`framecache.process_setup`. TensorFlow loads only when a
function needs it.
"""

__version__ = "0.4.0"

from framecache.api import (  # noqa: E402
    PaddedFeatures,
    augment_video,
    build_model,
    encode_labels,
    extract_features,
    load_dataframe,
    load_dataset,
    load_features,
    load_video,
    predict,
    train_model,
)

__all__ = [
    "PaddedFeatures",
    "augment_video",
    "build_model",
    "encode_labels",
    "extract_features",
    "load_dataframe",
    "load_dataset",
    "load_features",
    "load_video",
    "predict",
    "train_model",
]
