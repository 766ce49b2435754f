"""Training data: preprocessing learned from the training split, validation split, bad data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream.datasets import Dataset
from stream.exceptions import DatasetError
from stream.preprocessing import ImagePreprocessing, SequencePreprocessing
from trainer.data import fit_preprocessing, load_training_data, model_data
from trainer.exceptions import TrainerConfigError
from trainer.models import auto_stride, check_arch


def seq_dataset(n: int = 40, t: int = 20, c: int = 3) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, size=(n, t, c)).astype(np.float32)
    y = np.arange(n) % 2
    return Dataset(
        name="s", kind="sequence", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6],
        labels=["a", "b"],
    )  # fmt: skip


def test_sequence_preprocessing_is_learned_per_channel() -> None:
    ds = seq_dataset()
    prep = fit_preprocessing(ds)
    assert isinstance(prep, SequencePreprocessing)
    assert (prep.window, prep.stride, prep.channels) == (20, 20, 3)
    x = prep.apply(ds.x_train)
    np.testing.assert_allclose(x.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.reshape(-1, 3).std(axis=0), 1.0, atol=1e-4)
    strided = fit_preprocessing(ds, stride=5)
    assert isinstance(strided, SequencePreprocessing) and strided.stride == 5


def test_image_preprocessing_is_learned_from_uint8_images() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 6, 5, 3), dtype=np.uint8)
    ds = Dataset(
        name="i", kind="image", x_train=x, y_train=np.arange(20) % 2, x_test=x[:4],
        y_test=np.arange(4) % 2, labels=["a", "b"],
    )  # fmt: skip
    prep = fit_preprocessing(ds)
    assert isinstance(prep, ImagePreprocessing)
    assert (prep.height, prep.width, prep.channels, prep.color) == (6, 5, 3, "RGB")
    np.testing.assert_allclose(prep.mean, (x.reshape(-1, 3) / 255.0).mean(axis=0), rtol=1e-6)


def test_constant_channel_does_not_divide_by_zero() -> None:
    ds = seq_dataset()
    ds.x_train[:, :, 1] = 3.0
    prep = fit_preprocessing(ds)
    assert np.isfinite(prep.apply(ds.x_train)).all()


def test_model_data_holds_out_a_stratified_validation_split() -> None:
    ds = seq_dataset()
    prep = fit_preprocessing(ds)
    data = model_data(ds, prep, validation_fraction=0.25, seed=0)
    assert len(data.x_train) + len(data.x_val) == 40
    assert set(data.y_val.tolist()) == {0, 1}
    assert data.x_fit.dtype == np.float32 and len(data.x_fit) == 40


def test_too_few_samples_for_a_validation_split() -> None:
    ds = seq_dataset(n=2)
    with pytest.raises(DatasetError, match="too few training samples"):
        model_data(ds, fit_preprocessing(ds), validation_fraction=0.2, seed=0)


def test_bad_stride_is_refused() -> None:
    with pytest.raises(DatasetError, match="--stride must be >= 1"):
        fit_preprocessing(seq_dataset(), stride=0)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((0, 10, 2), np.float32), "y": np.zeros(0, np.int64)}, "x is empty"),
        (
            {"x": np.zeros((10, 10, 2), np.float32), "y": np.zeros(10, np.int64)},
            "fewer than two classes",
        ),
        (
            {
                "x": np.zeros((10, 10, 2), np.float32),
                "y": np.arange(10) % 2,
                "x_test": np.zeros((4, 12, 2), np.float32),
                "y_test": np.arange(4) % 2,
            },
            r"train samples are \(10, 2\) but test samples are \(12, 2\)",
        ),
        (
            {
                "x": np.where(np.arange(200).reshape(10, 10, 2) == 7, np.nan, 1.0),
                "y": np.arange(10) % 2,
            },
            "contain NaN or infinity",
        ),
        ({"x": np.zeros((10, 10, 2), np.float32), "y": np.arange(9) % 2}, "x has 10 samples"),
    ],
)
def test_bad_npz_data_stops_with_a_message(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=message):
        load_training_data(f"npz:{path}")


def test_arch_must_fit_the_data() -> None:
    with pytest.raises(TrainerConfigError, match="--arch cnn does not fit sequence data"):
        check_arch("cnn", "sequence")
    with pytest.raises(TrainerConfigError, match="--arch gru does not fit image data"):
        check_arch("gru", "image")


def test_auto_stride_leaves_at_most_32_steps() -> None:
    assert auto_stride(100) == 4
    assert auto_stride(32) == 1
    assert auto_stride(33) == 2


def test_cli_bad_data_exits_2_with_an_error_line(tmp_path: Path) -> None:
    path = tmp_path / "one-class.npz"
    np.savez(path, x=np.zeros((10, 10, 2), np.float32), y=np.zeros(10, np.int64))
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "train", "--dataset", f"npz:{path}", "--arch", "gru"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: dataset 'one-class': the training split has fewer than two classes" in (
        proc.stderr
    )
