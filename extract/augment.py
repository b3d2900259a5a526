"""Per-view video augmentation: a safe, deterministic wrapper over vidaug 1.5.

Every view ``v >= 1`` of a video gets one random spatial and photometric
transform, drawn once from a seed derived from (global seed, video key, view)
with SHA-256, and applied identically to every frame. The augmenter is called
once per decoded chunk; because the random state is re-seeded the same way
before each call, all chunks of a (video, view) get identical parameters, so
augmenting a video chunk by chunk equals augmenting it whole. View 0 is the
clean view and is returned unchanged.

What the wrapper fixes in vidaug 1.5 (measured with numpy 2 / scipy 1.1x):

- randomness comes from the global ``random`` (and for some transforms
  ``np.random``) state: each call seeds both, then restores them, under a lock,
  so nothing outside this module is affected and results do not depend on
  what ran before;
- transforms return lists (arrays again here) and some print to stdout
  (silenced);
- ``RandomRotate`` returns float64 in [0, 1] and takes ~2 ms/frame
  (skimage); :class:`RandomRotate` here draws the angle the same way and
  rotates with OpenCV, keeping uint8;
- ``Add``/``Multiply`` apply a fixed value, not a random one, and cost
  0.3-1 ms/frame; :class:`RandomBrightnessContrast` draws an offset and a
  contrast factor per view and applies them with a 256-entry lookup table;
- ``GaussianBlur`` filters across the colour channels too (scipy's
  ``gaussian_filter`` with one sigma for all three axes: colours bleed into
  each other) and returns whatever dtype scipy gives; :class:`GaussianBlur`
  here keeps its interface, blurs each channel on its own (OpenCV, uint8) and
  :class:`RandomGaussianBlur` draws the sigma per view;
- ``Salt`` and ``Pepper`` crash on numpy 2 (``np.float``), set single colour
  channels rather than pixels, and draw from the global ``np.random`` (so the
  chunks of one video would get the same noise, frame for frame);
  :class:`Salt` / :class:`Pepper` here keep vidaug's ``ratio`` (about one pixel
  in ``ratio``), set whole pixels, and draw each frame's pixels from the view's
  seed and the frame's index in the video, so noise changes from frame to
  frame and chunking cannot change it; :class:`RandomSaltAndPepper` draws the
  amount per view;
- not used: ``RandomResize``, ``Downsample`` and ``Upsample`` crash;
  ``ElasticTransformation`` draws a new field per frame (flicker);
  ``Superpixel`` prints and is slow; temporal transforms change or reorder
  frames (``InverseOrder`` drops frame 0), and views must keep every frame.

The presets (``none``, ``light``, ``default``, ``blur-noise``: ``default``
plus blur and salt-and-pepper noise, the transforms of the original study's
vidaug set, and ``pose``: mirror, tilt, shift and zoom, for pose backbones) are cheap: well under 1 ms per 224x224 frame (see
:meth:`ViewAugmenter.describe` for the exact parameters). Presets added later
never change an earlier preset's description (the provenance) or its frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import random
import threading
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import vidaug.augmentors as va

from framecache.common.config import AUGMENT_PRESETS
from framecache.common.errors import FramecacheError
from framecache.common.options import Interval, check


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the per-view random transform; 0 disables a transform.

    Translations are fractions of the frame size, shear is vidaug's shear
    factor, brightness is in grey levels, contrast a factor range 1 +/- c.
    """

    flip_probability: float = 0.0
    max_translate: float = 0.0
    max_rotation_degrees: float = 0.0
    max_shear: float = 0.0
    max_brightness: float = 0.0
    max_contrast: float = 0.0
    # Added with the blur-noise preset; left out of the description while 0 (see ViewAugmenter.describe).
    max_blur_sigma: float = 0.0  # Gaussian blur, sigma in pixels drawn per view in [0, max]
    max_noise: float = 0.0  # salt-and-pepper: share of pixels drawn per view in [0, max], half white, half black
    # Added with the pose preset; left out of the description while 0.
    max_scale: float = 0.0  # zoom about the frame centre by a factor drawn per view in [1 - max, 1 + max]


