"""``aeon:NAME``: the classification datasets aeon ships (no download), time-major, padded."""

from __future__ import annotations

import numpy as np
import pytest

from stream.datasets import AEON_DATASETS, load_dataset
from stream.exceptions import DatasetError

pytest.importorskip("aeon")


def test_japanese_vowels_is_padded_with_each_series_last_reading() -> None:
    from aeon.datasets import load_japanese_vowels

    ds = load_dataset("aeon:JapaneseVowels")
    assert (ds.x_train.shape, ds.x_test.shape) == ((270, 29, 12), (370, 29, 12))
    assert ds.kind == "sequence" and ds.x_train.dtype == np.float32
    assert ds.labels == [str(i) for i in range(1, 10)]
    raw, _ = load_japanese_vowels(split="train")
    short = int(np.argmin([r.shape[1] for r in raw]))
    n = raw[short].shape[1]
    np.testing.assert_array_equal(ds.x_train[short, :n], raw[short].T.astype(np.float32))
    np.testing.assert_array_equal(
        ds.x_train[short, n:], np.repeat(ds.x_train[short, n - 1 : n], 29 - n, 0)
    )


def test_names_are_case_insensitive_and_basic_motions_keeps_its_name() -> None:
    assert load_dataset("aeon:gunpoint").x_train.shape == (50, 150, 1)
    assert load_dataset("basic-motions").name == "basic-motions"
    assert load_dataset("aeon:BasicMotions").x_train.shape == (40, 100, 6)


def test_a_dataset_aeon_does_not_ship_is_refused_with_the_list() -> None:
    with pytest.raises(
        DatasetError, match="aeon:ECG200 is not shipped with aeon; use one of ACSF1"
    ):
        load_dataset("aeon:ECG200")
    assert "JapaneseVowels" in AEON_DATASETS
