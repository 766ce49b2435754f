"""stream.drift: the synthetic field changes of replays and the drift demo."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.drift import Drift
from stream.exceptions import ConfigError


def test_parse_forms() -> None:
    d = Drift.parse("gain:1.5@0,2", devices=0.5, after=10)
    assert (d.kind, d.amount, d.channels, d.devices, d.after) == ("gain", 1.5, (0, 2), 0.5, 10)
    assert Drift.parse("darken:0.45").channels is None
    assert Drift.parse("rotate:1").for_images
    assert not Drift.parse("offset:-2").for_images


@pytest.mark.parametrize(
    "spec",
    [
        "darken",
        "darken:",
        "darken:2",
        "darken:0",
        "blur:1",
        "rotate:0.5",
        "gain:x",
        "gain:1@a",
        "gain:nan",
        "offset:1@-1",
    ],
)
def test_bad_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        Drift.parse(spec)


@given(st.text(max_size=40))
def test_any_spec_parses_or_is_refused_cleanly(spec: str) -> None:
    try:
        Drift.parse(spec)
    except ConfigError:
        pass


def test_device_share_is_stable_and_near_the_share() -> None:
    d = Drift(kind="darken", amount=0.5, devices=0.3)
    ids = [f"cam-{i}" for i in range(2000)]
    chosen = [d.affects(i) for i in ids]
    assert chosen == [d.affects(i) for i in ids]  # same devices every time
    assert 0.25 < sum(chosen) / len(ids) < 0.35
    assert not any(Drift(kind="darken", amount=0.5, devices=0.0).affects(i) for i in ids)


def test_active_only_after_the_start() -> None:
    d = Drift(kind="offset", amount=1.0, after=5)
    assert not d.active(4, "x")
    assert d.active(5, "x")


def test_image_transforms() -> None:
    img = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1) * 40
    dark = Drift(kind="darken", amount=0.5).image(img)
    assert dark.dtype == np.uint8
    np.testing.assert_array_equal(dark, (img.astype(np.float32) * 0.5).astype(np.uint8))
    rot = Drift(kind="rotate", amount=1).image(img)
    assert rot.shape == (3, 2, 1)
    np.testing.assert_array_equal(rot[..., 0], np.rot90(img[..., 0]))
    with pytest.raises(ConfigError):
        Drift(kind="gain", amount=2).image(img)


def test_reading_transforms_touch_only_the_chosen_channels() -> None:
    x = np.ones((4, 3), dtype=np.float32)
    g = Drift(kind="gain", amount=2.0, channels=(1,)).readings(x)
    np.testing.assert_array_equal(g, [[1, 2, 1]] * 4)
    o = Drift(kind="offset", amount=-1.0).readings(x)
    np.testing.assert_array_equal(o, np.zeros((4, 3)))
    np.testing.assert_array_equal(x, np.ones((4, 3)))  # the input is not changed
    with pytest.raises(ConfigError):
        Drift(kind="gain", amount=2.0, channels=(3,)).check_channels(3)