# Fields of AugmentParams that every description lists; later fields only when they are not 0.
_DESCRIBED_ALWAYS = ("flip_probability", "max_translate", "max_rotation_degrees", "max_shear", "max_brightness", "max_contrast")

_DEFAULT_PARAMS = AugmentParams(
    flip_probability=0.5,
    max_translate=0.06,
    max_rotation_degrees=8.0,
    max_shear=0.05,
    max_brightness=20.0,
    max_contrast=0.15,
)
_PRESET_PARAMS: dict[str, AugmentParams] = {
    "none": AugmentParams(),
    "light": AugmentParams(flip_probability=0.5, max_translate=0.05, max_brightness=15.0),
    "default": _DEFAULT_PARAMS,
    "blur-noise": replace(_DEFAULT_PARAMS, max_blur_sigma=1.5, max_noise=0.02),  # the default's transforms, plus these
    # What changes a pose and not the person: the mirror image (left and right landmarks trade places), a small tilt,
    # shift and zoom of the camera. No shear (it bends limbs), no colour (a pose model barely reads it).
    "pose": AugmentParams(flip_probability=0.5, max_translate=0.05, max_rotation_degrees=10.0, max_scale=0.1),
}

# The global `random` / `np.random` states are swapped during a call; the lock
# keeps two augmenter calls in different threads from interleaving.
_GLOBAL_RNG_LOCK = threading.Lock()


class RandomAffine:
    """Random rotation, shear and translation in one warp, in vidaug's style.

    Replaces vidaug's ``RandomRotate`` (float64 output, ~2 ms/frame),
    ``RandomShear`` and ``RandomTranslate`` (each a separate 0.3 ms warp, and
    the shear is about the top-left corner). Draws from ``random`` like vidaug:
    ``dx, dy`` whole pixels in [-max_translate * size, +max_translate * size],
    an angle in [-max_rotation_degrees, +max_rotation_degrees] and shear
    factors in [-max_shear, +max_shear]; rotation and shear are about the
    frame centre; bilinear interpolation; black borders like vidaug's.
    """

    def __init__(self, max_translate: float = 0.0, max_rotation_degrees: float = 0.0, max_shear: float = 0.0, max_scale: float = 0.0):
        self.max_translate = max_translate
        self.max_rotation_degrees = max_rotation_degrees
        self.max_shear = max_shear
        self.max_scale = max_scale

    def __call__(self, clip: list[np.ndarray]) -> list[np.ndarray]:
        height, width = clip[0].shape[:2]
        max_dx, max_dy = round(self.max_translate * width), round(self.max_translate * height)
        dx, dy = random.randint(-max_dx, max_dx), random.randint(-max_dy, max_dy)
        angle = random.uniform(-self.max_rotation_degrees, self.max_rotation_degrees)
        shear_x = random.uniform(-self.max_shear, self.max_shear)
        shear_y = random.uniform(-self.max_shear, self.max_shear)
        scale = 1.0 + random.uniform(-self.max_scale, self.max_scale) if self.max_scale > 0 else 1.0  # drawn last: earlier presets keep their draws

        center_x, center_y = (width - 1) / 2, (height - 1) / 2
        rotation = np.vstack([cv2.getRotationMatrix2D((0.0, 0.0), angle, scale), [0.0, 0.0, 1.0]])
        shear = np.array([[1.0, shear_x, 0.0], [shear_y, 1.0, 0.0], [0.0, 0.0, 1.0]])
        to_origin = np.array([[1.0, 0.0, -center_x], [0.0, 1.0, -center_y], [0.0, 0.0, 1.0]])
        back_and_shift = np.array([[1.0, 0.0, center_x + dx], [0.0, 1.0, center_y + dy], [0.0, 0.0, 1.0]])
        matrix = (back_and_shift @ shear @ rotation @ to_origin)[:2]
        return [warp_affine(frame, matrix) for frame in clip]


