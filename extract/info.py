"""``framecache info FEATURES [--json]``: what a feature cache holds, for a person."""

from __future__ import annotations

from framecache.common.notices import random_weights_warning
from framecache.common.provenance import Provenance


def format_summary(summary: dict) -> str:
    """The human-readable form of :meth:`FeatureCache.summary`."""
    provenance = Provenance.from_dict(summary["provenance"])
    lines = [
        f"cache       {summary['path']} (schema {summary['schema_version']})",
        f"backbone    {summary['backbone']}, weights {summary['weights']}"
        + (f" (sha256 {provenance.weights_sha256[:12]}…)" if provenance.weights_sha256 else ""),
        f"features    {summary['feature_dim']}-d float16, {summary['views']} view(s), "
        f"augment {provenance.augment}, seed {provenance.seed}",
        f"sampling    frame_step {provenance.frame_step}, fps {provenance.fps or 'native'}, "
        f"input {provenance.input_size} px ({provenance.resize})",
        f"videos      {summary['videos_ok']} ok, {summary['videos_failed']} failed, {summary['frames']} frames",
        "labels      " + ", ".join(f"{label}: {count}" for label, count in summary["labels"].items()),
        f"provenance  {summary['provenance_hash'][:16]}, framecache {provenance.framecache_version}",
    ]
    warning = random_weights_warning(summary["weights"])
    if warning:
        lines.append(f"warning     {warning}")
    for failure in summary["failures"]:
        lines.append(f"failed      {failure['path']}: {failure['reason']}")
    return "\n".join(lines)
