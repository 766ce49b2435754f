"""The shared preprocessing: image and sequence transforms, and the int8 lookup table."""

from __future__ import annotations

import numpy as np
import pytest

from stream.exceptions import BundleError, DecodeError
from stream.preprocessing import (
    ImagePreprocessing,
    SequencePreprocessing,
    dequantize,
    preprocessing_from_dict,
    quantize,
)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("scale", "zero_point", "dtype"),
    [(0.0078125, 0, "int8"), (0.0123, -17, "int8"), (0.02, 128, "uint8")],
)
def test_table_equals_normalize_then_quantize(
    channels: int, scale: float, zero_point: int, dtype: str
) -> None:
    prep = ImagePreprocessing(
        height=5,
        width=7,
        channels=channels,
        color="L" if channels == 1 else "RGB",
        mean=[0.1, 0.5, 0.9][:channels],
        std=[0.3, 0.25, 0.2][:channels],
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 5, 7, channels), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    table = prep.quantization_table(scale, zero_point, dtype)
    assert table.shape == (channels, 256) and table.dtype == np.dtype(dtype)
    fast = ImagePreprocessing.apply_table(images, table)
    slow = quantize(prep.apply(images), scale, zero_point, dtype)
    assert fast.dtype == slow.dtype
    np.testing.assert_array_equal(fast, slow)


def test_quantize_round_trip_and_clipping() -> None:
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=np.float32)
    q = quantize(x, 0.01, 3, "int8")
    assert q.tolist() == [-128, -47, 3, 53, 127]
    np.testing.assert_allclose(dequantize(q[1:4], 0.01, 3), x[1:4], atol=0.005)


def test_apply_checks_shapes_with_a_clear_reason() -> None:
    img = ImagePreprocessing(height=8, width=8, channels=1)
    with pytest.raises(DecodeError) as err:
        img.apply(np.zeros((2, 8, 9, 1), dtype=np.uint8))
    assert err.value.reason == "wrong_shape" and "(N, 8, 8, 1)" in str(err.value)
    seq = SequencePreprocessing(window=4, stride=2, channels=3, mean=[0.0] * 3, std=[2.0] * 3)
    out = seq.apply(np.full((1, 4, 3), 4.0))
    assert out.dtype == np.float32 and float(out.max()) == 2.0
    with pytest.raises(DecodeError, match=r"\(N, 4, 3\)"):
        seq.apply(np.zeros((1, 4, 2)))


def test_from_dict_round_trip_and_errors() -> None:
    seq = SequencePreprocessing(window=4, stride=2, channels=3, mean=[1.0] * 3, std=[2.0] * 3)
    assert preprocessing_from_dict(seq.to_dict()) == seq
    with pytest.raises(BundleError, match="'image' or 'sequence'"):
        preprocessing_from_dict({"kind": "audio"})
    with pytest.raises(BundleError, match="malformed"):
        preprocessing_from_dict({"kind": "image", "height": "x"})
