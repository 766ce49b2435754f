"""Per-device sliding windows: geometry, chunks, out-of-order rule, memory cap, offsets."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.windows import DeviceWindows
from stream.exceptions import DecodeError


def readings(start: int, n: int, channels: int = 2) -> np.ndarray:
    """n readings whose first channel counts start, start+1, ..."""
    x = np.zeros((n, channels), dtype=np.float32)
    x[:, 0] = np.arange(start, start + n)
    return x


def feed(w: DeviceWindows, device: str, n: int, *, first_offset: int = 0, ts0: int = 0):
    out = []
    for i in range(n):
        out += w.add(device, ts0 + i, readings(i, 1), partition=0, offset=first_offset + i, now=0.0)
    return out


def test_window_equal_stride_emits_one_window_per_window_readings() -> None:
    w = DeviceWindows(window=100, stride=100, channels=2)
    out = feed(w, "d", 250)
    assert len(out) == 2
    assert out[0].values[:, 0].tolist() == list(range(100))
    assert out[1].values[:, 0].tolist() == list(range(100, 200))
    assert (out[0].first_offset, out[0].last_offset) == (0, 99)
    assert (out[1].first_offset, out[1].last_offset) == (100, 199)
    assert w.held("d") == 50


def test_stride_smaller_than_window_overlaps() -> None:
    w = DeviceWindows(window=4, stride=2, channels=2)
    out = feed(w, "d", 10)
    # windows start at 0, 2, 4, 6 -> (10 - 4) // 2 + 1 = 4 windows
    assert [o.values[:, 0].tolist() for o in out] == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7, 8, 9],
    ]
    assert [(o.first_offset, o.last_offset) for o in out] == [(0, 3), (2, 5), (4, 7), (6, 9)]
    assert w.held("d") == 2


def test_stride_larger_than_window_skips_readings() -> None:
    w = DeviceWindows(window=3, stride=5, channels=2)
    out = feed(w, "d", 13)
    assert [o.values[:, 0].tolist() for o in out] == [[0, 1, 2], [5, 6, 7], [10, 11, 12]]


def test_chunk_adds_all_samples_and_can_fill_several_windows() -> None:
    w = DeviceWindows(window=4, stride=2, channels=2)
    out = w.add("d", 0, readings(0, 9), partition=3, offset=42, now=0.0)
    assert [o.values[:, 0].tolist() for o in out] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert all(o.first_offset == o.last_offset == 42 and o.partition == 3 for o in out)
    assert w.held("d") == 3  # 6, 7, 8
    # the chunk that spans windows matches a reading-by-reading feed
    w2 = DeviceWindows(window=4, stride=2, channels=2)
    assert [o.values.tolist() for o in feed(w2, "d", 9)] == [o.values.tolist() for o in out]


def test_windows_are_copies() -> None:
    w = DeviceWindows(window=2, stride=1, channels=2)
    first = feed(w, "d", 2)[0]
    before = first.values.copy()
    feed(w, "d", 5, ts0=10)
    np.testing.assert_array_equal(first.values, before)


def test_devices_are_independent() -> None:
    w = DeviceWindows(window=3, stride=3, channels=2)
    got = []
    for i in range(6):  # interleaved a, b readings
        got += w.add("a", i, readings(i, 1), partition=0, offset=2 * i, now=0.0)
        got += w.add("b", i, readings(100 + i, 1), partition=0, offset=2 * i + 1, now=0.0)
    assert [(o.device_id, o.values[:, 0].tolist()) for o in got] == [
        ("a", [0, 1, 2]),
        ("b", [100, 101, 102]),
        ("a", [3, 4, 5]),
        ("b", [103, 104, 105]),
    ]


def test_out_of_order_reading_is_refused_and_window_unchanged() -> None:
    w = DeviceWindows(window=3, stride=3, channels=2)
    w.add("d", 100, readings(0, 1), partition=0, offset=0, now=0.0)
    with pytest.raises(DecodeError) as err:
        w.add("d", 99, readings(1, 1), partition=0, offset=1, now=0.0)
    assert err.value.reason == "out_of_order"
    assert "ts=99" in str(err.value) and "ts=100" in str(err.value)
    assert w.held("d") == 1
    # equal timestamps are accepted
    w.add("d", 100, readings(1, 1), partition=0, offset=2, now=0.0)
    out = w.add("d", 101, readings(2, 1), partition=0, offset=3, now=0.0)
    assert out[0].values[:, 0].tolist() == [0, 1, 2]


def test_wrong_channel_count_is_refused() -> None:
    w = DeviceWindows(window=3, stride=3, channels=2)
    with pytest.raises(DecodeError) as err:
        w.add("d", 0, np.zeros((1, 3), np.float32), partition=0, offset=0)
    assert err.value.reason == "wrong_shape"
    assert "d" not in w


def test_capacity_evicts_least_recently_updated_device() -> None:
    w = DeviceWindows(window=10, stride=10, channels=2, max_devices=2)
    w.add("a", 0, readings(0, 1), partition=0, offset=0, now=0.0)
    w.add("b", 0, readings(0, 1), partition=0, offset=1, now=0.0)
    w.add("a", 1, readings(1, 1), partition=0, offset=2, now=0.0)  # a is now the freshest
    w.add("c", 0, readings(0, 1), partition=0, offset=3, now=0.0)
    assert "b" not in w and "a" in w and "c" in w
    assert len(w) == 2
    assert w.evicted == {"capacity": 1, "idle": 0}


def test_idle_devices_are_evicted() -> None:
    w = DeviceWindows(window=10, stride=10, channels=2, idle_s=60)
    w.add("old", 0, readings(0, 1), partition=0, offset=0, now=0.0)
    w.add("new", 0, readings(0, 1), partition=0, offset=1, now=50.0)
    assert w.evict_idle(now=70.0) == 1
    assert "old" not in w and "new" in w
    assert w.evicted["idle"] == 1
    assert w.evict_idle(now=70.0) == 0


def test_min_held_tracks_the_oldest_open_reading_per_partition() -> None:
    w = DeviceWindows(window=3, stride=3, channels=2)
    assert w.min_held(0) is None
    w.add("a", 0, readings(0, 1), partition=0, offset=10, now=0.0)
    w.add("b", 0, readings(0, 1), partition=0, offset=11, now=0.0)
    w.add("c", 0, readings(0, 1), partition=1, offset=5, now=0.0)
    assert w.min_held(0) == 10
    assert w.min_held(1) == 5
    w.add("a", 1, readings(1, 1), partition=0, offset=12, now=0.0)
    w.add("a", 2, readings(2, 1), partition=0, offset=13, now=0.0)  # a's window done
    assert w.held("a") == 0
    assert w.min_held(0) == 11  # b still holds 11
    w.add("a", 3, readings(3, 1), partition=0, offset=14, now=0.0)
    assert w.min_held(0) == 11
    w.drop_partitions({0})
    assert w.min_held(0) is None
    assert w.min_held(1) == 5


def test_min_held_after_overlapping_slide() -> None:
    w = DeviceWindows(window=4, stride=1, channels=2)
    feed(w, "d", 4, first_offset=100)
    assert w.min_held(0) == 101  # the window slid by one: offsets 101..103 are kept
    feed(w, "d", 1, first_offset=104, ts0=10)
    assert w.min_held(0) == 102


def test_min_held_stays_correct_under_many_updates() -> None:
    rng = np.random.default_rng(0)
    w = DeviceWindows(window=5, stride=3, channels=2)
    ts = {}
    for offset in range(5000):
        d = f"d{rng.integers(0, 30)}"
        ts[d] = ts.get(d, 0) + 1
        w.add(d, ts[d], readings(offset, 1), partition=0, offset=offset, now=0.0)
        if offset % 97 == 0:
            expect = min(
                (int(dev.offsets[0]) for dev in w._devices.values() if dev.n), default=None
            )
            assert w.min_held(0) == expect


def test_device_moving_partition_starts_a_new_window() -> None:
    w = DeviceWindows(window=3, stride=3, channels=2)
    w.add("d", 0, readings(0, 2), partition=0, offset=0, now=0.0)
    w.add("d", 1, readings(2, 1), partition=1, offset=0, now=0.0)
    assert w.held("d") == 1
    assert w.min_held(0) is None and w.min_held(1) == 0


def test_reconfigure_keeps_windows_when_channels_match() -> None:
    w = DeviceWindows(window=4, stride=4, channels=2)
    feed(w, "d", 3)
    w.reconfigure(window=2, stride=2, channels=2)
    out = w.add("d", 10, readings(3, 1), partition=0, offset=3, now=0.0)
    assert [o.values[:, 0].tolist() for o in out] == [[1, 2]]  # newest 2 kept, then full
    w.reconfigure(window=2, stride=2, channels=3)
    assert len(w) == 0 and w.channels == 3


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="window, stride and channels"):
        DeviceWindows(window=0, stride=1, channels=1)
    with pytest.raises(ValueError, match="max_devices"):
        DeviceWindows(window=1, stride=1, channels=1, max_devices=0)


def test_reconfigure_refuses_a_stride_that_would_loop_forever() -> None:
    w = DeviceWindows(window=4, stride=2, channels=1)
    with pytest.raises(ValueError, match="stride and channels must be >= 1"):
        w.reconfigure(window=4, stride=0, channels=1)
    assert (w.window, w.stride) == (4, 2)


def test_a_chunk_filling_windows_over_the_budget_is_refused_before_any_change() -> None:
    w = DeviceWindows(window=100, stride=1, channels=6, max_emit_bytes=1024 * 1024)
    w.add("d", 1, np.zeros((50, 6), np.float32), partition=0, offset=0)
    big = np.zeros((10_000, 6), np.float32)  # ~9,950 windows of 2,400 bytes
    with pytest.raises(DecodeError, match="over the limit of 1048576 bytes") as err:
        w.add("d", 2, big, partition=0, offset=1)
    assert err.value.reason == "too_large"
    assert w.held("d") == 50
    # Just inside the budget: 50 + 485 readings fill 436 windows of 2,400 bytes.
    out = w.add("d", 3, np.zeros((485, 6), np.float32), partition=0, offset=2)
    assert len(out) == 436
