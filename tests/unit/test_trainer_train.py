"""Training on the CPU under the distribution strategy: overrides, run folder, --seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from stream.datasets import Dataset  # noqa: E402
from trainer.models import ModelConfig  # noqa: E402
from trainer.train import Hyperparameters, load_trained, train  # noqa: E402


def tiny_sequences(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    n, t = 48, 24
    y = np.arange(n) % 3
    x = rng.normal(0, 0.3, size=(n, t, 2))
    x[:, :, 0] += np.sin(np.linspace(0, 6, t))[None, :] * (y[:, None] + 1)
    x = x.astype(np.float32)
    return Dataset(
        name="tiny", kind="sequence", x_train=x[:36], y_train=y[:36], x_test=x[36:],
        y_test=y[36:], labels=["a", "b", "c"],
    )  # fmt: skip


CONFIG = ModelConfig(arch="gru", filters=(8,), units=8)


def run(tmp: Path, seed: int, epochs: int = 3, batch_size: int = 8) -> tuple[dict, np.ndarray]:
    result = train(
        tiny_sequences(),
        CONFIG,
        hyperparameters=Hyperparameters(
            epochs=epochs, batch_size=batch_size, patience=100, seed=seed
        ),
        out_dir=tmp,
        verbose=0,
    )
    return result.history, result.model.predict(result.data.x_test, verbose=0)


def test_same_seed_gives_identical_training_and_predictions(tmp_path: Path) -> None:
    h1, p1 = run(tmp_path / "a", seed=3)
    h2, p2 = run(tmp_path / "b", seed=3)
    assert h1 == h2
    np.testing.assert_array_equal(p1, p2)
    _, p3 = run(tmp_path / "c", seed=4)
    assert not np.array_equal(p1, p3)


def test_epochs_and_batch_size_override_the_defaults(tmp_path: Path) -> None:
    history, _ = run(tmp_path, seed=0, epochs=2, batch_size=5)
    assert len(history["loss"]) == 2
    run_info = json.loads((tmp_path / "run.json").read_text())
    assert run_info["hyperparameters"]["batch_size"] == 5
    assert run_info["hyperparameters"]["epochs"] == 2
    assert "CPU" in run_info["device"] and "MirroredStrategy" in run_info["device"]
    assert run_info["preprocessing"]["window"] == 24
    for name in ("model.keras", "history.json", "plots/training_curves.png"):
        assert (tmp_path / name).is_file(), name


def test_saved_model_reloads_with_its_preprocessing(tmp_path: Path) -> None:
    import keras

    result = train(
        tiny_sequences(),
        CONFIG,
        hyperparameters=Hyperparameters(epochs=1, seed=0),
        out_dir=tmp_path,
        verbose=0,
        dataset_spec="tiny-spec",
    )
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        result.model.predict(result.data.x_test, verbose=0),
        reloaded.predict(result.data.x_test, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(Exception, match="unknown dataset 'tiny-spec'"):
        load_trained(tmp_path / "model.keras")
