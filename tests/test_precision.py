"""--precision f32|bf16: validated, recorded in the provenance (f32 keeps old hashes), refused where the hardware lacks it."""

import numpy as np
import pytest
from conftest import make_provenance

from framecache.cli import FlagSpelling, MakeSpelling
from framecache.common import options
from framecache.common.config import PRECISIONS, ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.common.provenance import Provenance
from framecache.extract import backbones, engines
from framecache.extract.backbones import build_backbone, check_precision


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def openvino_bf16() -> bool:
    try:
        return engines.openvino_has_bf16()
    except ImportError:
        return False


def test_precision_is_an_option_with_f32_as_default():
    assert PRECISIONS == ("f32", "bf16")
    assert ExtractConfig().precision == "f32"
    assert ExtractConfig(precision="bf16").validate().precision == "bf16"
    with options.spelled(FlagSpelling()), pytest.raises(FramecacheError, match="--precision must be one of f32, bf16, got 'fp8'"):
        ExtractConfig(precision="fp8").validate()


def test_f32_keeps_the_stored_form_and_hash_of_older_provenances():
    old = make_provenance().to_dict()
    assert "precision" not in old  # never stored at its default
    assert Provenance.from_dict(old).precision == "f32"
    assert Provenance.from_dict(old).hash == make_provenance().hash == make_provenance(precision="f32").hash
    assert Provenance.from_dict({**old, "precision": "f32"}).hash == make_provenance().hash


def test_bf16_changes_the_hash_and_shows_as_a_difference():
    f32, bf16 = make_provenance(), make_provenance(precision="bf16")
    assert bf16.hash != f32.hash
    assert bf16.to_dict()["precision"] == "bf16"
    assert Provenance.from_json(bf16.to_json()) == bf16
    assert f32.differences(bf16) == [("precision", "f32", "bf16")]
    (warning,) = f32.check_features(bf16, "cache c.h5")  # a model reads either, with a warning
    assert "precision: model 'f32', cache c.h5 'bf16'" in warning
    built = Provenance.build(ExtractConfig(precision="bf16"), backbones.plan_backbone("mobilenet_v2", "none").description, {}, "r")
    assert built.precision == "bf16"


def test_bf16_refused_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(engines, "openvino_has_bf16", lambda: False)
    with pytest.raises(FramecacheError, match=r"precision='bf16': this CPU has no native bfloat16.*precision='f32'"):
        build_backbone("mobilenet_v2", "none", engine="openvino", precision="bf16")
    with pytest.raises(FramecacheError, match="no native bfloat16"):
        check_precision("bf16", "openvino")
    check_precision("f32", "openvino")  # f32 runs everywhere


def test_bf16_refused_for_tensorflow_on_the_cpu(monkeypatch):
    monkeypatch.setattr(engines, "tensorflow_sees_gpu", lambda: False)
    with options.spelled(MakeSpelling()), pytest.raises(FramecacheError, match="PRECISION=bf16 with engine tensorflow needs a GPU.*ENGINE=openvino"):
        build_backbone("mobilenet_v2", "none", engine="tensorflow", precision="bf16")


def test_extraction_refuses_bf16_before_touching_the_cache(monkeypatch, tmp_path):
    from framecache.extract.pipeline import run_extraction

    monkeypatch.setattr(engines, "openvino_has_bf16", lambda: False)
    config = ExtractConfig(csv=str(tmp_path / "none.csv"), out=str(tmp_path / "f.h5"), engine="openvino", precision="bf16")
    with pytest.raises(FramecacheError, match="no native bfloat16"):
        run_extraction(config)
    assert not (tmp_path / "f.h5").exists()


def test_predict_falls_back_to_f32_where_bf16_is_missing(monkeypatch, caplog):
    monkeypatch.setattr(engines, "openvino_has_bf16", lambda: False)
    provenance = make_provenance(backbone="mobilenet_v2", feature_dim=1280, precision="bf16")
    backbone = backbones.backbone_from_provenance(provenance, engine="openvino", batch_size=2)
    assert backbone.precision == "f32"
    assert "embedding in f32 instead" in caplog.text


@pytest.mark.skipif(not openvino_bf16(), reason="this CPU has no native bfloat16 for OpenVINO (no BF16 capability)")
def test_openvino_bf16_features_are_close_to_f32():
    frames = np.random.default_rng(2).integers(0, 256, size=(4, 224, 224, 3), dtype=np.uint8)
    f32 = build_backbone("efficientnet_lite0", "imagenet", engine="openvino", batch_size=4)
    bf16 = build_backbone("efficientnet_lite0", "imagenet", engine="openvino", batch_size=4, precision="bf16")
    assert (f32.precision, bf16.precision) == ("f32", "bf16")
    assert cosine(f32.embed(frames), bf16.embed(frames)).min() > 0.99
    assert not np.array_equal(f32.embed(frames), bf16.embed(frames))  # bf16 really ran


def test_tensorflow_bf16_builds_under_mixed_precision_and_restores_the_policy():
    """The GPU path's model (its speed needs a GPU; the arithmetic runs on the CPU too)."""
    import keras

    spec = backbones._spec("mobilenet_v2")
    mixed = engines.keras_model(spec, None, "mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the caller's policy is back
    assert {layer.compute_dtype for layer in mixed.layers if layer.weights} == {"bfloat16"}
    frames = np.random.default_rng(3).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    bf16 = engines.tensorflow_runner(mixed, spec, 2)(frames)
    f32 = engines.tensorflow_runner(engines.keras_model(spec, None), spec, 2)(frames)
    assert bf16.dtype == np.float32 and cosine(bf16, f32).min() > 0.98
