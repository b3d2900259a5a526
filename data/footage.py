"""Files as real footage comes, built from frames with PyAV: for tests, and for trying framecache on them.

Real collections hold files that the demo's clean encodes never show, each
reproduced here from frames a test chooses (uint8 RGB ``(T, H, W, 3)``):

- :func:`cut_avi_frames`: an AVI whose index lists frames whose data is gone
  (the header promises more frames than decode: seen in benchmark AVIs);
- :func:`avi_claiming_frames`: an AVI whose header claims any number of frames;
- :func:`mp4_count_one_high`: an MP4 whose ``nb_frames`` is one more than
  decodes (its last sample's bytes are missing);
- :func:`corrupt_last_packet`: a video whose last packet does not decode;
- :func:`variable_frame_rate_mp4`: frames at irregular times;
- :func:`rotated_mp4`: a phone's portrait video, stored turned with a display
  rotation (the display matrix) that players apply;
- :func:`anamorphic_video`: non-square pixels, stored squeezed with a sample
  aspect ratio that players stretch back;
- :func:`frame_folder`: a folder of JPEG or PNG frames, numbered without padding;
- :func:`moving_person`: frames of a real person moving (for the pose models).

Every function writes one file (or folder) and returns its path.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import matplotlib
import numpy as np

from framecache.data.synthetic import write_video


def _packets(path: Path) -> list[tuple[int, int]]:
    """(byte offset, size) of every video packet of ``path``, in file order."""
    with av.open(str(path)) as container:
        return [(packet.pos, packet.size) for packet in container.demux(container.streams.video[0]) if packet.size]


def _encode(path: Path, frames: np.ndarray, fps: float, codec: str, configure=None, pts=None, options=None) -> Path:
    """Write ``frames`` with ``codec``; ``configure(stream)`` sets the stream up, ``pts`` (ms) times the frames."""
    height, width = frames.shape[1:3]
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if pts is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if configure is not None:
            configure(stream)
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if pts is not None:
                picture.pts, picture.time_base = int(pts[index]), Fraction(1, 1000)
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return Path(path)


def cut_avi_frames(frames: np.ndarray, path: str | Path, missing: int, fps: float = 25.0) -> Path:
    """An MPEG-4 AVI whose index lists ``len(frames)`` frames but whose last ``missing`` frames' data is cut out."""
    path = Path(path)
    write_video(path, frames, fps, codec="mpeg4")
    data = path.read_bytes()
    index_at = data.rfind(b"idx1")
    cut_from = _packets(path)[-missing][0]
    path.write_bytes(data[:cut_from] + data[index_at:])  # the index (with offsets of the gone frames) stays
    return path


def avi_claiming_frames(frames: np.ndarray, path: str | Path, claimed: int, fps: float = 25.0) -> Path:
    """An MPEG-4 AVI of ``frames`` whose headers (``avih`` and ``strh``) claim ``claimed`` frames: a header that lies."""
    path = Path(path)
    write_video(path, frames, fps, codec="mpeg4")
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"avih") + 8 + 16, claimed)  # dwTotalFrames
    struct.pack_into("<I", data, data.find(b"strh") + 8 + 32, claimed)  # the video stream's dwLength
    path.write_bytes(bytes(data))
    return path


def mp4_count_one_high(frames: np.ndarray, path: str | Path, fps: float = 25.0) -> Path:
    """An H.264 MP4 (index first) whose ``nb_frames`` says ``len(frames)`` while the last frame's bytes are gone."""
    path = Path(path)
    _encode(path, frames, fps, "libx264", options={"movflags": "faststart"})
    last_at = _packets(path)[-1][0]
    path.write_bytes(path.read_bytes()[:last_at])
    return path


