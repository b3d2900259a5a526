"""``python -m extract.info FEATURES [--json]``: what a feature cache holds."""

from __future__ import annotations

import argparse
import json

from framecache.common.cache import FeatureCache
from framecache.common.cli import run_cli


def format_summary(summary: dict) -> str:
    """The human-readable form of :meth:`FeatureCache.summary`."""
    provenance = summary["provenance"]
    lines = [
        f"cache       {summary['path']} (schema {summary['schema_version']})",
        f"backbone    {summary['backbone']}, weights {summary['weights']}"
        + (f" (sha256 {provenance['weights_sha256'][:12]}…)" if provenance.get("weights_sha256") else ""),
        f"features    {summary['feature_dim']}-d float16, {summary['views']} view(s), "
        f"augment {provenance.get('augment')}, seed {provenance.get('seed')}",
        f"sampling    frame_step {provenance.get('frame_step')}, fps {provenance.get('fps') or 'native'}, "
        f"input {provenance.get('input_size')} px ({provenance.get('resize')})",
        f"videos      {summary['videos_ok']} ok, {summary['videos_failed']} failed, {summary['frames']} frames",
        "labels      " + ", ".join(f"{label}: {count}" for label, count in summary["labels"].items()),
        f"provenance  {summary['provenance_hash'][:16]}, framecache {provenance.get('framecache_version')}",
    ]
    if summary["weights"] == "random":
        lines.append("WARNING     random backbone weights: these features carry no class signal")
    for failure in summary["failures"]:
        lines.append(f"failed      {failure['path']}: {failure['reason']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extract.info", description=__doc__)
    parser.add_argument("features", help="the HDF5 feature cache")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    with FeatureCache(args.features) as cache:
        summary = cache.summary()
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    run_cli(main, quiet=True)
