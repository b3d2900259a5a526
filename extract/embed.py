"""Stage one for ``predict``: embed new videos exactly as a cache's features were made, clean view only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framecache.common.provenance import Provenance
from framecache.extract.views import DecodeSettings, ViewDecoder, failure_reason


@dataclass
class EmbedResult:
    """One video's clean-view features for ``predict``, or why it failed."""

    path: str
    features: np.ndarray | None  # float32 (T, D)
    error: str | None = None


def embed_videos(paths: list[str], provenance: Provenance, engine: str = "auto", folder_fps: float | None = None) -> list[EmbedResult]:
    """Decode and embed videos (files or frame folders of ``folder_fps``) exactly as the cache with ``provenance``
    was made (clean view only).

    Raises :class:`FramecacheError` if the backbone or weights recorded in
    ``provenance`` cannot be rebuilt here; a video that fails gets its reason.
    """
    from framecache.extract.backbones import backbone_from_provenance

    backbone = backbone_from_provenance(provenance, engine=engine)
    decoder = ViewDecoder(DecodeSettings.from_provenance(provenance, views=1, folder_fps=folder_fps))
    results = []
    for path in paths:
        try:
            features, offset = [], 0
            for views in decoder.open(path, key=path):
                features.append(backbone.embed(views[0], [(path, offset, len(views[0]))]))
                offset += len(views[0])
            features = np.concatenate(features).astype(np.float32)
            failure = backbone.video_failure(len(features), backbone.piece_passes(features))
            results.append(EmbedResult(path, None, failure) if failure else EmbedResult(path, features))
        except Exception as error:
            results.append(EmbedResult(path, None, failure_reason(error)))
    return results
