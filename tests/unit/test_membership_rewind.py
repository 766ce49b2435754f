"""edge_agent.membership.needs_rewind: when a partition given straight back is sought back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.membership import needs_rewind


def test_a_position_kept_past_the_commit_is_rewound() -> None:
    assert needs_rewind(80, 50)  # eager rebalance: the client kept its position


def test_a_position_at_or_before_the_commit_or_unknown_is_left_alone() -> None:
    assert not needs_rewind(50, 50)
    assert not needs_rewind(None, 50)  # the client starts from the group's commit
    # a memory-only broker restarted: the topic starts again at 0 and the client was reset
    # there; seeking to the old commit (50) would skip the first 50 new inputs
    assert not needs_rewind(0, 50)


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_rewinding_never_moves_a_client_forward(position: int, committed: int) -> None:
    assert needs_rewind(position, committed) == (position > committed)
