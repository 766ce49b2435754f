"""Rollout metadata (stream/rollout.py): parsing, the share by agent id, registry and topic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.announcements import announced_rollout, announcement_value, parse_announcement
from stream.bundle import verify_bundle
from stream.exceptions import BundleError
from stream.registry import Registry
from stream.rollout import (
    NOBODY,
    ROLLOUT_FILE,
    Rollout,
    in_rollout,
    parse_rollout,
    read_rollout,
    rollout_point,
)
from tests.fixtures.bundle_factory import write_test_bundle

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(data=json_values | st.fixed_dictionaries({"share": json_values, "mode": json_values}))
def test_parse_rollout_accepts_only_a_share_in_range_and_a_known_mode(data: Any) -> None:
    try:
        rollout = parse_rollout(data)
    except BundleError:
        return
    assert 0.0 <= rollout.share <= 1.0 and rollout.mode in ("serve", "shadow")


def test_defaults_and_errors() -> None:
    assert parse_rollout({}) == Rollout(share=1.0, mode="serve")
    assert parse_rollout({"share": 0, "mode": "shadow"}) == Rollout(share=0.0, mode="shadow")
    for bad in ({"share": 1.5}, {"share": True}, {"share": "0.5"}, {"mode": "yolo"}, [0.5]):
        with pytest.raises(BundleError, match="share|mode|object"):
            parse_rollout(bad)


def test_the_share_picks_about_that_share_of_agents_stably() -> None:
    agents = [f"device-{i}" for i in range(2000)]
    half = Rollout(share=0.5)
    chosen = {a for a in agents if in_rollout(a, "digits", "7", half)}
    assert 900 < len(chosen) < 1100
    # stable, and raising the share only adds agents
    assert chosen == {a for a in agents if in_rollout(a, "digits", "7", half)}
    more = {a for a in agents if in_rollout(a, "digits", "7", Rollout(share=0.8))}
    assert chosen < more
    # each version picks its own agents
    other = {a for a in agents if in_rollout(a, "digits", "8", half)}
    assert other != chosen
    assert all(in_rollout(a, "digits", "7", None) for a in agents[:10])
    assert not any(in_rollout(a, "digits", "7", Rollout(share=0.0)) for a in agents)
    assert all(0.0 <= rollout_point(a, "m", "1") < 1.0 for a in agents[:50])


def test_registry_publish_writes_rollout_before_the_version_appears(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    write_test_bundle(tmp_path / "b", name="motion", version="2")
    dest = registry.publish(tmp_path / "b", rollout=Rollout(share=0.25, mode="shadow"))
    assert json.loads((dest / ROLLOUT_FILE).read_text()) == {"share": 0.25, "mode": "shadow"}
    assert registry.rollout("motion", "2") == Rollout(share=0.25, mode="shadow")
    registry.set_rollout("motion", "2", Rollout(share=1.0))
    assert read_rollout(dest) == Rollout(share=1.0)
    (dest / ROLLOUT_FILE).write_text("{not json")
    assert registry.rollout("motion", "2") == NOBODY  # malformed: not adopted
    with pytest.raises(BundleError, match="not in"):
        registry.set_rollout("motion", "9", Rollout())


def test_the_announcement_carries_the_rollout_and_a_bad_one_means_nobody(tmp_path: Path) -> None:
    bundle = verify_bundle(write_test_bundle(tmp_path / "b").path, require_signature=False)
    plain = parse_announcement(announcement_value(bundle))
    assert announced_rollout(plain) is None
    value = announcement_value(bundle, rollout=Rollout(share=0.5, mode="shadow"))
    assert announced_rollout(parse_announcement(value)) == Rollout(share=0.5, mode="shadow")
    data = json.loads(value)
    data["rollout"] = {"share": "all"}
    assert announced_rollout(parse_announcement(json.dumps(data).encode())) == NOBODY


def test_publish_cli_writes_the_rollout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    bundle = write_test_bundle(tmp_path / "b", version="5")
    registry = tmp_path / "reg"
    args = ["publish", str(bundle.path), "--registry", str(registry), "--no-topic"]
    assert main([*args, "--rollout-share", "0.3", "--rollout-mode", "shadow"]) == 0
    assert Registry(registry).rollout("motion", "5") == Rollout(share=0.3, mode="shadow")
    assert main([*args, "--rollout-share", "1.5"]) == 2
    assert "rollout share must be a number in [0, 1], got 1.5" in capsys.readouterr().err
    assert Registry(registry).rollout("motion", "5") == Rollout(share=0.3, mode="shadow")