def warp_affine(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR)``, black borders, for an RGB frame: made
    RGBA for the warp and RGB again after it. The same pixels (``tests/test_augment.py`` compares them), at less than
    half the CPU: OpenCV 5 warps four channels with SIMD and three without (224x224, ms per frame: 0.39 as RGB,
    0.13-0.16 through RGBA, conversions included)."""
    height, width = frame.shape[:2]
    if frame.ndim != 3 or frame.shape[2] != 3:
        return cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR)
    before, after = _rgba_buffers(height, width)
    cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA, dst=before)
    cv2.warpAffine(before, matrix, (width, height), dst=after, flags=cv2.INTER_LINEAR)
    return cv2.cvtColor(after, cv2.COLOR_RGBA2RGB)


_RGBA = threading.local()  # per thread: two RGBA frames, reused (new memory costs page faults: ~0.05 ms a frame)


def _rgba_buffers(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    buffers = getattr(_RGBA, "buffers", None)
    if buffers is None or buffers[0].shape[:2] != (height, width):
        buffers = _RGBA.buffers = (np.empty((height, width, 4), np.uint8), np.empty((height, width, 4), np.uint8))
    return buffers


class RandomBrightnessContrast:
    """Random brightness offset and contrast factor (about mid-grey 128), in vidaug's style.

    Draws ``offset`` in [-max_brightness, max_brightness] and ``factor`` in
    [1 - max_contrast, 1 + max_contrast] from ``random``, then maps every pixel
    through one lookup table: ``clip((x - 128) * factor + 128 + offset)``.
    """

    def __init__(self, max_brightness: float = 0.0, max_contrast: float = 0.0):
        self.max_brightness = max_brightness
        self.max_contrast = max_contrast

    def __call__(self, clip: list[np.ndarray]) -> list[np.ndarray]:
        offset = random.uniform(-self.max_brightness, self.max_brightness)
        factor = random.uniform(1.0 - self.max_contrast, 1.0 + self.max_contrast)
        levels = np.arange(256, dtype=np.float64)
        table = np.clip(np.rint((levels - 128.0) * factor + 128.0 + offset), 0, 255).astype(np.uint8)
        return [cv2.LUT(frame, table) for frame in clip]


class HorizontalFlip(va.HorizontalFlip):
    """vidaug's ``HorizontalFlip``, with frames of their own (OpenCV): vidaug's are mirrored views of the input, which
    every later step copies pixel by pixel (~0.2 ms a 224x224 frame) before it can read them."""

    def __call__(self, clip: list[np.ndarray]) -> list[np.ndarray]:
        return [cv2.flip(frame, 1) for frame in clip]


class GaussianBlur(va.GaussianBlur):
    """vidaug's ``GaussianBlur(sigma)``, fixed: each colour channel blurred on its own, uint8 kept (OpenCV)."""

    def __call__(self, clip: list[np.ndarray]) -> list[np.ndarray]:
        if self.sigma <= 0:
            return list(clip)
        return [cv2.GaussianBlur(frame, (0, 0), sigmaX=self.sigma, sigmaY=self.sigma, borderType=cv2.BORDER_REFLECT_101) for frame in clip]


class RandomGaussianBlur:
    """A Gaussian blur whose sigma is drawn from ``random`` per view, in [0, max_sigma] (vidaug's style)."""

    def __init__(self, max_sigma: float):
        self.max_sigma = max_sigma

    def __call__(self, clip: list[np.ndarray]) -> list[np.ndarray]:
        return GaussianBlur(random.uniform(0.0, self.max_sigma))(clip)


