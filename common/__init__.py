"""Shared pieces of framecache: the CSV contract, the feature-cache format, config."""

__version__ = "0.1.0"
