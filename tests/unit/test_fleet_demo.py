"""What ``edgeinfer demo`` expects to get answered, derived from the datasets and the
sensor model's window (:class:`fleet.demo.Expected`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fleet.demo import DemoConfig, Expected
from stream.datasets import Dataset, load_dataset
from tests.fixtures.bundle_factory import write_test_bundle


def _dataset(kind: str, x_test: np.ndarray) -> Dataset:
    y = np.zeros(len(x_test), dtype=np.int64)
    return Dataset(
        name=kind, kind=kind, x_train=x_test, y_train=y, x_test=x_test, y_test=y, labels=["a"]
    )


def test_counts_come_from_the_test_splits_and_the_window(tmp_path: Path) -> None:
    bundle = write_test_bundle(tmp_path / "b").path  # window 100, stride 50
    images = _dataset("image", np.zeros((7, 8, 8, 1), dtype=np.uint8))
    sensors = _dataset("sequence", np.zeros((3, 100, 6), dtype=np.float32))
    cfg = DemoConfig(image_repeat=4, sensor_repeat=6)
    expected = Expected.of(cfg, images=images, sensors=sensors, sensor_bundle=bundle)
    # 600 readings per device: a window at 100, then one every 50
    assert expected == Expected(images=28, devices=3, windows_per_device=11)
    assert expected.windows == 33


def test_the_demo_datasets_give_the_counts_it_used_to_hard_code(tmp_path: Path) -> None:
    bundle = write_test_bundle(tmp_path / "b").path
    cfg = DemoConfig(image_repeat=4, sensor_repeat=6)
    expected = Expected.of(
        cfg,
        images=load_dataset("digits"),
        sensors=load_dataset("basic-motions"),
        sensor_bundle=bundle,
    )
    assert (expected.images, expected.devices) == (450 * 4, 40)