class _FrameNoise:
    """Pixels set to one ``value``, about one in ``ratio``, chosen anew for every frame.

    The frames of a view draw from ``seed`` (the augmenter draws it from the
    view's seeded ``random``) and the frame's index in the video (``start`` +
    its place in the clip), so a video augmented chunk by chunk gets the same
    noise as augmented whole.
    """

    value = 255

    def __init__(self, ratio: float = 100):
        self.ratio = ratio
        self.seed: int | None = None
        self.start = 0

    def __call__(self, clip: list[np.ndarray]) -> list[np.ndarray]:
        seed = random.getrandbits(63) if self.seed is None else self.seed
        if self.ratio <= 0 or not np.isfinite(self.ratio):
            return list(clip)
        noisy = []
        for offset, frame in enumerate(clip):
            height, width = frame.shape[:2]
            rng = np.random.default_rng([seed, self.start + offset, self.value])
            count = int(rng.binomial(height * width, min(1.0, 1.0 / self.ratio)))
            picked = rng.integers(0, height * width, size=count)  # with replacement: fast, and repeats are rare
            out = frame.copy()
            out.reshape(height * width, -1)[picked] = self.value
            noisy.append(out)
        return noisy


class Salt(_FrameNoise, va.Salt):
    """vidaug's ``Salt(ratio)``, fixed: numpy 2, whole pixels white, new pixels every frame, seeded (see :class:`_FrameNoise`)."""

    value = 255


class Pepper(_FrameNoise, va.Pepper):
    """vidaug's ``Pepper(ratio)``, fixed like :class:`Salt`: whole pixels black."""

    value = 0


class RandomSaltAndPepper:
    """Salt and pepper noise on about ``amount`` of the pixels (half each), ``amount`` drawn per view in [0, max_amount]."""

    def __init__(self, max_amount: float):
        self.max_amount = max_amount
        self.start = 0

    def __call__(self, clip: list[np.ndarray]) -> list[np.ndarray]:
        amount = random.uniform(0.0, self.max_amount)
        seed = random.getrandbits(63)
        noisy = []
        for offset, frame in enumerate(clip):  # as Salt then Pepper, with one copy of each frame
            height, width = frame.shape[:2]
            rng = np.random.default_rng([seed, self.start + offset])
            out = frame.copy()
            pixels = out.reshape(height * width, -1)
            for value in (255, 0):
                pixels[rng.integers(0, height * width, size=int(rng.binomial(height * width, amount / 2)))] = value
            noisy.append(out)
        return noisy


