"""``--augment``: presets and knobs, layers active only in training, absent from the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream.cli import build_parser
from stream.datasets import Dataset
from stream.preprocessing import (
    ImagePreprocessing,
    SequencePreprocessing,
    preprocessing_from_dict,
)
from trainer.augment import Augmentation, normalized_range
from trainer.cli import _augmentation
from trainer.exceptions import TrainerConfigError


def test_presets_are_per_kind_and_knobs_override_them() -> None:
    assert not Augmentation.preset("none", "image").active
    image = Augmentation.preset("medium", "image")
    assert image.rotation > 0 and image.jitter == 0 and image.flip == "none"
    assert Augmentation.preset("strong", "image").flip == "horizontal"
    seq = Augmentation.preset("light", "sequence")
    assert seq.jitter > 0 and seq.scale > 0 and seq.rotation == 0
    tuned = image.with_knobs(rotation=0.0, zoom=None, flip="vertical")
    assert (tuned.rotation, tuned.zoom, tuned.flip) == (0.0, image.zoom, "vertical")


@pytest.mark.parametrize(
    ("aug", "kind", "message"),
    [
        (Augmentation(jitter=0.1), "image", "--augment-jitter: not for image data"),
        (Augmentation(rotation=0.1), "sequence", "--augment-rotation: not for sequence data"),
        (Augmentation(rotation=0.7), "image", "--augment-rotation must be between 0 and 0.5"),
        (Augmentation(scale=-0.1), "sequence", "--augment-scale must be between 0 and 0.9"),
        (Augmentation(flip="diagonal"), "image", "--augment-flip 'diagonal': use one of"),  # type: ignore[arg-type]
    ],
)
def test_bad_knobs_are_refused_with_the_flag_name(
    aug: Augmentation, kind: str, message: str
) -> None:
    with pytest.raises(TrainerConfigError, match=message):
        aug.check(kind)


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(TrainerConfigError, match="--augment 'huge': use one of none, light"):
        Augmentation.preset("huge", "image")


def test_cli_flags_build_the_augmentation() -> None:
    parse = build_parser().parse_args
    base = ["train", "--dataset", "digits", "--arch", "cnn"]
    assert not _augmentation(parse(base), "image").active
    assert _augmentation(parse([*base, "--augment"]), "image") == Augmentation.preset(
        "medium", "image"
    )
    args = parse([*base, "--augment", "light", "--augment-rotation", "0.2"])
    assert _augmentation(args, "image").rotation == 0.2
    only_knob = _augmentation(parse([*base, "--augment-jitter", "0.05"]), "sequence")
    assert only_knob == Augmentation(jitter=0.05)
    with pytest.raises(TrainerConfigError, match="not for image data"):
        _augmentation(parse([*base, "--augment-scale", "0.1"]), "image")


def test_contrast_range_covers_every_normalized_pixel() -> None:
    prep = ImagePreprocessing(
        height=1, width=2, channels=3, color="RGB", mean=[0.2, 0.5, 0.7], std=[0.1, 0.3, 0.2]
    )
    low, high = normalized_range(prep)
    x = prep.apply(np.array([[[[0, 0, 0], [255, 255, 255]]]], dtype=np.uint8))
    assert low <= x.min() and x.max() <= high
    assert low == pytest.approx(-3.5) and high == pytest.approx(8.0)


pytest.importorskip("tensorflow")


@pytest.mark.parametrize(("kind", "preset"), [("image", "strong"), ("sequence", "strong")])
def test_layers_change_inputs_only_in_training(kind: str, preset: str) -> None:
    import keras

    from trainer.augment import augmented

    if kind == "image":
        shape: tuple[int, ...] = (12, 12, 3)
        prep: ImagePreprocessing | SequencePreprocessing = ImagePreprocessing(
            height=12, width=12, channels=3, color="RGB", mean=[0.5] * 3, std=[0.25] * 3
        )
    else:
        shape = (20, 3)
        prep = SequencePreprocessing(window=20, stride=20, channels=3, mean=[0] * 3, std=[1] * 3)
    layers = Augmentation.preset(preset, kind).layers(kind=kind, prep=prep, seed=0)
    assert layers
    inner = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(2)])
    model = augmented(inner, layers)
    x = np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
    np.testing.assert_array_equal(model(x, training=False), inner(x))
    assert not np.allclose(model(x, training=True), inner(x))


def tiny_images() -> Dataset:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = rng.integers(0, 60, size=(60, 10, 10, 1), dtype=np.uint8)
    x[y == 1, 2:8, 2:8] += 150
    return Dataset(
        name="blobs", kind="image", x_train=x[:44], y_train=y[:44], x_test=x[44:],
        y_test=y[44:], labels=["empty", "blob"],
    )  # fmt: skip


def test_augmented_training_saves_a_model_without_augmentation(tmp_path: Path) -> None:
    import keras

    from trainer.models import ModelConfig
    from trainer.train import Hyperparameters, train

    def run(out: Path) -> tuple[dict[str, list[float]], np.ndarray]:
        result = train(
            tiny_images(),
            ModelConfig(arch="cnn", filters=(4,), units=4),
            hyperparameters=Hyperparameters(epochs=2, batch_size=8, patience=10, seed=2),
            out_dir=out,
            verbose=0,
            augmentation=Augmentation.preset("strong", "image"),
        )
        return result.history, result.model.predict(result.data.x_test, verbose=0)

    history, predictions = run(tmp_path / "a")
    saved = keras.models.load_model(tmp_path / "a" / "model.keras")
    names = [type(layer).__name__ for layer in saved.layers]
    assert not [n for n in names if n.startswith("Random")], names
    assert saved.input_shape == (None, 10, 10, 1)
    saved_prep = preprocessing_from_dict(
        json.loads((tmp_path / "a" / "run.json").read_text())["preprocessing"]
    )
    x_test = saved_prep.apply(tiny_images().x_test)
    np.testing.assert_allclose(saved.predict(x_test, verbose=0), predictions, rtol=1e-5, atol=1e-6)
    run_info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run_info["augmentation"]["flip"] == "horizontal"
    # Seeded: the same augmented training twice is the same training.
    again, predictions_again = run(tmp_path / "b")
    assert history == again
    np.testing.assert_array_equal(predictions, predictions_again)
