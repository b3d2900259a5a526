"""Stage-two settings: one dataclass whose fields are options with their constraints.

Every field is a flag of ``framecache train`` (``max_len`` → ``--max-len``), a
Make variable of ``make train`` (``MAX_LEN=``) and, as a comma-separated
list, a flag of ``framecache sweep`` (see :mod:`framecache.common.options`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from framecache.common.errors import FramecacheError
from framecache.common.options import Interval, option, option_name, validate

COMBINE_CHOICES = ("classwise", "weight")  # as train.combine.COMBINE_CHOICES (kept here: the CLI must not import Keras)
BALANCE_CHOICES = ("oversample", "class-weight", "none")
POOLING_CHOICES = ("mean", "last")
INPUT_CHOICES = ("both", "centred", "raw")  # as train.model.INPUT_CHOICES (kept here: the CLI must not import Keras)
POSITIVE = Interval(1, None)
FRACTION = Interval(0, 1, "neither")
DROPOUT = Interval(0, 1, "left")
NON_NEGATIVE = Interval(0, None)


@dataclass
class TrainConfig:
    """Everything ``framecache train`` takes. Defaults are the CLI's defaults.

    The model defaults (a GRU on centred inputs for the motion, its outputs
    averaged over time, mixed with a logistic regression on each video's mean
    (and std) over time for the appearance, the weight chosen on the validation videos; 64
    units, learning rate 3e-3, patience 5, at most 50 epochs) were chosen by
    6-fold cross-validation across unseen subjects on demo data where motion
    decides and where appearance does; the figures are in docs/accuracy.md.
    """

    features: str | list[str] = option("features.h5", "HDF5 feature cache written by `framecache extract`; several caches of the same "
                                       "videos (one per backbone, e.g. pose.h5 cnn.h5) are joined by video path, each modelled "
                                       "on its own and combined", many=True)
    run: str | None = option(None, "run folder for the model, metrics and plots (default runs/<timestamp>)")
    # the GRU
    units: int = option(64, "GRU units per layer", interval=POSITIVE)
    layers: int = option(1, "stacked GRU layers", interval=POSITIVE)
    dropout: float = option(0.3, "dropout after the GRU and in the dense head", interval=DROPOUT)
    bidirectional: bool = option(False, "read each sequence both ways")
    head_units: int = option(64, "units of the dense layer before the softmax", interval=POSITIVE)
    pooling: str = option("mean", "what the head reads: the GRU's outputs averaged over the valid frames (mean), "
                          "or its last state (last)", choices=POOLING_CHOICES)
    # inputs and regularisation
    inputs: str = option("centred", "what the GRU reads per frame: the features with the video's mean subtracted (centred: motion only), "
                         "as they are (raw), or both side by side (both: motion and appearance)", choices=INPUT_CHOICES)
    appearance: bool = option(True, "combine the GRU's class probabilities with the baseline's (logistic regression on each video's "
                              "mean, and std where it helps, over time: appearance), as --combine says")
    combine: str = option("weight", "how the parts (the GRU and the baseline of each cache) are combined, fitted on the validation "
                          "videos: one weight per part (weight), or a weight per part and class (classwise: stacking; it needs "
                          "more validation videos per class than the demo has, see docs/accuracy.md)", choices=COMBINE_CHOICES)
    differences: bool = option(False, "append frame-to-frame feature differences to the GRU's inputs")
    noise: float = option(0.0, "std of Gaussian noise added to the scaled inputs while training (0: none)", interval=NON_NEGATIVE)
    input_dropout: float = option(0.0, "GRU dropout on its inputs (one mask per video)", interval=DROPOUT)
    recurrent_dropout: float = option(0.0, "GRU dropout on its recurrent state", interval=DROPOUT)
    l2: float = option(0.0, "L2 weight decay on every kernel (0: none)", interval=NON_NEGATIVE)
    # temporal sampling of the cached sequences
    max_len: int = option(64, "most time steps the GRU sees; longer videos are sampled uniformly over their whole length", interval=POSITIVE)
    frame_step: int = option(1, "keep every k-th cached frame (training draws a random offset each epoch)", interval=POSITIVE)
    # optimisation
    epochs: int = option(50, "most epochs; early stopping on the validation loss usually ends sooner", interval=POSITIVE)
    patience: int = option(5, "epochs without a better validation loss before stopping", interval=POSITIVE)
    batch_size: int = option(32, "videos per batch", interval=POSITIVE)
    learning_rate: float = option(3e-3, "Adam learning rate", interval=Interval(0, None, "neither"))
    balance: str = option("class-weight", "class imbalance: repeat minority videos, weight the loss, or nothing", choices=BALANCE_CHOICES)
    # splits
    val_fraction: float = option(0.2, "share of videos (of groups, when the cache has them) for validation", interval=FRACTION)
    test_fraction: float = option(0.2, "share of videos (of groups) held out for the test figures", interval=FRACTION)
    cv: int = option(0, "K: run K-fold cross-validation and report mean and std (0: one split)", interval=NON_NEGATIVE)
    ignore_split: bool = option(False, "make splits automatically even when the cache has a CSV split column")
    # run control
    seed: int = option(0, "seed of every random choice: splits, views, frames, weights")
    deterministic: bool = option(True, "deterministic TensorFlow ops (same seed, same numbers)")
    in_memory: str = option("auto", "hold the features in memory (yes) or stream them from the cache with bounded memory (no); "
                            "auto: in memory when, as float32, they take at most half the available memory", choices=("auto", "yes", "no"))
    overwrite: bool = option(False, "replace the results in an existing run folder")
    quiet: bool = option(False, "warnings and the final summary only")

    def __post_init__(self):
        if isinstance(self.features, (list, tuple)) and len(self.features) == 1:
            self.features = self.features[0]  # one cache: a path, as config.json has always held it

    @property
    def feature_paths(self) -> list[str]:
        """The caches the run reads: one, or several to join."""
        return [self.features] if isinstance(self.features, str) else list(self.features)

    def validate(self) -> TrainConfig:
        """Check values at the boundary; raise :class:`FramecacheError` naming the bad one."""
        validate(self)
        if len(set(self.feature_paths)) < len(self.feature_paths):
            raise FramecacheError(f"{option_name('features')} names a cache twice ({' '.join(self.feature_paths)}); name each once")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise FramecacheError(
                f"{option_name('val_fraction')} + {option_name('test_fraction')} = "
                f"{self.val_fraction + self.test_fraction:.2f} leaves almost nothing to train on; keep their sum below 0.9"
            )
        if self.cv == 1:
            raise FramecacheError(f"{option_name('cv')} must be 0 (no cross-validation) or a number of folds >= 2, got 1")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {field.name for field in fields(cls)}
        if "centre" in values and "inputs" not in values:  # saved before --inputs replaced --centre / --no-centre
            values = {**values, "inputs": "centred" if values["centre"] else "raw"}
        return cls(**{key: value for key, value in values.items() if key in known})


# Fields that never change what a run learns: left out of comparisons and sweeps.
RUN_CONTROL = ("features", "run", "in_memory", "overwrite", "quiet")