class ViewAugmenter:
    """Make augmented views of a video, reproducibly and chunk by chunk.

    Parameters
    ----------
    preset : one of ``AUGMENT_PRESETS``: ``"none"`` (every view is the clean
        video), ``"light"`` (flip, small translation, brightness),
        ``"default"`` (adds a small rotation, shear and contrast) or
        ``"blur-noise"`` (adds Gaussian blur and salt-and-pepper noise) or
        ``"pose"`` (flip, small rotation, shift and zoom: the default of pose
        backbones; a flipped frame shows the mirrored body, its left and right
        landmarks traded).
    seed : global seed; with the video key and the view number it fixes the
        transform of every view.
    """

    def __init__(self, preset: str = "default", seed: int = 0):
        check("augment", preset, choices=AUGMENT_PRESETS)
        check("seed", seed, int)
        self.preset = preset
        self.seed = int(seed)
        self.params = _PRESET_PARAMS[preset]

    def __call__(self, frames: np.ndarray, video_key: str, view: int, start: int = 0, out: np.ndarray | None = None) -> np.ndarray:
        """Return view ``view`` of ``frames`` (uint8, (n, H, W, 3)); same shape and dtype.

        ``start``: the index of ``frames[0]`` in the video (a chunk's place), so
        per-frame noise is the same however the video is chunked. View 0, the
        ``"none"`` preset and empty input return ``frames`` itself, or a copy in ``out``.
        ``out``: where to write the view (uint8, the shape of ``frames``), e.g. shared memory; it is returned.
        """
        _check_frames(frames)
        if not isinstance(video_key, str):
            raise FramecacheError(f"video_key must be a string, got {video_key!r}")
        check("view", view, int, Interval(0, None))
        if out is not None and (out.shape != frames.shape or out.dtype != np.uint8):
            raise FramecacheError(f"out must be uint8 of the frames' shape {frames.shape}, got {out.dtype} {out.shape}")
        if view == 0 or self.preset == "none" or len(frames) == 0:
            if out is None:
                return frames
            out[...] = frames
            return out

        check("start", start, int, Interval(0, None))
        pipeline = self._build_pipeline(height=frames.shape[1], width=frames.shape[2])
        for step in pipeline.transforms:
            if isinstance(step, RandomSaltAndPepper):
                step.start = int(start)
        view_seed = _view_seed(self.seed, video_key, int(view))
        with _GLOBAL_RNG_LOCK, _seeded_global_rngs(view_seed), contextlib.redirect_stdout(io.StringIO()):
            augmented = pipeline(list(frames))
        changed = next((frame.shape for frame in augmented if frame.shape != frames.shape[1:]), None)
        if changed is not None or len(augmented) != len(frames):
            raise RuntimeError(f"augmentation changed the frame shape from {frames.shape[1:]} to {changed} "
                               f"or the frame count from {len(frames)} to {len(augmented)}")  # fmt: skip
        return np.stack(augmented, out=np.empty(frames.shape, np.uint8) if out is None else out, casting="unsafe")

    def describe(self) -> dict:
        """JSON-able description of the preset for the cache provenance."""
        return {
            "preset": self.preset,
            "seed": self.seed,
            "params": {name: value for name, value in asdict(self.params).items() if name in _DESCRIBED_ALWAYS or value},
            "transforms": [name for name, enabled in self._transform_names() if enabled],
            "vidaug_version": importlib.metadata.version("vidaug"),
        }

    def _transform_names(self) -> list[tuple[str, bool]]:
        params = self.params
        return [
            ("vidaug.Sometimes(HorizontalFlip)", params.flip_probability > 0),
            (
                "RandomAffine",
                params.max_translate > 0 or params.max_rotation_degrees > 0 or params.max_shear > 0 or params.max_scale > 0,
            ),
            ("RandomBrightnessContrast", params.max_brightness > 0 or params.max_contrast > 0),
            ("RandomGaussianBlur", params.max_blur_sigma > 0),
            ("RandomSaltAndPepper", params.max_noise > 0),
        ]

    def _build_pipeline(self, height: int, width: int) -> va.Sequential:
        """The transform for frames of this size (translation is in pixels in vidaug)."""
        params = self.params
        steps = []
        if params.flip_probability > 0:
            steps.append(va.Sometimes(params.flip_probability, HorizontalFlip()))
        if params.max_translate > 0 or params.max_rotation_degrees > 0 or params.max_shear > 0 or params.max_scale > 0:
            steps.append(RandomAffine(params.max_translate, params.max_rotation_degrees, params.max_shear, params.max_scale))
        if params.max_brightness > 0 or params.max_contrast > 0:
            steps.append(RandomBrightnessContrast(params.max_brightness, params.max_contrast))
        if params.max_blur_sigma > 0:
            steps.append(RandomGaussianBlur(params.max_blur_sigma))
        if params.max_noise > 0:  # last: noise on top of the blur, as a sensor adds it
            steps.append(RandomSaltAndPepper(params.max_noise))
        return va.Sequential(steps)


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray):
        raise FramecacheError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise FramecacheError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise FramecacheError(f"frames must have shape (n, height, width, 3), got {frames.shape}")


def _view_seed(seed: int, video_key: str, view: int) -> int:
    """A stable 64-bit seed for one view of one video (same in every process and run)."""
    digest = hashlib.sha256(f"{seed}\x00{video_key}\x00{view}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@contextlib.contextmanager
def _seeded_global_rngs(seed: int):
    """Seed ``random`` and ``np.random`` (which vidaug draws from); restore them afterwards."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
