"""The backbone factory: shapes, engines agreeing, weights handling, the offline Lite0 conversion."""

import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_provenance

from framecache.common.errors import FramecacheError
from framecache.common.provenance import BackboneDescription
from framecache.extract import engines, lite0
from framecache.extract.backbones import (
    available_backbones,
    backbone_from_provenance,
    build_backbone,
    plan_backbone,
    sha256_of,
)

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared/weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5"


def frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 224, 224, 3), dtype=np.uint8)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_registry_lists_the_backbones():
    assert {"efficientnetb0", "mobilenet_v2", "efficientnet_lite0"} <= set(available_backbones())
    with pytest.raises(FramecacheError, match="unknown backbone 'resnet9000'.*efficientnetb0"):
        build_backbone("resnet9000", "none")
    with pytest.raises(FramecacheError, match="engine must be"):
        build_backbone("efficientnetb0", "none", engine="onnx")


@pytest.mark.parametrize("name", ["efficientnetb0", "mobilenet_v2", "efficientnet_lite0"])
def test_output_shape_for_any_number_of_frames(name):
    backbone = build_backbone(name, "none", engine="tensorflow", batch_size=4)
    assert (backbone.name, backbone.feature_dim, backbone.input_size) == (name, 1280, 224)
    assert (backbone.weights, backbone.weights_sha256, backbone.engine) == ("random", None, "tensorflow")
    empty = backbone.embed(np.zeros((0, 224, 224, 3), np.uint8))
    assert empty.shape == (0, 1280) and empty.dtype == np.float32
    features = backbone.embed(frames(5))  # one full batch and one padded to 4
    assert features.shape == (5, 1280) and features.dtype == np.float32
    np.testing.assert_allclose(features[4:], backbone.embed(frames(5)[4:]), rtol=1e-4, atol=1e-6)
    # Random weights give features of order 1 that still tell frames apart once stored as the cache stores them.
    assert 0.1 < np.sqrt(np.mean(features**2)) < 10 and not np.array_equal(*features[:2].astype(np.float16))
    with pytest.raises(ValueError, match="frames must be"):
        backbone.embed(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="frames must be uint8"):
        backbone.embed(frames(2).astype(np.float32))


