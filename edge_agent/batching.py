"""Micro-batching: collect inputs until the batch is full or the oldest one waited too long.

The pipeline adds items as it decodes them and asks :meth:`MicroBatcher.ready` after each
poll: a batch is run when it holds ``max_batch`` items, when its oldest item has waited
``max_latency_s``, or when the caller has nothing else to do (the poll returned nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """A FIFO of pending items with a size cap and a latency cap. Not thread-safe."""

    def __init__(self, *, max_batch: int, max_latency_s: float) -> None:
        if max_batch < 1:
            msg = f"max_batch must be >= 1, got {max_batch}"
            raise ValueError(msg)
        if max_latency_s < 0:
            msg = f"max_latency_s must be >= 0, got {max_latency_s}"
            raise ValueError(msg)
        self.max_batch = max_batch
        self.max_latency_s = max_latency_s
        self._items: list[T] = []
        self._times: list[float] = []

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def add(self, item: T, now: float) -> None:
        self._items.append(item)
        self._times.append(now)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.max_batch

    def due(self, now: float) -> bool:
        """True when the oldest item has waited ``max_latency_s`` (or the batch is full)."""
        if not self._items:
            return False
        if self.full:
            return True
        return now - self._times[0] >= self.max_latency_s

    def time_left(self, now: float) -> float | None:
        """Seconds until :meth:`due` turns true; None when empty."""
        if not self._items:
            return None
        if self.full:
            return 0.0
        return max(self.max_latency_s - (now - self._times[0]), 0.0)

    def take(self) -> list[T]:
        """Remove and return up to ``max_batch`` of the oldest items."""
        if len(self._items) <= self.max_batch:
            return self.take_all()
        batch = self._items[: self.max_batch]
        del self._items[: self.max_batch]
        del self._times[: self.max_batch]
        return batch

    def drop(self, predicate: Callable[[T], bool]) -> int:
        """Remove the items for which ``predicate`` is true (a revoked partition's)."""
        keep = [i for i, item in enumerate(self._items) if not predicate(item)]
        dropped = len(self._items) - len(keep)
        if dropped:
            self._items = [self._items[i] for i in keep]
            self._times = [self._times[i] for i in keep]
        return dropped

    def take_all(self) -> list[T]:
        """Remove and return every pending item (may exceed ``max_batch``)."""
        batch = self._items
        self._items, self._times = [], []
        return batch


@dataclass(slots=True)
class Pending:
    """One input waiting in the batch: an image or a full sensor window."""

    #: The model input before preprocessing: uint8 (H, W, C) or float32 (window, channels).
    x: np.ndarray
    device_id: str
    partition: int
    #: The message offset (windows: the first reading's).
    offset: int
    #: The same as ``offset`` for images; the last reading's offset for windows.
    last_offset: int
    window: bool
    #: Device timestamp (epoch ms) when the input had one.
    ts: int | None
    #: Kafka record timestamp (epoch ms): where end-to-end latency starts without ``ts``.
    kafka_ts: int
    #: The input's Kafka headers, carried through to the result.
    headers: Any
    #: Wall-clock time (s) the agent took the input from Kafka.
    consumed_at: float
    key: bytes | None
    #: The original bytes (images), for a dead letter if inference fails.
    value: bytes | None
