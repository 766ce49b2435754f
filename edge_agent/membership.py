"""Which input partitions the agent owns, how that changes, and whether it is starved.

The transport's rebalance callbacks (:meth:`Membership.on_assigned`/``on_revoked``) only
note a change: kafka-python runs them on its network thread, where a commit fails and
inference or a flush would stall heartbeats. The pipeline applies the changes after its
poll returns (:meth:`Membership.apply`), on its own thread: a revoked partition's inputs
held in memory are dropped (its new owner reads them again from the committed offset;
the pipeline commits what it answered before a revocation it is called back for on its
own thread: edge_agent/pipeline.py), and a partition
given straight back is sought back to this agent's last commit when the client kept a
position past it (kafka-python keeps its position across an eager rebalance, past the
dropped inputs; :func:`needs_rewind`).

An agent with no partition for longer than ``unassigned_limit_s`` while its topic has
partitions is *starved* (a wedged group coordinator, or a spare agent): not ready.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_agent.transport import Consumer

if TYPE_CHECKING:
    from edge_agent.metrics import AgentMetrics

logger = logging.getLogger(__name__)

#: How often the input topic's partition count is read from metadata.
METADATA_EVERY_S = 10.0


class Membership:
    """The agent's partitions of one input topic; see the module docstring."""

    def __init__(
        self, *, topic: str, metrics: AgentMetrics, unassigned_limit_s: float, now: float
    ) -> None:
        self.topic = topic
        self.metrics = metrics
        self.unassigned_limit_s = unassigned_limit_s
        #: Partitions of the input topic this agent owns now.
        self.assigned: frozenset[int] = frozenset()
        #: Rebalances that took partitions from this agent.
        self.revocations = 0
        #: Partitions of the input topic (metadata), refreshed by :meth:`refresh`.
        self.topic_partitions: int | None = None
        #: Changes noted by the callbacks, not applied yet: (added?, partitions).
        self._changes: deque[tuple[bool, set[int]]] = deque()
        #: Revoked partition -> its last commit, to replay from if it comes straight back.
        self._dropped_from: dict[int, int] = {}
        self._unassigned_since: float | None = now
        self._next_metadata = 0.0

    # ------------------------------------------------- callbacks (any thread)

    def on_assigned(self, parts: set[int]) -> None:
        self._changes.append((True, set(parts)))

    def on_revoked(self, parts: set[int]) -> None:
        self._changes.append((False, set(parts)))

    @property
    def changed(self) -> bool:
        return bool(self._changes)

    # -------------------------------------------------- the pipeline's thread

    def apply(
        self,
        consumer: Consumer | None,
        committed: dict[int, int],
        drop: Callable[[set[int]], None],
    ) -> None:
        """Apply the noted changes: ``drop(parts)`` forgets a revoked partition's work
        in memory; ``committed`` is the agent's last commit per partition."""
        while self._changes:
            added, parts = self._changes.popleft()
            if added:
                self.assigned = frozenset(self.assigned | parts)
                logger.info("partitions assigned topic=%s partitions=%s", self.topic, sorted(parts))
                self._replay_dropped(consumer, parts)
            else:
                logger.info("partitions revoked topic=%s partitions=%s", self.topic, sorted(parts))
                if parts:
                    self.revocations += 1
                for p in parts & committed.keys():
                    self._dropped_from[p] = committed[p]
                drop(parts)
                self.assigned = frozenset(self.assigned - parts)
            self.metrics.partitions_assigned.set(len(self.assigned))
            if added and not self.assigned:
                logger.warning(
                    'no partition of topic="%s" assigned to this agent: the topic does not '
                    "exist yet, or the group has more agents than the topic has partitions",
                    self.topic,
                )

    def _replay_dropped(self, consumer: Consumer | None, parts: set[int]) -> None:
        for p in sorted(parts & self._dropped_from.keys()):
            start = self._dropped_from[p]
            try:
                if consumer is not None and needs_rewind(consumer.position(p), start):
                    consumer.seek(p, start)
            except Exception as exc:  # noqa: BLE001  the client resets it from the commit
                logger.warning("seek %s[%d] to %d failed: %s", self.topic, p, start, exc)
        self._dropped_from.clear()

    def unassigned_s(self, now: float) -> float:
        """Seconds since this agent last owned a partition (0 while it owns some)."""
        if self.assigned:
            self._unassigned_since = None
            return 0.0
        if self._unassigned_since is None:
            self._unassigned_since = now
        return now - self._unassigned_since

    def starved(self, now: float) -> bool:
        """No partition for longer than the limit while the topic has partitions."""
        limit = self.unassigned_limit_s
        if limit <= 0 or self.assigned:
            return False
        return self.unassigned_s(now) > limit and (self.topic_partitions or 0) > 0

    def refresh(self, consumer: Consumer | None, now: float) -> None:
        """Housekeeping: the topic's partition count (every few seconds) and the gauges."""
        if consumer is not None and now >= self._next_metadata:
            self._next_metadata = now + METADATA_EVERY_S
            try:
                self.topic_partitions = consumer.partition_count()
            except Exception:  # noqa: BLE001  metadata unavailable: keep the last count
                logger.debug("partition count unavailable", exc_info=True)
            if self.topic_partitions is not None:
                self.metrics.input_partitions.set(self.topic_partitions)
        self.metrics.unassigned_seconds.set(self.unassigned_s(now))


def needs_rewind(position: int | None, committed: int) -> bool:
    """Whether a partition given straight back must be sought back to ``committed``: only
    when the client kept a position past it (an eager rebalance keeps the position, past
    the inputs dropped with the revocation). A position at or before it, or none (the
    client will start from the group's commit), needs nothing; and a broker that lost the
    partition (an embedded, memory-only broker restarted: the topic starts again at 0) has
    its client reset to the new start, which a seek to the old commit would skip past."""
    return position is not None and position > committed