@pytest.mark.parametrize(
    "name, weights, batch_size",  # 4: two OpenVINO streams of 2 frames; 3: one stream
    [("efficientnetb0", "none", 4), ("efficientnet_lite0", "imagenet", 4), pytest.param("mobilenet_v2", "none", 3, marks=pytest.mark.slow)],
)
def test_openvino_features_match_tensorflow(name, weights, batch_size, monkeypatch):
    batch = frames(6, seed=1)
    openvino = build_backbone(name, weights, engine="openvino", batch_size=batch_size)
    tensorflow = build_backbone(name, weights, engine="tensorflow", batch_size=batch_size)
    assert openvino.engine == "openvino" and tensorflow.engine == "tensorflow"
    assert cosine(openvino.embed(batch), tensorflow.embed(batch)).min() >= 0.999
    assert openvino.description == tensorflow.description  # the engine is not part of the provenance

    def converting_again(*args, **kwargs):
        raise AssertionError("converted again: the cached conversion should serve every batch size")

    monkeypatch.setattr(engines, "keras_model", converting_again)
    for other_batch_size in (batch_size, 2 * batch_size + 1):  # the same requests; one stream of another size
        again = build_backbone(name, weights, engine="openvino", batch_size=other_batch_size)
        np.testing.assert_allclose(again.embed(batch), openvino.embed(batch), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # three fresh processes, one of them converting (~10 s)
def test_processes_sharing_the_cache_convert_once(tmp_path):
    """Ray actors of a node start together: one converts, the others wait for it and read its file (no TensorFlow)."""
    code = ("import sys; from framecache.extract.backbones import build_backbone; "
            "build_backbone('mobilenet_v2', 'none', engine='openvino', batch_size=2); "
            "print('converted' if 'tensorflow' in sys.modules else 'read')")  # fmt: skip
    env = dict(os.environ, FRAMECACHE_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = sorted(process.communicate(timeout=300)[0].strip() for process in processes)
    assert outcomes == ["converted", "read", "read"]
    assert len(list((tmp_path / "cache" / "openvino").glob("*.xml"))) == 1


def test_a_conversion_lock_held_too_long_or_unavailable_lets_the_process_convert(tmp_path, monkeypatch, caplog):
    """A process whose converter hangs, or a system without ``fcntl``, does not stop the others: they convert too."""
    import fcntl

    path = tmp_path / "model.xml"
    with open(tmp_path / ".model.lock", "a") as held:  # another converter holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        with engines._one_converter_at_a_time(path, wait_s=1):
            entered = True
    assert entered and "waited 1 s for another process converting model.xml" in caplog.text
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl raises ImportError
    with engines._one_converter_at_a_time(path, wait_s=600):
        entered_without_fcntl = True
    assert entered_without_fcntl


def test_random_weights_are_reproducible_and_leave_global_random_state_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    first = build_backbone("mobilenet_v2", "none", engine="tensorflow", batch_size=2)
    assert np.random.random() == expected
    assert first.description == BackboneDescription(
        backbone="mobilenet_v2",
        weights="random",
        weights_sha256=None,
        input_size=224,
        feature_dim=1280,
        preprocessing="RGB x / 127.5 - 1",
    )
    provenance = make_provenance(backbone="mobilenet_v2", weights="random", weights_sha256=None, feature_dim=1280)
    second = backbone_from_provenance(provenance, engine="tensorflow", batch_size=2)
    np.testing.assert_array_equal(first.embed(frames(2)), second.embed(frames(2)))


def test_random_weights_are_scaled_by_a_power_of_two_and_a_silent_model_is_left_as_it_is():
    import keras

    spec = SimpleNamespace(input_size=8, input_mean=0.0, input_scale=1.0)
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    x = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3)).astype(np.float32)
    tiny = keras.Model(inputs, keras.layers.Rescaling(3e-9)(pooled))  # features near 4e-7, as random weights give
    scaled = np.asarray(engines._scaled_to_order_one(tiny, spec)(x))
    ratio = scaled / np.asarray(tiny(x))
    assert np.all(ratio == ratio.flat[0]) and np.log2(ratio.flat[0]) == 21 and 0.1 < np.sqrt(np.mean(scaled**2)) < 10
    silent = keras.Model(inputs, keras.layers.Rescaling(0.0)(pooled))  # nothing to scale: no error, still zeros
    assert not np.asarray(engines._scaled_to_order_one(silent, spec)(x)).any()


def test_lite0_checkpoint_reads_without_torch_and_classifies_a_cat():
    import skimage.data
    from skimage.transform import resize

    arrays = lite0.read_checkpoint(lite0.checkpoint_path())
    assert arrays["_conv_stem.weight"].shape == (32, 3, 3, 3) and arrays["_fc.weight"].shape == (1000, 1280)
    assert "torch" not in sys.modules
    model = lite0.build_model(include_top=True)
    lite0.load_checkpoint_into(model, arrays)  # raises if a layer or a tensor is left unmapped
    cat = skimage.data.chelsea()  # a 300x451 photo of a cat: centre square, resized to 224
    side = min(cat.shape[:2])
    top, left = (cat.shape[0] - side) // 2, (cat.shape[1] - side) // 2
    square = resize(cat[top : top + side, left : left + side], (224, 224), preserve_range=True, anti_aliasing=True)
    probabilities = model.predict((square[None].astype(np.float32) - lite0.INPUT_MEAN) / lite0.INPUT_SCALE, verbose=0)[0]
    top5 = np.argsort(probabilities)[::-1][:5]
    assert set(top5) & set(range(281, 286)), f"no cat class (ImageNet 281-285) in the top 5: {top5}"
    assert probabilities[281:286].sum() > 0.5


def test_the_checkpoint_reader_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {"weight": Evil()}):
            pickle.dump(part, handle, protocol=2)
    with pytest.raises(FramecacheError, match="refusing to load (posix|os|nt).system"):
        lite0.read_checkpoint(path)


