"""Write the synthetic demo dataset: videos plus a labels.csv (path,label,group).

    python -m framecache.data.make_demo --out data/demo --per-class 12 --seed 0
    python -m framecache.data.make_demo --out data/appearance --preset appearance

``--preset`` picks the classes by what decides them (see
:mod:`framecache.data.synthetic`): ``motion`` (four exercises: only the
movement tells them apart), ``appearance`` (four equipment classes: the
equipment in the scene tells them apart, while the figure does any of the four
exercises) or ``both`` (the eight; default); ``--classes`` names them instead.

Layout: ``OUT/videos/<label>/<label>_<index>.mp4``, ``OUT/labels.csv`` (paths
relative to OUT) and ``OUT/demo.json`` (the settings). A rerun with the same
settings finds everything in place and does nothing; other settings empty the
folder first, so nothing derived from the old videos (a features.h5 extracted
next to them, say) survives to be mistaken for the new ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from framecache.common.errors import FramecacheError
from framecache.data.figure import render_frames
from framecache.data.synthetic import (
    CLASSES,
    DEFAULT_FPS,
    GENERATOR_VERSION,
    PRESETS,
    SyntheticSettings,
    VideoSpec,
    dataset_specs,
    write_video,
)

LABELS_FILE = "labels.csv"
SETTINGS_FILE = "demo.json"
VIDEOS_DIR = "videos"


@dataclass(frozen=True)
class DemoResult:
    """What build_demo made (or found already made)."""

    out: Path
    settings: SyntheticSettings
    videos: int
    frames: int
    seconds: float
    skipped: bool
    elapsed_s: float

    def summary(self) -> str:
        settings = self.settings
        done = "up to date, nothing to do" if self.skipped else f"generated in {self.elapsed_s:.1f} s"
        return (
            f"demo: {self.videos} videos ({len(settings.classes)} classes x {settings.per_class}, "
            f"{settings.subjects} subjects), {self.frames} frames, {self.seconds:.1f} s of video "
            f"-> {self.out / LABELS_FILE} ({done})"
        )


def video_relpath(spec: VideoSpec) -> str:
    """Where a video goes, relative to the output folder (forward slashes, as in the CSV)."""
    return f"{VIDEOS_DIR}/{spec.label}/{spec.label}_{spec.index:03d}.mp4"


def _settings_record(settings: SyntheticSettings, complete: bool) -> dict:
    recorded_settings = asdict(settings) | {"fps_choices": [float(fps) for fps in settings.fps_choices]}
    record = {"generator_version": GENERATOR_VERSION, "settings": recorded_settings, "complete": complete}
    return json.loads(json.dumps(record))  # tuples become lists, as when read back


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _is_up_to_date(out: Path, settings: SyntheticSettings, specs: list[VideoSpec]) -> bool:
    try:
        recorded = json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        recorded == _settings_record(settings, complete=True)
        and (out / LABELS_FILE).is_file()
        and all((out / video_relpath(spec)).is_file() for spec in specs)
    )


def build_demo(out: str | Path, settings: SyntheticSettings, force: bool = False) -> DemoResult:
    """Generate the dataset into ``out`` unless it is already there with the same settings."""
    started = time.perf_counter()
    out = Path(out)
    specs = dataset_specs(settings)
    skipped = not force and _is_up_to_date(out, settings, specs)
    if not skipped:
        if out.exists() and any(out.iterdir()) and not (out / SETTINGS_FILE).exists():
            raise FramecacheError(f"{out} is not empty and was not made by make_demo; choose another --out")
        shutil.rmtree(out, ignore_errors=True)  # a demo folder: everything in it derives from the old videos
        out.mkdir(parents=True, exist_ok=True)
        _write_text_atomically(out / SETTINGS_FILE, json.dumps(_settings_record(settings, complete=False), indent=2))
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # encoding releases the GIL
            list(pool.map(lambda spec: write_video(out / video_relpath(spec), render_frames(spec), spec.fps), specs))
        temporary = out / (LABELS_FILE + ".tmp")
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "group"])
            writer.writerows([video_relpath(spec), spec.label, spec.subject.group] for spec in specs)
        os.replace(temporary, out / LABELS_FILE)
        _write_text_atomically(out / SETTINGS_FILE, json.dumps(_settings_record(settings, complete=True), indent=2))
    return DemoResult(
        out=out,
        settings=settings,
        videos=len(specs),
        frames=sum(spec.n_frames for spec in specs),
        seconds=sum(spec.seconds for spec in specs),
        skipped=skipped,
        elapsed_s=time.perf_counter() - started,
    )


def parse_args(argv: list[str] | None = None) -> tuple[Path, SyntheticSettings, bool]:
    """The output folder, the dataset settings and --force from the command line."""
    defaults = SyntheticSettings()
    parser = argparse.ArgumentParser(prog="python -m framecache.data.make_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="output folder (default: data/demo)")
    parser.add_argument("--per-class", type=int, default=defaults.per_class, help="videos per class")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--preset",
        default="both",
        choices=sorted(PRESETS),
        help=f"classes by what decides them: motion ({', '.join(PRESETS['motion'])}: only the movement differs), "
        f"appearance ({', '.join(PRESETS['appearance'])}: only the equipment in the scene differs, the figure doing one of "
        "the motion preset's exercises, drawn per video) or both (all eight; default)",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        choices=CLASSES,
        metavar="CLASS",
        help=f"classes to generate instead of a preset's, from {', '.join(CLASSES)}",
    )
    parser.add_argument("--subjects", type=int, default=defaults.subjects, help="subjects (CSV groups)")
    parser.add_argument("--min-seconds", type=float, default=defaults.min_seconds)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument("--fps", type=float, nargs="+", default=list(DEFAULT_FPS), help="frame rates to draw from")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    settings = SyntheticSettings(
        classes=tuple(args.classes or PRESETS[args.preset]),
        per_class=args.per_class,
        subjects=args.subjects,
        seed=args.seed,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        fps_choices=tuple(args.fps),
    )
    return args.out, settings, args.force


def main(argv: list[str] | None = None) -> int:
    out, settings, force = parse_args(argv)
    try:
        result = build_demo(out, settings, force=force)
    except FramecacheError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
