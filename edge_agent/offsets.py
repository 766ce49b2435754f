"""Offset bookkeeping of the owned input partitions: what may be committed, where to rewind.

The committed offset of a partition is ``min(next offset to consume, oldest offset still
held in an open sensor window, oldest offset waiting in the batch)``, so every message
below it has its result or dead letter acknowledged by the broker (docs/agent.md,
"Delivery").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class Offsets:
    """Per partition: the next offset to consume and the last committed one."""

    def __init__(self) -> None:
        #: partition -> offset after the last record handled
        self.next: dict[int, int] = {}
        #: partition -> last committed offset (or where this assignment started)
        self.committed: dict[int, int] = {}
        #: Records were handled since the last commit.
        self.advanced = False

    def handled(self, partition: int, first: int, last: int) -> None:
        """Records ``first..last`` of ``partition`` were handled (a poll's worth)."""
        if partition not in self.committed:
            self.committed[partition] = first  # where this assignment started
        self.next[partition] = last + 1
        self.advanced = True

    def committable(
        self, held: Callable[[int], int | None], waiting: Iterable[tuple[int, int]]
    ) -> dict[int, int]:
        """Offsets to commit now: per partition min(next, ``held(p)``, oldest ``waiting``).

        ``held(p)`` is the oldest offset of ``p`` in an open window (or None); ``waiting``
        yields the (partition, offset) of every input not answered yet.
        """
        oldest: dict[int, int] = {}
        for p, offset in waiting:
            if offset < oldest.get(p, offset + 1):
                oldest[p] = offset
        out: dict[int, int] = {}
        for p, offset in self.next.items():
            h = held(p)
            if h is not None and h < offset:
                offset = h
            w = oldest.get(p)
            if w is not None and w < offset:
                offset = w
            if offset > self.committed.get(p, -1):
                out[p] = offset
        return out

    def mark_committed(self, offsets: dict[int, int]) -> None:
        self.committed.update(offsets)
        self.advanced = False

    def rewind_targets(self, partitions: Iterable[int]) -> dict[int, int]:
        """Where to seek each of ``partitions`` to replay from the last commit; forgets
        the consumed positions."""
        targets = {p: self.committed[p] for p in partitions if p in self.committed}
        self.next.clear()
        self.advanced = False
        return targets

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: their new owner starts from the committed offset."""
        for p in partitions:
            self.next.pop(p, None)
            self.committed.pop(p, None)