def test_lite0_weights_are_converted_once_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "a"))
    described = plan_backbone("efficientnet_lite0", "imagenet").description
    cached = tmp_path / "a" / "models" / lite0.WEIGHTS_FILE
    assert described.weights == "imagenet" and described.weights_sha256 == sha256_of(cached)
    modified = cached.stat().st_mtime_ns
    assert plan_backbone("efficientnet_lite0", "imagenet").description == described
    assert cached.stat().st_mtime_ns == modified  # reused, not converted again
    # Another machine converts to the same bytes, so its features carry the same provenance.
    assert sha256_of(lite0.convert_imagenet_weights(tmp_path / "b")) == described.weights_sha256


def test_missing_or_mismatched_weights_files_are_clear_errors(tmp_path):
    with pytest.raises(FramecacheError, match="weights file not found: .*nope.weights.h5"):
        build_backbone("mobilenet_v2", str(tmp_path / "nope.weights.h5"))
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"this is no weights file")
    with pytest.raises(FramecacheError, match="cannot load weights .*junk.weights.h5 into mobilenet_v2"):
        build_backbone("mobilenet_v2", str(junk), engine="tensorflow")
    other = tmp_path / "lite0.weights.h5"
    lite0.build_model().save_weights(other)  # a real weights file, of another architecture
    expected = "cannot load weights .*lite0.weights.h5 into mobilenet_v2.*include_top=False"
    with pytest.raises(FramecacheError, match=expected):
        build_backbone("mobilenet_v2", str(other), engine="tensorflow")


def test_a_file_that_loads_nothing_is_refused_not_left_random(tmp_path, monkeypatch):
    import keras

    monkeypatch.setattr(keras.Model, "load_weights", lambda self, path: None)  # as if Keras skipped every layer
    path = tmp_path / "empty.weights.h5"
    path.write_bytes(b"")
    with pytest.raises(FramecacheError, match="left 52 of 52 kernels of mobilenet_v2 unloaded"):
        build_backbone("mobilenet_v2", str(path), engine="tensorflow")


@pytest.mark.slow  # a fresh process importing Keras; the fast suite checks weights-file errors in process
def test_imagenet_offline_says_where_to_put_the_file(tmp_path):
    """Offline, Keras cannot download: the message names the file, the folder and the alternatives.

    Keras reads KERAS_HOME when it is imported, so this runs in a fresh process.
    """
    env = dict(os.environ, KERAS_HOME=str(tmp_path), HOME=str(tmp_path))
    code = ("from framecache.cli import FlagSpelling; from framecache.common.options import spelled\n"
            "from framecache.extract.backbones import build_backbone\n"
            "with spelled(FlagSpelling()): build_backbone('efficientnetb0', 'imagenet')")  # worded as the command does
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if result.returncode == 0:
        pytest.skip("this machine can download ImageNet weights")
    assert "FramecacheError" in result.stderr
    assert "efficientnetb0_notop.h5" in result.stderr and str(tmp_path / "models") in result.stderr
    assert "--weights PATH" in result.stderr and "--backbone efficientnet_lite0" in result.stderr
    assert not (tmp_path / "models" / "efficientnetb0_notop.h5").exists()


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="the team's offline MobileNetV2 weights are not there")
def test_weights_file_loads_is_hashed_and_must_match_for_predict():
    backbone = build_backbone("mobilenet_v2", str(SHARED_WEIGHTS), engine="tensorflow", batch_size=2)
    assert backbone.weights == str(SHARED_WEIGHTS) and backbone.weights_sha256 == sha256_of(SHARED_WEIGHTS)
    random = build_backbone("mobilenet_v2", "none", engine="tensorflow", batch_size=2)
    assert cosine(backbone.embed(frames(2)), random.embed(frames(2))).max() < 0.99  # the weights were loaded
    changed = make_provenance(backbone="mobilenet_v2", weights=str(SHARED_WEIGHTS), weights_sha256="0" * 64, feature_dim=1280)
    with pytest.raises(FramecacheError, match="differ from those the features were made with"):
        backbone_from_provenance(changed, engine="tensorflow", batch_size=2)


def test_openvino_sends_no_telemetry(tmp_path):
    """``import openvino`` would write a client id under ~/intel and send a usage event; framecache declines."""
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path)  # OpenVINO's telemetry keeps its consent and client id under $HOME/intel
    code = "from framecache.extract.engines import import_openvino; import_openvino(); import openvino.tools.ovc"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env, check=True)
    assert not (tmp_path / "intel").exists()
