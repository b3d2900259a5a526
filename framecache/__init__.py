"""framecache: classify short labelled videos with a frozen CNN whose features are cached once."""

__version__ = "0.1.0"
