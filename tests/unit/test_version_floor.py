"""The anti-rollback floor: what it persists, how it rises and falls, hostile state files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.version_floor import (
    MAX_ROLLED_BACK,
    FloorState,
    VersionFloor,
    parse_floor_state,
)


def test_the_floor_rises_with_served_versions_and_survives_a_restart(tmp_path: Path) -> None:
    floor = VersionFloor(tmp_path)
    assert floor.floor("m") is None and not floor.is_below("m", "1")
    floor.served("m", "2")
    floor.served("m", "10")
    floor.served("m", "9")  # a pin below it does not lower it
    assert floor.floor("m") == "10"  # natural order: 10 > 9 > 2
    assert floor.is_below("m", "9") and not floor.is_below("m", "10")
    assert floor.floor("other") is None  # per model
    restarted = VersionFloor(tmp_path)
    assert restarted.floor("m") == "10"
    saved = json.loads(restarted.path("m").read_text())
    assert saved == {"model": "m", "highest_verified": "10", "rolled_back_from": []}


def test_min_version_is_a_floor_of_its_own(tmp_path: Path) -> None:
    floor = VersionFloor(tmp_path, min_version="5")
    assert floor.floor("m") == "5" and floor.is_below("m", "4") and floor.below_min("4")
    floor.served("m", "7")
    assert floor.floor("m") == "7" and not floor.below_min("6")


def test_the_agents_own_rollback_lowers_the_floor_and_remembers_the_version_left(
    tmp_path: Path,
) -> None:
    floor = VersionFloor(tmp_path)
    floor.served("m", "3")
    floor.rolled_back("m", from_version="3", to_version="2")
    restarted = VersionFloor(tmp_path)
    assert restarted.floor("m") == "2"
    assert restarted.rolled_back_from("m") == ("3",)
    restarted.forget_rollbacks("m")
    assert VersionFloor(tmp_path).state("m") == FloorState(highest="2")


def test_agents_sharing_a_state_dir_never_lower_each_others_floor(tmp_path: Path) -> None:
    first, second = VersionFloor(tmp_path), VersionFloor(tmp_path)
    first.served("m", "1")
    second.served("m", "5")
    first.served("m", "3")  # first never saw 5: it reads the file again before writing
    assert VersionFloor(tmp_path).floor("m") == "5"


def test_odd_model_names_stay_inside_the_state_folder(tmp_path: Path) -> None:
    floor = VersionFloor(tmp_path / "state")
    floor.served("../../escape", "1")
    assert floor.path("../../escape").parent == tmp_path / "state" / "anti-rollback"
    assert VersionFloor(tmp_path / "state").floor("../../escape") == "1"


@pytest.mark.parametrize(
    "content",
    [b"{", b"[]", b'{"highest_verified": 3}', b'{"highest_verified": "../x"}', b"\xff" * 10],
)
def test_a_broken_state_file_is_ignored_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    floor = VersionFloor(tmp_path)
    floor.path("m").parent.mkdir(parents=True)
    floor.path("m").write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="edge_agent.version_floor"):
        assert floor.floor("m") is None
    assert "ignoring the anti-rollback state" in caplog.text
    floor.served("m", "4")  # and it is rewritten whole
    assert VersionFloor(tmp_path).floor("m") == "4"


def test_only_the_most_recent_versions_left_are_remembered(tmp_path: Path) -> None:
    floor = VersionFloor(tmp_path)
    for v in range(MAX_ROLLED_BACK + 5):
        floor.rolled_back("m", from_version=str(v + 1), to_version=str(v))
    left = VersionFloor(tmp_path).rolled_back_from("m")
    assert len(left) == MAX_ROLLED_BACK and left[-1] == str(MAX_ROLLED_BACK + 5)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["highest_verified", "rolled_back_from", "model"]), _JSON)
    | _JSON,
    st.binary(max_size=40),
)
def test_hostile_state_files_parse_or_raise_value_error(data: object, raw: bytes) -> None:
    for content in (json.dumps(data).encode(), raw):
        try:
            state = parse_floor_state(content)
        except (ValueError, RecursionError):
            continue
        assert state.highest is None or isinstance(state.highest, str)
        assert all(isinstance(v, str) for v in state.rolled_back)
