"""Messages that several commands show, worded once.

They are written to read the same as a log record (the logger adds
``WARNING``, so they never start with it), on a banner line, or after a
column label, and name options as the user's interface spells them.
"""

from __future__ import annotations

from framecache.common.options import option_name

RANDOM_WEIGHTS = "random"  # the cache's weights name when the backbone had no pretrained weights
RANDOM_WEIGHTS_TAG = "RANDOM WEIGHTS"  # marks such runs in plot titles and tables


def random_weights_warning(weights: str | None) -> str | None:
    """The warning for features from a backbone with random weights (``weights == "random"``), else ``None``.

    Shown by ``info``, logged and written into the reports by ``train``, and
    shown by ``evaluate``, ``predict`` and ``compare``.
    """
    if weights != RANDOM_WEIGHTS:
        return None
    return (
        f"{RANDOM_WEIGHTS_TAG}: features from a backbone with random (untrained) weights carry no class signal, "
        "so every prediction and figure made from them is chance level; extract the features again with "
        f"pretrained weights ({option_name('weights', 'imagenet')})"
    )