def corrupt_last_packet(frames: np.ndarray, path: str | Path, fps: float = 25.0, seed: int = 0) -> Path:
    """A video (codec by suffix, as :func:`write_video`) whose last packet is overwritten with random bytes."""
    path = Path(path)
    write_video(path, frames, fps)
    position, size = _packets(path)[-1]
    data = bytearray(path.read_bytes())
    data[position : position + size] = np.random.default_rng(seed).bytes(size)
    path.write_bytes(bytes(data))
    return path


def variable_frame_rate_mp4(frames: np.ndarray, path: str | Path, fps: float = 25.0, jitter: float = 0.4, seed: int = 0) -> Path:
    """An H.264 MP4 whose frame intervals vary by up to ``jitter`` of the mean interval ``1/fps`` (as phones record)."""
    rng = np.random.default_rng(seed)
    intervals = 1000.0 / fps * (1 + rng.uniform(-jitter, jitter, len(frames)))
    pts = np.floor(np.concatenate([[0.0], np.cumsum(intervals[:-1])]))
    return _encode(Path(path), frames, fps, "libx264", pts=pts)


def rotated_mp4(upright: np.ndarray, path: str | Path, degrees: int, fps: float = 25.0) -> Path:
    """An H.264 MP4 of ``upright`` frames stored turned clockwise by ``degrees`` (90, 180, 270), with the display
    rotation that turns them back (counter-clockwise ``degrees``), as a phone stores a video recorded held upright."""
    if degrees % 90:
        raise ValueError(f"degrees must be a multiple of 90, got {degrees}")
    stored = np.rot90(upright, k=-(degrees // 90), axes=(1, 2))
    return _encode(Path(path), stored, fps, "libx264", configure=lambda stream: stream.set_display_rotation(degrees))


def anamorphic_video(display: np.ndarray, path: str | Path, pixel_aspect: Fraction, fps: float = 25.0) -> Path:
    """``display`` frames stored ``pixel_aspect`` times narrower, with that sample aspect ratio (wider pixels).

    The codec follows the suffix: ``.avi`` MPEG-4 part 2, else H.264 (even sizes).
    """
    height, width = display.shape[1:3]
    stored_width = round(width / pixel_aspect)
    codec = "mpeg4" if Path(path).suffix.lower() == ".avi" else "libx264"
    if codec == "libx264":
        stored_width, height = stored_width // 2 * 2, height // 2 * 2
    stored = np.stack([cv2.resize(frame, (stored_width, height), interpolation=cv2.INTER_AREA) for frame in display])

    def configure(stream) -> None:
        stream.codec_context.sample_aspect_ratio = Fraction(pixel_aspect)

    return _encode(Path(path), stored, fps, codec, configure=configure)


def frame_folder(frames: np.ndarray, folder: str | Path, extension: str = ".jpg", start: int = 1) -> Path:
    """Write each frame as ``frame_<n><extension>`` (n from ``start``, no zero padding: 2 sorts before 10)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames, start=start):
        cv2.imwrite(str(folder / f"frame_{number}{extension}"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder



def person_photo() -> np.ndarray:
    """A portrait photo of a real person that ships with matplotlib (Grace Hopper, 512x600), uint8 RGB."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def moving_person(num_frames: int, height: int = 360, width: int = 480, turned: bool = False) -> np.ndarray:
    """uint8 RGB frames ``(num_frames, height, width, 3)`` of a real person (the portrait photo that ships with
    matplotlib) sliding across a grey background and growing and shrinking, as a camera would see someone move;
    ``turned``: the same frames upside down. A person the pose models find, offline."""
    photo = person_photo()
    frames = np.full((num_frames, height, width, 3), 90, np.uint8)
    for index, frame in enumerate(frames):
        scale = height / photo.shape[0] * (0.85 + 0.1 * np.sin(index / 4))
        person = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        left = min(width - 1, round(index * width / (4 * max(1, num_frames))))
        visible = person[: height - 10, : width - left]
        frame[10 : 10 + visible.shape[0], left : left + visible.shape[1]] = visible
    return np.ascontiguousarray(frames[:, ::-1, ::-1]) if turned else frames
