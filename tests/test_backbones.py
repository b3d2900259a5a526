"""The backbone factory: shapes, engines agreeing, weights handling, the offline Lite0 conversion."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import FramecacheError
from extract import lite0
from extract.backbones import available_backbones, backbone_from_provenance, build_backbone, describe_backbone

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared/weights/mobilenet_v2_1.0_224_imagenet_notop.weights.h5"


def frames(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(count, 224, 224, 3), dtype=np.uint8)


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_registry_lists_the_backbones():
    assert {"efficientnetb0", "mobilenet_v2", "efficientnet_lite0"} <= set(available_backbones())
    with pytest.raises(FramecacheError, match="unknown backbone 'resnet9000'.*efficientnetb0"):
        describe_backbone("resnet9000", "none")


@pytest.mark.parametrize("name", ["efficientnetb0", "mobilenet_v2", "efficientnet_lite0"])
def test_output_shape_for_any_number_of_frames(name):
    backbone = build_backbone(name, "none", engine="tensorflow", batch_size=4)
    assert (backbone.feature_dim, backbone.input_size, backbone.weights) == (1280, 224, "random")
    assert backbone.embed(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 1280)
    features = backbone.embed(frames(5))  # one full batch and a padded one
    assert features.shape == (5, 1280) and features.dtype == np.float32
    np.testing.assert_allclose(features[4:], backbone.embed(frames(5)[4:]), rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="frames must be"):
        backbone.embed(np.zeros((2, 100, 100, 3), np.uint8))


@pytest.mark.parametrize("name, weights", [("efficientnetb0", "none"), ("efficientnet_lite0", "imagenet")])
def test_openvino_features_match_tensorflow(name, weights):
    batch = frames(6, seed=1)
    openvino = build_backbone(name, weights, engine="openvino", batch_size=4)
    tensorflow = build_backbone(name, weights, engine="tensorflow", batch_size=4)
    assert openvino.engine == "openvino" and tensorflow.engine == "tensorflow"
    assert cosine(openvino.embed(batch), tensorflow.embed(batch)).min() >= 0.999
    assert openvino.provenance() == tensorflow.provenance()  # the engine is not part of the provenance


def test_random_weights_are_reproducible_for_predict():
    first = build_backbone("mobilenet_v2", "none", engine="tensorflow", batch_size=2)
    second = backbone_from_provenance(first.provenance(), engine="tensorflow", batch_size=2)
    np.testing.assert_array_equal(first.embed(frames(2)), second.embed(frames(2)))


def test_lite0_checkpoint_reads_without_torch_and_classifies_a_cat():
    import skimage.data
    from skimage.transform import resize

    arrays = lite0.read_checkpoint(lite0.checkpoint_path())
    assert arrays["_conv_stem.weight"].shape == (32, 3, 3, 3) and arrays["_fc.weight"].shape == (1000, 1280)
    model = lite0.build_model(include_top=True)
    lite0.load_checkpoint_into(model, arrays)
    cat = skimage.data.chelsea()  # 300x451 photo of a cat
    side = min(cat.shape[:2])
    top, left = (cat.shape[0] - side) // 2, (cat.shape[1] - side) // 2
    square = resize(cat[top : top + side, left : left + side], (224, 224), preserve_range=True, anti_aliasing=True)
    probabilities = model.predict(lite0.preprocess(square[None].astype(np.float32)), verbose=0)[0]
    top5 = np.argsort(probabilities)[::-1][:5]
    assert set(top5) & set(range(281, 286)), f"no cat class (281-285) in the top 5: {top5}"
    assert probabilities[281:286].sum() > 0.5


def test_lite0_weights_are_converted_once_and_hashed(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    described = describe_backbone("efficientnet_lite0", "imagenet")
    cached = tmp_path / "models" / lite0.WEIGHTS_FILE
    assert cached.is_file() and described["weights"] == "imagenet"
    modified = cached.stat().st_mtime_ns
    assert describe_backbone("efficientnet_lite0", "imagenet")["weights_sha256"] == described["weights_sha256"]
    assert cached.stat().st_mtime_ns == modified  # reused, not converted again


def test_missing_or_wrong_weights_files_are_clear_errors(tmp_path):
    with pytest.raises(FramecacheError, match="weights file not found: .*nope.h5"):
        build_backbone("mobilenet_v2", str(tmp_path / "nope.h5"))
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"this is no weights file")
    with pytest.raises(FramecacheError, match="cannot load weights .*junk.weights.h5 into mobilenet_v2"):
        build_backbone("mobilenet_v2", str(junk))


def test_imagenet_offline_says_where_to_put_the_file(tmp_path):
    """Offline, Keras cannot download: the message names the file, the folder and the alternatives."""
    env = dict(os.environ, KERAS_HOME=str(tmp_path), HOME=str(tmp_path))
    code = "from extract.backbones import build_backbone; build_backbone('efficientnetb0', 'imagenet')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if result.returncode == 0:
        pytest.skip("this machine can download ImageNet weights")
    assert "FramecacheError" in result.stderr
    assert "efficientnetb0_notop.h5" in result.stderr and str(tmp_path / "models") in result.stderr
    assert "--weights" in result.stderr and "efficientnet_lite0" in result.stderr


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="the team's offline MobileNetV2 weights are not beside the checkout")
def test_pretrained_weights_file_loads_and_is_hashed():
    from extract.backbones import sha256_of

    backbone = build_backbone("mobilenet_v2", str(SHARED_WEIGHTS), engine="tensorflow", batch_size=2)
    assert backbone.weights == SHARED_WEIGHTS.name and backbone.weights_sha256 == sha256_of(SHARED_WEIGHTS)
    features = backbone.embed(frames(2))
    assert np.abs(features).mean() > 1e-3  # pretrained features are not the near-zero ones of random weights
