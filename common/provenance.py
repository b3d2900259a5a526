"""What made a cache's features, as one typed record: built by stage one, checked by resume, train and predict.

A :class:`Provenance` is stored in the cache as JSON (the ``provenance``
attribute, keys sorted) and inside every trained ``model.keras``. It owns the
rules about itself:

- :meth:`Provenance.build`: what stage one records for a run;
- :attr:`Provenance.hash`: the SHA-256 over every field that decides the
  features (all but :data:`NON_FEATURE_FIELDS`), the key a cache resumes by;
- :meth:`Provenance.differences`: those fields where two provenances disagree
  (why a resume is refused);
- :meth:`Provenance.check_features` and :meth:`Provenance.check_backbone`:
  whether features of a cache, or of a rebuilt backbone, are the kind a model
  was trained on.

Reading is tolerant: a key this version does not know (a newer framecache's)
is kept in ``extra`` and written back unchanged; a missing optional key takes
its default. Only ``backbone``, ``weights``, ``feature_dim`` and ``views`` are
required.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from framecache.common.errors import FramecacheError

if TYPE_CHECKING:
    from framecache.common.config import ExtractConfig

# Fields that do not change the features: left out of the hash and of ``differences``.
NON_FEATURE_FIELDS = ("framecache_version",)
# Fields that decide what a feature vector means: a model only reads features that agree on all of them.
FEATURE_IDENTITY = ("backbone", "weights", "weights_sha256", "input_size", "resize", "feature_dim")
# Of those, the ones a provenance written by hand (or by an early version) may lack: compared where both have them.
# (``weights_sha256`` None is a value: random weights.)
OPTIONAL_IDENTITY = ("input_size", "resize")
# Fields that change the temporal sampling: a difference is allowed, with a warning.
FEATURE_SAMPLING = ("frame_step", "fps")
REQUIRED_FIELDS = ("backbone", "weights", "feature_dim", "views")
# Fields added after caches existed: stored (and hashed) only where they differ from their default,
# so every provenance written before them keeps its stored form and its hash.
OMITTED_AT_DEFAULT = {"precision": "f32"}
# Fields that change the features' numerics only (cosine >= 0.99): a difference is allowed, with a warning.
FEATURE_NUMERICS = ("precision",)


def _json_copy(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so equality survives a round trip."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class BackboneDescription:
    """What decides a backbone's features (the engine does not): part of every provenance."""

    backbone: str
    weights: str  # imagenet | random | the weights file's path as given
    weights_sha256: str | None  # None: random weights
    input_size: int
    feature_dim: int
    preprocessing: str


