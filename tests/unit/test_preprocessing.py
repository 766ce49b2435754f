"""The shared preprocessing: image and sequence transforms, and the int8 lookup table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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


def _normalize_every_pixel(prep: ImagePreprocessing, images: np.ndarray) -> np.ndarray:
    """The documented arithmetic, pixel by pixel (what apply computed before its table)."""
    x = images.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    return ((x - mean) / std).astype(np.float32)


@pytest.mark.parametrize(
    ("channels", "mean", "std"),
    [
        (1, [0.0], [1.0]),
        (1, [0.1307], [0.3081]),
        (3, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        (3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        (3, [0.2], [0.7]),  # one value for every channel
        (1, [0.1, 0.2, 0.3], [1.0, 2.0, 3.0]),  # does not fit: broadcasts to 3 channels
    ],
)
def test_apply_on_uint8_is_bit_identical_to_the_arithmetic(
    channels: int, mean: list[float], std: list[float]
) -> None:
    prep = ImagePreprocessing(height=16, width=17, channels=channels, mean=mean, std=std)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 16, 17, channels), dtype=np.uint8)
    images[0].reshape(-1, channels)[:256] = np.arange(256, dtype=np.uint8)[:, None]
    out = prep.apply(images)
    expected = _normalize_every_pixel(prep, images)
    assert out.dtype == np.float32 and out.shape == expected.shape
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)
    # Other dtypes take the arithmetic path itself.
    np.testing.assert_array_equal(prep.apply(images.astype(np.float64)), expected)


@pytest.mark.parametrize("rows", ["equal", "different"])
def test_apply_table_gathers_per_channel(rows: str) -> None:
    table = np.stack([np.arange(256) - 128] * 3).astype(np.int8)
    if rows == "different":
        table[1] = table[1][::-1]
        table[2] = 7
    images = np.random.default_rng(2).integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    out = ImagePreprocessing.apply_table(images, table)
    expected = np.stack([table[c][images[..., c]] for c in range(3)], axis=-1)
    assert out.dtype == np.int8 and out.shape == images.shape
    np.testing.assert_array_equal(out, expected)


@given(
    table=hnp.arrays(st.sampled_from([np.int8, np.uint8]), 256),
    images=hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=6),
    ),
    flip=st.booleans(),
)
def test_one_byte_tables_gather_pixel_pairs_exactly(
    table: np.ndarray, images: np.ndarray, flip: bool
) -> None:
    """The byte-pair path (even, contiguous batches) equals a plain gather; odd sizes and
    strided views take the plain path."""
    if flip:
        images = images[:, ::-1]  # not C-contiguous
    rows = np.stack([table] * images.shape[-1])
    out = ImagePreprocessing.apply_table(images, rows)
    assert out.dtype == table.dtype and out.shape == images.shape
    np.testing.assert_array_equal(out, table[images])


@given(
    table=hnp.arrays(st.sampled_from([np.int8, np.uint8, np.float32]), 256),
    rows=st.sampled_from(["equal", "different"]),
    frames=st.integers(1, 5),
    side=st.sampled_from([1, 3, 57, 105]),
    into_out=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_chunked_gathers_equal_a_plain_gather(
    table: np.ndarray, rows: str, frames: int, side: int, into_out: bool
) -> None:
    """The gather runs GATHER_CHUNK pixels at a time (whole frames for per-channel rows),
    into ``out`` when given: sizes on both sides of a chunk, odd totals (the last piece
    without the pair table) and NaN floats all give the plain gather's bytes."""
    channels = 3
    tables = np.stack([table] * channels)
    if rows == "different":
        tables[1] = table[::-1]
    rng = np.random.default_rng(frames * 1000 + side)
    images = rng.integers(0, 256, size=(frames, side, side, channels), dtype=np.uint8)
    out = np.empty(images.shape, dtype=table.dtype) if into_out else None
    got = ImagePreprocessing.apply_table(images, tables, out=out)
    if out is not None:
        assert got is out
    expected = np.stack([tables[c][images[..., c]] for c in range(channels)], axis=-1)
    assert got.dtype == table.dtype and got.shape == images.shape
    assert got.tobytes() == expected.tobytes()  # bytes: NaN payloads included
    empty = ImagePreprocessing.apply_table(images[:0], tables)
    assert empty.shape == (0, side, side, channels) and empty.dtype == table.dtype


def test_apply_table_refuses_what_it_cannot_fill() -> None:
    table = np.zeros((1, 256), dtype=np.int8)
    images = np.zeros((2, 4, 4, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ImagePreprocessing.apply_table(images.astype(np.int16), table)
    with pytest.raises(DecodeError) as err:
        ImagePreprocessing.apply_table(images, table, out=np.empty((2, 4, 5, 1), np.int8))
    assert err.value.reason == "wrong_shape"
    with pytest.raises(ValueError, match="C-contiguous int8"):
        ImagePreprocessing.apply_table(images, table, out=np.empty((2, 4, 4, 1), np.float32))
    strided = np.empty((2, 4, 8, 1), np.int8)[:, :, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        ImagePreprocessing.apply_table(images, table, out=strided)


def test_pixel_table_is_the_arithmetic_of_every_value() -> None:
    prep = ImagePreprocessing(
        height=2, width=2, channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
    )
    table = prep.pixel_table()
    assert table is not None and table.shape == (3, 256) and table.dtype == np.float32
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    expected = _normalize_every_pixel(prep, values.reshape(1, 1, 256, 3))[0, 0].T
    np.testing.assert_array_equal(table, expected)
    # mean/std that broadcast instead of fitting the channels have no table
    wide = ImagePreprocessing(height=2, width=2, channels=1, mean=[0.1, 0.2], std=[1.0, 2.0])
    assert wide.pixel_table() is None


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
