"""Stage-two settings: one dataclass, its checks, and the command-line flags built from it.

Every field is a flag of ``python -m train`` (``max_len`` → ``--max-len``) and,
as a comma-separated list, of ``python -m train.sweep``.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import asdict, dataclass, fields

from framecache.common.errors import FramecacheError

BALANCE_CHOICES = ("oversample", "class-weight", "none")
POOLING_CHOICES = ("mean", "last")
CHOICES = {"balance": BALANCE_CHOICES, "pooling": POOLING_CHOICES}


@dataclass
class TrainConfig:
    """Everything ``python -m train`` takes. Defaults are the CLI's defaults.

    The model defaults (centred inputs, GRU outputs averaged over time, 64
    units, learning rate 3e-3, patience 5, at most 50 epochs) were chosen by
    6-fold cross-validation across unseen subjects on the demo data; see the README.
    """

    features: str = "features.h5"
    run: str | None = None  # run folder; default runs/<timestamp>
    # the GRU
    units: int = 64
    layers: int = 1
    dropout: float = 0.3
    bidirectional: bool = False
    head_units: int = 64
    pooling: str = "mean"
    # inputs and regularisation
    centre: bool = True
    differences: bool = False
    noise: float = 0.0
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    l2: float = 0.0
    # temporal sampling of the cached sequences
    max_len: int = 64
    frame_step: int = 1
    # optimisation
    epochs: int = 50
    patience: int = 5
    batch_size: int = 32
    learning_rate: float = 3e-3
    balance: str = "class-weight"
    # splits
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    cv: int = 0
    ignore_split: bool = False
    # run control
    seed: int = 0
    deterministic: bool = True
    overwrite: bool = False
    quiet: bool = False

    def validate(self) -> TrainConfig:
        """Check values at the boundary; raise :class:`FramecacheError` naming the bad one."""
        for name in ("units", "layers", "head_units", "max_len", "frame_step", "epochs", "patience", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FramecacheError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("dropout", "input_dropout", "recurrent_dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise FramecacheError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("noise", "l2"):
            value = getattr(self, name)
            if not value >= 0:
                raise FramecacheError(f"{name} must be >= 0, got {value!r}")
        if not self.learning_rate > 0:
            raise FramecacheError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.pooling not in POOLING_CHOICES:
            raise FramecacheError(f"pooling must be one of {', '.join(POOLING_CHOICES)}, got {self.pooling!r}")
        if self.balance not in BALANCE_CHOICES:
            raise FramecacheError(f"balance must be one of {', '.join(BALANCE_CHOICES)}, got {self.balance!r}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise FramecacheError(f"{name} must be between 0 and 1 (exclusive), got {value!r}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise FramecacheError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:.2f} leaves almost nothing "
                "to train on; keep their sum below 0.9"
            )
        if self.cv == 1 or self.cv < 0:
            raise FramecacheError(f"cv must be 0 (no cross-validation) or a number of folds >= 2, got {self.cv!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


# Fields that never change what a run learns: left out of comparisons and sweeps.
RUN_CONTROL = ("features", "run", "overwrite", "quiet")

HELP = {
    "features": "HDF5 feature cache written by `python -m extract`",
    "run": "run folder for the model, metrics and plots (default runs/<timestamp>)",
    "units": "GRU units per layer",
    "layers": "stacked GRU layers",
    "dropout": "dropout after the GRU and in the dense head",
    "bidirectional": "read each sequence both ways",
    "pooling": "what the head reads: the GRU's outputs averaged over the valid frames (mean), or its last state (last)",
    "head_units": "units of the dense layer before the softmax",
    "centre": "subtract each video's mean feature (over its valid frames): keeps motion, drops static appearance",
    "differences": "append frame-to-frame feature differences to the GRU's inputs",
    "noise": "std of Gaussian noise added to the scaled inputs while training (0: none)",
    "input_dropout": "GRU dropout on its inputs (one mask per video)",
    "recurrent_dropout": "GRU dropout on its recurrent state",
    "l2": "L2 weight decay on every kernel (0: none)",
    "max_len": "most time steps the GRU sees; longer videos are sampled uniformly over their whole length",
    "frame_step": "keep every k-th cached frame (training draws a random offset each epoch)",
    "epochs": "most epochs; early stopping on the validation loss usually ends sooner",
    "patience": "epochs without a better validation loss before stopping",
    "batch_size": "videos per batch",
    "learning_rate": "Adam learning rate",
    "balance": "class imbalance: repeat minority videos, weight the loss, or nothing",
    "val_fraction": "share of videos (of groups, when the cache has them) for validation",
    "test_fraction": "share of videos (of groups) held out for the test figures",
    "cv": "K: run K-fold cross-validation and report mean and std (0: one split)",
    "ignore_split": "make splits automatically even when the cache has a CSV split column",
    "seed": "seed of every random choice: splits, views, frames, weights",
    "deterministic": "deterministic TensorFlow ops (same seed, same numbers)",
    "overwrite": "replace the results in an existing run folder",
    "quiet": "warnings and the final summary only",
}


def field_types() -> dict[str, type]:
    """Each field's value type, with ``X | None`` reduced to ``X``."""
    types = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
        types[name] = arguments[0] if arguments else hint
    return types


def add_config_arguments(parser: argparse.ArgumentParser, as_lists: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> None:
    """Add one flag per TrainConfig field (but ``skip``); fields in ``as_lists`` take comma-separated values."""
    defaults = TrainConfig()
    for name, kind in field_types().items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        help_text = HELP[name] + ("" if default is None else f" (default {default})")
        if name in as_lists:
            parser.add_argument(flag, type=_list_of(kind, flag), default=[default], help=help_text + "; comma-separated values are swept")
        elif kind is bool and default:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, action="store_true", help=HELP[name])
        else:
            parser.add_argument(flag, type=kind, default=default, choices=CHOICES.get(name), help=help_text)


def _list_of(kind: type, flag: str):
    def parse(text: str) -> list:
        try:
            return [_parse_value(kind, item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def _parse_value(kind: type, text: str):
    if kind is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(text)
    return kind(text)
