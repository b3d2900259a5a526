"""The public API of ``import framecache``: every docstring example runs, in order, on videos made here."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import moving_frames

import framecache
import framecache.api

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("framecache", "common", "extract", "train", "data", "bench")  # the package's folders (pyproject)

# In this order: later examples use the cache and the run that earlier ones made.
EXAMPLES = ("load_dataset", "encode_labels", "load_video", "augment_video", "build_model",
            "extract_features", "load_features", "train_model", "predict")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """videos/labels.csv: 12 short clips of two classes (the square moves differently per class)."""
    from framecache.data.synthetic import write_video

    folder = tmp_path_factory.mktemp("api")
    (folder / "videos").mkdir()
    rows = ["path,label"]
    for label, seed in (("squat", 0), ("lunge", 100)):
        for number in range(6):
            frames = moving_frames(12, 48, 64, seed=seed + number)
            if label == "lunge":
                frames = frames[::-1].copy()
            write_video(folder / "videos" / f"{label}_{number}.mp4", frames, 10)
            rows.append(f"{label}_{number}.mp4,{label}")
    (folder / "videos" / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_the_api_is_what_the_readme_lists():
    assert sorted(framecache.__all__) == sorted([*EXAMPLES, "PaddedFeatures", "load_dataframe"])
    assert framecache.load_dataframe is framecache.load_dataset  # the tutorials' name, the same function
    for name in EXAMPLES:
        assert ">>>" in getattr(framecache.api, name).__doc__
        assert callable(getattr(framecache, name))


def test_train_is_the_package_and_train_model_the_function():
    import framecache.train.fit  # binds framecache.train to the package, as any import of it does

    assert framecache.train.fit.run_training is not None
    assert not callable(framecache.train)  # a plain module: no name clash to settle
    assert framecache.train_model is framecache.api.train_model
    with pytest.raises(TypeError):  # the call reaches framecache.api.train_model: its argument is missing
        framecache.train_model()


def test_no_module_reassigns_its_class():
    """No module swaps ``__class__`` (the old trick that made ``framecache.train`` callable)."""
    sources = [path for folder in PACKAGE_FOLDERS for path in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 20
    offenders = [str(path.relative_to(ROOT)) for path in sources if re.search(r"__class__\s*=(?!=)", path.read_text())]
    assert offenders == []


def test_no_fault_injection_in_the_product():
    """Faults are injected by test doubles passed in (tests/doubles.py), never by variables the product reads."""
    sources = [path for folder in PACKAGE_FOLDERS for path in (ROOT / folder).rglob("*.py")]
    offenders = [str(path.relative_to(ROOT)) for path in sources if re.search(r"_FAULT|[Ff]ault injection|[Tt]est hook", path.read_text())]
    assert offenders == []


@pytest.mark.slow  # each example's function has fast tests of its own; the tutorial's usage runs below
def test_every_docstring_example_runs(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    globs = {"framecache": framecache, "Path": Path}
    for name in EXAMPLES:
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        for test in doctest.DocTestFinder().find(getattr(framecache.api, name), name, globs=globs):
            runner.run(test)
        assert runner.failures == 0, f"the docstring example of framecache.{name} failed (see the output above)"
        assert runner.tries > 0, f"framecache.{name} has no docstring example"


def test_the_cnn_rnn_tutorial_usage_runs_with_only_its_import_changed(workspace, monkeypatch):
    monkeypatch.chdir(workspace / "videos")
    from framecache import augment_video, build_model, encode_labels, load_dataframe, load_video

    df = load_dataframe("labels.csv", balance=True)
    labels = df["label"].tolist()
    y, encoder = encode_labels(labels)
    num_classes = len(encoder.classes_)
    model = build_model(num_classes)
    frames = load_video(df["abs_path"][0])
    view = augment_video(frames)
    assert num_classes == 2 and list(encoder.classes_) == ["lunge", "squat"] and model.output_shape[-1] == 2
    assert y.tolist() == [["lunge", "squat"].index(label) for label in labels]
    assert encoder.inverse_transform(y).tolist() == labels and encoder.transform(["squat"]).tolist() == [1]
    assert view.shape == frames.shape and view.dtype == np.uint8


def test_load_features_pads_and_masks(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    if not Path("features.h5").exists():
        framecache.extract_features("videos/labels.csv", "features.h5", backbone="efficientnet_lite0", quiet=True)
    padded = framecache.load_features("features.h5", max_len=5)
    X, mask, y = padded
    assert X.shape[:2] == mask.shape == (12, 5) and mask.all()  # 12 frames each, sampled down to 5
    assert sorted(padded.classes) == ["lunge", "squat"] and len(padded.paths) == 12
    full = framecache.load_features("features.h5")
    assert full.features.shape[1] == 12 and full.mask.sum() == 12 * 12
    with pytest.raises(ValueError, match="view must be in 0..1"):
        framecache.load_features("features.h5", view=2)
