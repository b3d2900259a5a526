"""Tests for extract.augment: deterministic, chunk-consistent, side-effect-free views."""

from __future__ import annotations

import json
import random
import threading

import numpy as np
import pytest

from framecache.common.errors import FramecacheError
from framecache.extract.augment import AUGMENT_PRESETS, GaussianBlur, Pepper, Salt, ViewAugmenter

AUGMENTING_PRESETS = [preset for preset in AUGMENT_PRESETS if preset != "none"]
NOISY_PRESETS = ["blur-noise"]  # salt-and-pepper noise: new pixels every frame
STEADY_PRESETS = [preset for preset in AUGMENT_PRESETS if preset not in NOISY_PRESETS]


def make_frames(num_frames: int = 12, height: int = 64, width: int = 80) -> np.ndarray:
    """Textured frames (gradients plus noise) so that any transform changes pixels."""
    rng = np.random.default_rng(7)
    rows = np.linspace(0, 255, height)[:, None, None]
    cols = np.linspace(0, 255, width)[None, :, None]
    base = (0.5 * rows + 0.3 * cols + np.array([0, 40, 80])) % 256
    noise = rng.integers(0, 40, size=(num_frames, height, width, 3))
    return np.clip(base[None] + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
@pytest.mark.parametrize("shape", [(12, 64, 80, 3), (1, 224, 224, 3), (3, 47, 33, 3), (2, 5, 7, 3)])
def test_shape_and_dtype_preserved(preset: str, shape: tuple[int, ...]) -> None:
    frames = make_frames(*shape[:3])
    augmenter = ViewAugmenter(preset, seed=0)
    for view in range(4):
        out = augmenter(frames, "clip.mp4", view)
        assert out.shape == frames.shape
        assert out.dtype == np.uint8
        assert isinstance(out, np.ndarray)


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_view_zero_is_the_clean_video(preset: str) -> None:
    frames = make_frames()
    np.testing.assert_array_equal(ViewAugmenter(preset)(frames, "clip.mp4", 0), frames)


def test_none_preset_never_changes_frames() -> None:
    frames = make_frames()
    for view in range(5):
        np.testing.assert_array_equal(ViewAugmenter("none")(frames, "clip.mp4", view), frames)


@pytest.mark.parametrize("preset", AUGMENTING_PRESETS)
def test_views_are_augmented(preset: str) -> None:
    frames = make_frames()
    augmenter = ViewAugmenter(preset, seed=0)
    changed = [not np.array_equal(augmenter(frames, "clip.mp4", view), frames) for view in range(1, 6)]
    assert all(changed)


@pytest.mark.parametrize("preset", AUGMENTING_PRESETS)
def test_same_seed_key_and_view_give_identical_output(preset: str) -> None:
    frames = make_frames()
    first = ViewAugmenter(preset, seed=3)(frames, "a/clip.mp4", 2)
    random.seed(999)  # the output must not depend on the global random state
    np.random.seed(999)
    second = ViewAugmenter(preset, seed=3)(frames, "a/clip.mp4", 2)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("preset", AUGMENTING_PRESETS)
def test_view_key_and_seed_change_the_output(preset: str) -> None:
    frames = make_frames()
    reference = ViewAugmenter(preset, seed=3)(frames, "a/clip.mp4", 1)
    assert not np.array_equal(reference, ViewAugmenter(preset, seed=3)(frames, "a/clip.mp4", 2))
    assert not np.array_equal(reference, ViewAugmenter(preset, seed=3)(frames, "b/clip.mp4", 1))
    assert not np.array_equal(reference, ViewAugmenter(preset, seed=4)(frames, "a/clip.mp4", 1))


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_chunks_get_the_same_transform_as_the_whole_video(preset: str) -> None:
    frames = make_frames(num_frames=13)
    augmenter = ViewAugmenter(preset, seed=1)
    for view in range(4):
        whole = augmenter(frames, "clip.mp4", view)
        chunked = np.concatenate(
            [augmenter(frames[start:end], "clip.mp4", view, start=start) for start, end in ((0, 5), (5, 11), (11, 13))]
        )
        np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("preset", STEADY_PRESETS)
def test_the_same_transform_applies_to_every_frame(preset: str) -> None:
    frame = make_frames(num_frames=1)
    repeated = np.repeat(frame, 4, axis=0)
    out = ViewAugmenter(preset, seed=0)(repeated, "clip.mp4", 1)
    for index in range(1, 4):
        np.testing.assert_array_equal(out[index], out[0])


@pytest.mark.parametrize("preset", NOISY_PRESETS)
def test_noise_changes_every_frame_on_top_of_one_transform(preset: str) -> None:
    repeated = np.repeat(make_frames(num_frames=1), 6, axis=0)
    augmenter = ViewAugmenter(preset, seed=0)
    for view in range(1, 6):
        out = augmenter(repeated, "clip.mp4", view)
        differing = [np.any(out[index] != out[0], axis=-1).mean() for index in range(1, 6)]
        assert max(differing) <= 0.05, "the same transform for every frame, only the noise pixels differ"
        assert augmenter(repeated, "clip.mp4", view, start=3)[0].tobytes() == out[3].tobytes(), "noise follows the frame's index"


def test_presets_added_later_keep_the_earlier_descriptions() -> None:
    """The provenance of a cache made with an earlier preset (its hash decides resuming) must not change."""
    expected = {
        "none": {"flip_probability": 0.0, "max_translate": 0.0, "max_rotation_degrees": 0.0, "max_shear": 0.0, "max_brightness": 0.0, "max_contrast": 0.0},
        "light": {"flip_probability": 0.5, "max_translate": 0.05, "max_rotation_degrees": 0.0, "max_shear": 0.0, "max_brightness": 15.0, "max_contrast": 0.0},
        "default": {"flip_probability": 0.5, "max_translate": 0.06, "max_rotation_degrees": 8.0, "max_shear": 0.05, "max_brightness": 20.0, "max_contrast": 0.15},
    }
    transforms = ["vidaug.Sometimes(HorizontalFlip)", "RandomAffine", "RandomBrightnessContrast"]
    for preset, params in expected.items():
        description = ViewAugmenter(preset, seed=2).describe()
        assert description == {"preset": preset, "seed": 2, "params": params, "transforms": transforms if preset != "none" else [],
                               "vidaug_version": description["vidaug_version"]}
    noisy = ViewAugmenter("blur-noise").describe()
    assert noisy["params"]["max_blur_sigma"] > 0 and noisy["params"]["max_noise"] > 0
    assert noisy["transforms"] == [*transforms, "RandomGaussianBlur", "RandomSaltAndPepper"]


def test_blur_noise_starts_with_the_default_transform() -> None:
    """Its flip, warp and brightness are drawn as the default preset's: blur and noise come on top."""
    frames = make_frames()
    default, noisy = ViewAugmenter("default", seed=4)(frames, "clip.mp4", 1), ViewAugmenter("blur-noise", seed=4)(frames, "clip.mp4", 1)
    assert np.abs(noisy.astype(int) - default.astype(int)).mean() < 25
    assert not np.array_equal(noisy, default)


def test_vidaugs_blur_and_noise_fixed() -> None:
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[:, 16:, 0] = 255  # a red half: a blur across channels would leak red into green and blue
    blurred = GaussianBlur(2.0)([frame])[0]
    assert blurred.dtype == np.uint8 and blurred[..., 1:].max() == 0 and 0 < blurred[16, 15, 0] < 255
    noisy = Salt(ratio=10)([frame, frame])
    white = [np.all(out == 255, axis=-1) for out in noisy]
    assert 0.03 < white[0].mean() < 0.2, "about one pixel in ten, whole pixels"
    changed = np.any(noisy[0] != frame, axis=-1)
    assert np.array_equal(changed & (frame[..., 0] == 0), white[0] & (frame[..., 0] == 0)), "set pixels are white in every channel"
    assert not np.array_equal(white[0], white[1]), "new pixels every frame"
    assert np.all(Pepper(ratio=10)([frame + 50])[0].min(axis=-1) >= 0)


def test_global_random_states_untouched() -> None:
    random.seed(123)
    np.random.seed(456)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    augmenter = ViewAugmenter("default", seed=0)
    augmenter(make_frames(), "clip.mp4", 1)
    augmenter(make_frames(), "clip.mp4", 2)
    assert random.getstate() == python_state
    restored = np.random.get_state()
    assert restored[0] == numpy_state[0]
    np.testing.assert_array_equal(restored[1], numpy_state[1])
    assert restored[2:] == numpy_state[2:]


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_nothing_printed(preset: str, capsys: pytest.CaptureFixture[str]) -> None:
    ViewAugmenter(preset)(make_frames(), "clip.mp4", 1)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_empty_input_keeps_its_shape() -> None:
    frames = np.zeros((0, 32, 32, 3), dtype=np.uint8)
    assert ViewAugmenter("default")(frames, "clip.mp4", 1).shape == (0, 32, 32, 3)


def test_threads_get_the_same_results_as_serial_calls() -> None:
    frames = make_frames()
    augmenter = ViewAugmenter("default", seed=0)
    expected = {view: augmenter(frames, "clip.mp4", view) for view in range(1, 9)}
    results: dict[int, np.ndarray] = {}

    def work(view: int) -> None:
        for _ in range(5):
            results[view] = augmenter(frames, "clip.mp4", view)

    threads = [threading.Thread(target=work, args=(view,)) for view in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for view, output in expected.items():
        np.testing.assert_array_equal(results[view], output)


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(FramecacheError, match="augment must be one of none, light, default, blur-noise, pose, got 'strong'"):
        ViewAugmenter("strong")


@pytest.mark.parametrize(
    "frames, key, view, message",
    [
        (np.zeros((2, 8, 8, 3), np.float32), "k", 1, "uint8"),
        (np.zeros((8, 8, 3), np.uint8), "k", 1, r"\(8, 8, 3\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), "k", 1, r"\(2, 8, 8, 4\)"),
        ([[0]], "k", 1, "numpy array"),
        (np.zeros((2, 8, 8, 3), np.uint8), 5, 1, "video_key"),
        (np.zeros((2, 8, 8, 3), np.uint8), "k", -1, "view must be .* got -1"),
    ],
)
def test_bad_arguments(frames, key, view, message: str) -> None:
    with pytest.raises(FramecacheError, match=message):
        ViewAugmenter("default")(frames, key, view)


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_describe_is_json_able(preset: str) -> None:
    description = ViewAugmenter(preset, seed=5).describe()
    assert json.loads(json.dumps(description)) == description
    assert description["preset"] == preset
    assert description["seed"] == 5
    assert (description["transforms"] == []) == (preset == "none")


def test_the_pose_preset_mirrors_tilts_shifts_and_zooms_and_is_a_pose_backbones_default() -> None:
    from framecache.common.config import ExtractConfig

    description = ViewAugmenter("pose", seed=1).describe()
    assert description["params"] == {"flip_probability": 0.5, "max_translate": 0.05, "max_rotation_degrees": 10.0, "max_shear": 0.0,
                                     "max_brightness": 0.0, "max_contrast": 0.0, "max_scale": 0.1}
    assert description["transforms"] == ["vidaug.Sometimes(HorizontalFlip)", "RandomAffine"]
    frames = make_frames()
    views = [ViewAugmenter("pose", seed=1)(frames, f"clip{index}.mp4", 1) for index in range(6)]
    assert all(not np.array_equal(view, frames) for view in views)
    assert ExtractConfig(backbone="pose").augment_preset() == "pose" and ExtractConfig(backbone="pose_lite").augment_preset() == "pose"
    assert ExtractConfig().augment_preset() == "default", "a CNN's caches keep the preset, and so their provenance"
    assert ExtractConfig(backbone="pose", augment="light").augment_preset() == "light"


# sha256 (first 16 hex digits) of views 1 and 2 of two videos (seed 3, start 5) of make_frames(6, 224, 224) and
# make_frames(5, 47, 33), per preset: the pixels every preset made before its augmentation was made faster. A preset's
# views may change only as a new preset (its own name in the provenance); these must then stay as they are.
PRESET_PIXELS = {
    (6, 224, 224): {"none": "8a4ab2f3e990e37f", "light": "5468c51f52d467a8", "default": "3e49d0e19c7e7f8d",
                    "blur-noise": "da439b16b7cb98cf", "pose": "a7f983405288b6c2"},
    (5, 47, 33): {"none": "33094c220a76f81d", "light": "73928c2ea43180ec", "default": "8120899a446abd8b",
                  "blur-noise": "e7f104da694d657a", "pose": "13eb38471f19d5fe"},
}  # fmt: skip


@pytest.mark.parametrize("shape", list(PRESET_PIXELS))
@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_every_preset_keeps_its_pixels(shape: tuple[int, int, int], preset: str) -> None:
    import hashlib

    frames = make_frames(*shape)
    digest = hashlib.sha256()
    for view in (1, 2):
        for key in ("a.mp4", "b/c.mp4"):
            digest.update(ViewAugmenter(preset, seed=3)(frames, key, view, start=5).tobytes())
    assert digest.hexdigest()[:16] == PRESET_PIXELS[shape][preset]


def test_warp_through_rgba_is_opencvs_rgb_warp() -> None:
    import cv2

    from framecache.extract.augment import warp_affine

    draw = random.Random(0)
    for height, width in [(224, 224), (225, 223), (120, 160), (7, 9)]:
        for flipped in (False, True):
            frame = make_frames(1, height, width)[0]
            frame = np.fliplr(frame) if flipped else frame  # a view, as after a horizontal flip
            for _ in range(40):
                matrix = cv2.getRotationMatrix2D((width / 2, height / 2), draw.uniform(-30, 30), draw.uniform(0.7, 1.3))
                matrix[:, 1] += [draw.uniform(-0.3, 0.3), 0.0]
                matrix[:, 2] += [draw.uniform(-20, 20), draw.uniform(-20, 20)]
                expected = cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR)
                np.testing.assert_array_equal(warp_affine(frame, matrix), expected)
