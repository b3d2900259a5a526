"""Provenance: built once, hashed as before (existing caches still resume), read tolerantly, compared by its own rules."""

import json

import pytest
from conftest import make_provenance

from framecache.common.config import ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.common.provenance import BackboneDescription, Provenance

RESIZE = "shorter side to size keeping aspect ratio (bilinear, in the decoder), then centre crop size x size"
AUGMENT_PARAMS = {
    "preset": "light",
    "seed": 3,
    "params": {"flip_probability": 0.5, "max_translate": 0.05, "max_rotation_degrees": 0.0, "max_shear": 0.0,
               "max_brightness": 15.0, "max_contrast": 0.0},
    "transforms": ["vidaug.Sometimes(HorizontalFlip)", "RandomAffine", "RandomBrightnessContrast"],
    "vidaug_version": "1.5",
}  # fmt: skip
BACKBONE = BackboneDescription(
    backbone="efficientnetb0",
    weights="imagenet",
    weights_sha256="ab" * 32,
    input_size=224,
    feature_dim=1280,
    preprocessing="RGB 0..255 (the model rescales and normalises inside)",
)
# What stage one stored for these settings before Provenance existed (extract/pipeline.py's
# build_provenance), and the hash the cache module of the time (common/cache.py, now the common/cache/
# package) gave it with its provenance_hash: computed with that code.
STORED = {
    "schema_version": 1, "backbone": "efficientnetb0", "weights": "imagenet", "weights_sha256": "ab" * 32,
    "input_size": 224, "feature_dim": 1280, "preprocessing": "RGB 0..255 (the model rescales and normalises inside)",
    "resize": RESIZE, "decoder": "pyav", "frame_step": 1, "fps": 12.5, "views": 3, "augment": "light",
    "augment_params": AUGMENT_PARAMS, "seed": 3,
}  # fmt: skip
STORED_HASH = "dc5f5690b0477d9f73fbe23a63476e516d24b0cb302f5718d03216c2b9981770"
# Random MobileNetV2 weights, every second frame, one view, decord: the same, second case.
STORED_RANDOM_HASH = "858c1db387e2f19687862d6fe9ca686ff8468b4a438da0ba4a252630d3b9995d"


def test_build_records_what_stage_one_always_recorded_with_the_same_hash():
    config = ExtractConfig(views=3, augment="light", seed=3, fps=12.5, decoder="pyav")
    provenance = Provenance.build(config, BACKBONE, AUGMENT_PARAMS, RESIZE)
    # Caches are now of schema 2 (shards): the schema version is the one field that changed since.
    assert provenance.schema_version == 2
    provenance = provenance.replace(schema_version=1)
    assert provenance.to_dict() == {**STORED, "framecache_version": None}
    assert provenance.hash == STORED_HASH
    assert Provenance.from_dict(STORED).hash == STORED_HASH
    assert provenance.replace(framecache_version="9.9").hash == STORED_HASH  # the package version is not hashed
    assert provenance.replace(seed=4).hash != STORED_HASH


def test_hash_of_random_weights_and_native_frame_rate_is_unchanged():
    config = ExtractConfig(views=1, augment="none", seed=0, decoder="decord", frame_step=2).validate()
    backbone = BackboneDescription("mobilenet_v2", "random", None, 224, 1280, "RGB x / 127.5 - 1")
    none = {"preset": "none", "seed": 0, "params": dict.fromkeys(AUGMENT_PARAMS["params"], 0.0), "transforms": [], "vidaug_version": "1.5"}
    provenance = Provenance.build(config, backbone, none, RESIZE).replace(schema_version=1)  # as stored in schema 1
    assert provenance.fps is None and provenance.weights_sha256 is None
    assert provenance.hash == STORED_RANDOM_HASH


def test_json_round_trip_keeps_unknown_keys_and_fills_missing_ones():
    newer = {**STORED, "framecache_version": "0.9", "colour_space": "srgb"}  # a key a later version may add
    provenance = Provenance.from_json(json.dumps(newer))
    assert provenance.extra == {"colour_space": "srgb"}
    assert json.loads(provenance.to_json()) == newer
    assert Provenance.from_json(provenance.to_json()) == provenance
    assert provenance.hash != STORED_HASH  # a field this version cannot reproduce: no resume by accident

    older = Provenance.from_dict({"backbone": "synthetic", "weights": "imagenet", "feature_dim": 8, "views": 1})
    assert (older.decoder, older.frame_step, older.fps, older.input_size, older.extra) == ("pyav", 1, None, None, {})
    with pytest.raises(FramecacheError, match="lacks feature_dim, views"):
        Provenance.from_dict({"backbone": "x", "weights": "random"})
    with pytest.raises(FramecacheError, match="not valid JSON"):
        Provenance.from_json("{not json")


def test_differences_name_the_fields_that_decide_features():
    first = Provenance.from_dict(STORED)
    second = first.replace(views=2, seed=5, framecache_version="other")
    assert first.differences(second) == [("seed", 3, 5), ("views", 3, 2)]
    assert first.differences(first.replace(framecache_version="other")) == []


def test_a_model_refuses_other_features_and_warns_of_other_sampling():
    model = make_provenance(backbone="efficientnetb0", feature_dim=1280, frame_step=1)
    assert model.check_features(model.replace(seed=9, views=1), "cache c.h5") == []
    with pytest.raises(FramecacheError, match=r"backbone: model 'efficientnetb0', cache c.h5 'x'; feature_dim: model 1280, cache c.h5 640"):
        model.check_features(model.replace(backbone="x", feature_dim=640), "cache c.h5")
    with pytest.raises(FramecacheError, match="weights_sha256: model None, cache c.h5 '00'"):
        model.check_features(model.replace(weights_sha256="00"), "cache c.h5")
    assert model.check_features(model.replace(input_size=None), "cache c.h5") == []  # an older cache records none
    (warning,) = model.check_features(model.replace(frame_step=2), "cache c.h5")
    assert "frame_step: model 1, cache c.h5 2" in warning


def test_a_rebuilt_backbone_must_have_the_recorded_weights():
    provenance = Provenance.from_dict(STORED)
    provenance.check_backbone(BACKBONE)
    with pytest.raises(FramecacheError, match="differ from those the features were made with"):
        provenance.check_backbone(BackboneDescription("efficientnetb0", "imagenet", "cd" * 32, 224, 1280, "x"))
    with pytest.raises(FramecacheError, match="feature_dim: features 1280, backbone 640"):
        provenance.check_backbone(BackboneDescription("efficientnetb0", "imagenet", "ab" * 32, 224, 640, "x"))
