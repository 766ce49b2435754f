"""Which version the model store picks under shadow promotion and rollouts (pure choice:
the store's ``_target`` over a source that lists versions; loading is tested in
tests/integration/test_agent_shadow.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.model_store import ModelStore
from edge_agent.promotion import Decision
from edge_agent.sources import ModelSource
from stream.rollout import Rollout, rollout_point


class ListedSource(ModelSource):
    """Versions and rollouts from a dict; nothing to fetch."""

    description = "listed"

    def __init__(self, rollouts: dict[str, Rollout | None]) -> None:
        self.rollouts = rollouts

    def versions(self) -> list[str]:
        return list(self.rollouts)

    def model_name(self) -> str:
        return "m"

    def rollout(self, version: str) -> Rollout | None:
        return self.rollouts[version]

    def fetch(self, version: str) -> Path:
        raise AssertionError(version)


def store(tmp_path: Path, rollouts: dict[str, Rollout | None], **kw: object) -> ModelStore:
    return ModelStore(
        source=ListedSource(rollouts),
        model_name="m",
        public_key=None,
        allow_unsigned=True,
        num_threads=1,
        pinned_version=None,
        metrics=None,
        state_dir=tmp_path,
        agent_id="agent-7",
        **kw,  # type: ignore[arg-type]
    )


def serving(s: ModelStore, version: str) -> None:
    s._current = SimpleNamespace(version=version, name="m")  # type: ignore[assignment]


def test_a_rejected_version_is_not_picked_again_even_by_a_new_store(tmp_path: Path) -> None:
    s = store(tmp_path, {"1": None, "2": None})
    assert s._target() == "2"
    model = SimpleNamespace(name="m", version="2")
    s.reject(model, Decision("rejected", "agreement", "low"))  # type: ignore[arg-type]
    assert s._target() == "1"
    assert store(tmp_path, {"1": None, "2": None, "3": None})._target() == "3"
    assert store(tmp_path, {"1": None, "2": None})._target() == "1"


def test_rollout_holds_back_only_versions_newer_than_served_or_verified(tmp_path: Path) -> None:
    nobody = Rollout(share=0.0)
    s = store(tmp_path, {"1": None, "2": nobody})
    serving(s, "1")
    assert s._target() == "1"  # 2 is not adopted: the agent keeps 1
    s.floor.served("m", "2")  # verified and served before: share 0 cannot move it down
    serving(s, "2")
    assert s._target() == "2"
    point = rollout_point("agent-7", "m", "3")
    just_in, just_out = Rollout(share=min(point + 0.01, 1.0)), Rollout(share=point)
    assert store(tmp_path / "a", {"1": None, "3": just_in})._target() == "3"
    s = store(tmp_path / "b", {"1": None, "3": just_out})
    serving(s, "1")
    assert s._target() == "1"


def test_an_agent_with_no_model_takes_the_newest_when_no_share_includes_it(
    tmp_path: Path,
) -> None:
    assert store(tmp_path, {"1": Rollout(share=0.0), "2": Rollout(share=0.0)})._target() == "2"
    assert store(tmp_path / "x", {"1": None, "2": Rollout(share=0.0)})._target() == "1"


@pytest.mark.parametrize(("promotion", "expected"), [("shadow", "1"), ("direct", "2")])
def test_a_restart_under_shadow_starts_on_the_version_served_before(
    tmp_path: Path, promotion: str, expected: str
) -> None:
    s = store(tmp_path, {"1": None, "2": None}, promotion=promotion)
    s.floor.served("m", "1")  # 2 was in shadow, not judged, when the agent stopped
    assert s._target() == expected
    serving(s, "1")
    assert s._target() == "2"  # then 2 is prepared (and shadowed under shadow promotion)


def test_a_restart_under_a_shadow_rollout_starts_on_the_version_served_before(
    tmp_path: Path,
) -> None:
    s = store(tmp_path, {"1": None, "2": Rollout(share=1.0, mode="shadow")})
    s.floor.served("m", "1")
    assert s._target() == "1"