@dataclass(frozen=True)
class Provenance:
    """Everything that decides a cache's features, plus the framecache version that made them."""

    backbone: str
    weights: str
    feature_dim: int
    views: int  # view 0 is the clean video
    weights_sha256: str | None = None
    input_size: int | None = None
    preprocessing: str | None = None
    resize: str | None = None
    decoder: str = "pyav"
    frame_step: int = 1
    fps: float | None = None
    augment: str = "none"
    augment_params: dict = field(default_factory=dict)  # ViewAugmenter.describe()
    seed: int = 0
    precision: str = "f32"  # the CNN's arithmetic (f32 | bf16): a cache never mixes precisions
    schema_version: int | None = None  # the cache schema it was made for
    framecache_version: str | None = None  # set by the cache writer; not part of the hash
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as read

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment_params", _json_copy(self.augment_params))
        object.__setattr__(self, "extra", _json_copy(self.extra))

    @classmethod
    def build(
        cls, config: ExtractConfig, backbone: BackboneDescription, augment_params: dict, resize: str
    ) -> Provenance:
        """What stage one records for a run of ``config`` with this backbone, augmentation and resize policy."""
        from framecache.common.cache import SCHEMA_VERSION  # here: the cache module imports this one

        return cls(
            schema_version=SCHEMA_VERSION,
            backbone=backbone.backbone,
            weights=backbone.weights,
            weights_sha256=backbone.weights_sha256,
            input_size=backbone.input_size,
            feature_dim=backbone.feature_dim,
            preprocessing=backbone.preprocessing,
            resize=resize,
            decoder=config.decoder,
            frame_step=config.frame_step,
            fps=config.fps,
            views=config.views,
            augment=config.augment_preset(),
            augment_params=augment_params,
            seed=config.seed,
            precision=config.precision,
        )

    # -- (de)serialising

    def to_dict(self) -> dict:
        """The JSON-able form stored in caches and models: every field by name, unknown keys as read."""
        values = {item.name: getattr(self, item.name) for item in fields(self) if item.name != "extra"}
        values = {key: value for key, value in values.items() if key not in OMITTED_AT_DEFAULT or value != OMITTED_AT_DEFAULT[key]}
        return _json_copy({**self.extra, **values})

    def to_json(self) -> str:
        """The cache's ``provenance`` attribute: :meth:`to_dict` with sorted keys."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping) -> Provenance:
        """Read a stored provenance (a cache's or a model's, of any framecache version)."""
        if not isinstance(data, Mapping):
            raise FramecacheError(f"a framecache provenance is a JSON object, got {type(data).__name__}")
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        if missing:
            raise FramecacheError(f"the provenance lacks {', '.join(missing)}: it was not written by framecache")
        known = {item.name for item in fields(cls)} - {"extra"}
        return cls(
            **{key: value for key, value in data.items() if key in known},
            extra={key: value for key, value in data.items() if key not in known},
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Provenance:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise FramecacheError(f"the provenance is not valid JSON ({error})") from None
        return cls.from_dict(data)

    def replace(self, **changes) -> Provenance:
        """A copy with ``changes`` (fields by name)."""
        return replace(self, **changes)

    # -- the rules

    def _feature_fields(self) -> dict:
        return {key: value for key, value in self.to_dict().items() if key not in NON_FEATURE_FIELDS}

    @property
    def hash(self) -> str:
        """SHA-256 over the fields that decide the features (the package version excluded): resume's key."""
        return hashlib.sha256(json.dumps(self._feature_fields(), sort_keys=True).encode("utf-8")).hexdigest()

    def differences(self, other: Provenance) -> list[tuple[str, Any, Any]]:
        """``(field, this value, other's value)`` for every field deciding the features where the two differ."""
        mine, theirs = {**OMITTED_AT_DEFAULT, **self._feature_fields()}, {**OMITTED_AT_DEFAULT, **other._feature_fields()}
        return [(key, mine.get(key), theirs.get(key)) for key in sorted(set(mine) | set(theirs)) if mine.get(key) != theirs.get(key)]

    def check_features(self, other: Provenance, source: str) -> list[str]:
        """As a model's provenance: refuse ``other`` features unlike those it was trained on; warn of other sampling.

        Identity fields (:data:`FEATURE_IDENTITY`) must be equal, those of
        :data:`OPTIONAL_IDENTITY` where both provenances record them;
        ``source`` names ``other`` in the messages.
        """
        differences = [
            f"{key}: model {getattr(self, key)!r}, {source} {getattr(other, key)!r}"
            for key in FEATURE_IDENTITY
            if getattr(self, key) != getattr(other, key)
            and not (key in OPTIONAL_IDENTITY and None in (getattr(self, key), getattr(other, key)))
        ]
        if differences:
            raise FramecacheError(
                f"{source} holds other features than this model was trained on ({'; '.join(differences)}); "
                "extract features with the model's backbone and weights, or train a model on this cache"
            )
        return [
            f"{source} samples frames differently from the model's training cache ({key}: model {getattr(self, key)!r}, "
            f"{source} {getattr(other, key)!r}); figures may shift"
            for key in FEATURE_SAMPLING
            if getattr(self, key) != getattr(other, key)
        ] + [
            f"{source} was computed in another precision than the model's training cache ({key}: model "
            f"{getattr(self, key)!r}, {source} {getattr(other, key)!r}); features differ slightly (cosine >= 0.99)"
            for key in FEATURE_NUMERICS
            if getattr(self, key) != getattr(other, key)
        ]

    def check_backbone(self, backbone: BackboneDescription) -> None:
        """Refuse a backbone rebuilt here (for ``predict``) that would not make the features recorded here."""
        if backbone.weights_sha256 != self.weights_sha256:
            raise FramecacheError(
                f"the weights {self.weights} of {self.backbone} found here (sha256 "
                f"{str(backbone.weights_sha256)[:12]}…) differ from those the features were made with (sha256 "
                f"{str(self.weights_sha256)[:12]}…); put the original weights file back"
            )
        differences = [
            f"{key}: features {getattr(self, key)!r}, backbone {getattr(backbone, key)!r}"
            for key in ("backbone", "input_size", "feature_dim")
            if getattr(self, key) is not None and getattr(self, key) != getattr(backbone, key)
        ]
        if differences:
            raise FramecacheError(
                f"the backbone built here makes other features than those recorded ({'; '.join(differences)}); "
                "use the framecache version that made them"
            )
