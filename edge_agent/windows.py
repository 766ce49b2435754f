"""Per-device sliding windows for sequence models, with bounded memory.

Each device (the message key) has a buffer of its most recent readings. When it holds
``window`` readings, a copy is emitted for inference and the buffer slides by ``stride``
readings (with ``stride > window`` the readings between windows are skipped). A chunk adds
all its samples in order and may emit several windows.

Rules (documented in docs/agent.md):

* **Out of order.** A message whose ``ts`` is older than the last accepted ``ts`` of its
  device is refused with ``DecodeError("out_of_order")`` (the caller dead-letters it) and
  the window is left as it was. An equal ``ts`` is accepted.
* **Memory.** At most ``max_devices`` devices are tracked; adding one more evicts the
  least recently updated one. A device idle for ``idle_s`` seconds is evicted by
  :meth:`DeviceWindows.evict_idle`. An evicted device's partial window is dropped.
* **Offsets.** Every reading remembers the (partition, offset) of its message.
  :meth:`DeviceWindows.min_held` gives, per partition, the oldest offset still held by an
  open window: the agent never commits at or past it, so after a crash the readings of
  incomplete windows are read again (at-least-once).
* A device whose messages move to another partition starts a new window there.
* **Per message.** The windows one message fills are copies (one per stride): a chunk of
  10,000 readings on a stride-1 model would fill ~10,000 windows at once. A message whose
  windows would take more than ``max_emit_bytes`` is refused with
  ``DecodeError("too_large")`` before anything changes.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.exceptions import DecodeError

logger = logging.getLogger(__name__)

#: Default budget for the windows one message may fill (float32 copies).
DEFAULT_MAX_EMIT_BYTES = 16 * 1024 * 1024


def _check_geometry(window: int, stride: int, channels: int) -> None:
    if window < 1 or stride < 1 or channels < 1:
        msg = f"window, stride and channels must be >= 1, got {window}, {stride}, {channels}"
        raise ValueError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """A full window of one device, ready for inference."""

    device_id: str
    #: float32 (window, channels), a copy owned by this object.
    values: np.ndarray
    partition: int
    first_offset: int
    last_offset: int
    #: ``ts`` of the message that completed the window (epoch ms).
    ts: int
    #: Headers of the message that completed the window (carried through to the result).
    headers: Any


class _Device:
    __slots__ = ("buf", "offsets", "n", "skip", "last_ts", "partition", "last_seen")

    def __init__(self, capacity: int, channels: int, partition: int) -> None:
        self.buf = np.empty((capacity, channels), dtype=np.float32)
        self.offsets = np.empty(capacity, dtype=np.int64)
        self.n = 0
        self.skip = 0
        self.last_ts = -1
        self.partition = partition
        self.last_seen = 0.0


@dataclass(kw_only=True, eq=False)
class DeviceWindows:
    """Sliding windows for many devices; see the module docstring for the rules."""

    window: int
    stride: int
    channels: int
    max_devices: int = 10_000
    idle_s: float = 600.0
    max_emit_bytes: int = DEFAULT_MAX_EMIT_BYTES
    _devices: OrderedDict[str, _Device] = field(default_factory=OrderedDict, init=False, repr=False)
    # partition -> lazy min-heap of (first held offset, device id); stale entries are
    # skipped when they reach the top.
    _heaps: dict[int, list[tuple[int, str]]] = field(default_factory=dict, init=False, repr=False)
    #: Evictions since construction, by reason ("capacity", "idle").
    evicted: dict[str, int] = field(default_factory=lambda: {"capacity": 0, "idle": 0}, init=False)

    def __post_init__(self) -> None:
        _check_geometry(self.window, self.stride, self.channels)
        if self.max_devices < 1:
            msg = f"max_devices must be >= 1, got {self.max_devices}"
            raise ValueError(msg)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def held(self, device_id: str) -> int:
        """How many readings the device's open window holds (0 if unknown)."""
        dev = self._devices.get(device_id)
        return 0 if dev is None else dev.n

    def min_held(self, partition: int) -> int | None:
        """The oldest offset of ``partition`` still held by an open window, or None."""
        heap = self._heaps.get(partition)
        while heap:
            offset, device_id = heap[0]
            dev = self._devices.get(device_id)
            if (
                dev is not None
                and dev.partition == partition
                and dev.n > 0
                and int(dev.offsets[0]) == offset
            ):
                return offset
            heapq.heappop(heap)
        return None

    # ------------------------------------------------------------------- update

    def add(
        self,
        device_id: str,
        ts: int,
        samples: np.ndarray,
        *,
        partition: int,
        offset: int,
        headers: Any = None,
        now: float = 0.0,
    ) -> list[Window]:
        """Add one message's readings (float32 (k, channels)); return the windows it filled.

        Raises ``DecodeError("out_of_order")`` when ``ts`` is older than the device's last
        accepted ``ts`` and ``DecodeError("wrong_shape")`` on a channel mismatch; in both
        cases nothing changes.
        """
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            msg = (
                f"the readings have shape {tuple(samples.shape)}, expected (n, "
                f"{self.channels}); send {self.channels} numbers per reading"
            )
            raise DecodeError("wrong_shape", msg)
        self._check_emit_budget(device_id, samples.shape[0])
        dev = self._devices.get(device_id)
        if dev is not None and dev.partition != partition:
            logger.warning(
                'device="%s" moved from partition=%d to partition=%d; its open window '
                "(%d readings) starts again",
                device_id,
                dev.partition,
                partition,
                dev.n,
            )
            del self._devices[device_id]
            dev = None
        if dev is None:
            if len(self._devices) >= self.max_devices:
                self._evict_lru()
            dev = _Device(self.window, self.channels, partition)
            self._devices[device_id] = dev
        else:
            if ts < dev.last_ts:
                msg = (
                    f"reading ts={ts} of device {device_id!r} is older than its previous "
                    f"reading ts={dev.last_ts}; readings must arrive in time order "
                    "(equal timestamps are accepted)"
                )
                raise DecodeError("out_of_order", msg)
            self._devices.move_to_end(device_id)
        dev.last_ts = ts
        dev.last_seen = now
        return self._append(device_id, dev, samples, offset, ts, headers)

    def _check_emit_budget(self, device_id: str, readings: int) -> None:
        """Refuse a message that would fill more windows than ``max_emit_bytes`` holds."""
        held = self.held(device_id)
        filled = held + readings - self.window
        if filled < 0:
            return
        count = filled // self.stride + 1
        size = count * self.window * self.channels * 4
        if size > self.max_emit_bytes:
            msg = (
                f"the message's {readings} readings would fill {count} windows "
                f"({size} bytes), over the limit of {self.max_emit_bytes} bytes per message; "
                "send fewer readings per chunk"
            )
            raise DecodeError("too_large", msg)

    def _append(
        self,
        device_id: str,
        dev: _Device,
        samples: np.ndarray,
        offset: int,
        ts: int,
        headers: Any,
    ) -> list[Window]:
        out: list[Window] = []
        k = samples.shape[0]
        i = 0
        if dev.skip:
            dropped = min(dev.skip, k)
            dev.skip -= dropped
            i = dropped
        if dev.buf.shape[0] < self.window:  # after reconfigure() to a longer window
            self._grow(dev)
        was_empty = dev.n == 0
        while i < k:
            take = min(k - i, self.window - dev.n)
            dev.buf[dev.n : dev.n + take] = samples[i : i + take]
            dev.offsets[dev.n : dev.n + take] = offset
            dev.n += take
            i += take
            if dev.n < self.window:
                break
            out.append(
                Window(
                    device_id=device_id,
                    values=dev.buf[: self.window].copy(),
                    partition=dev.partition,
                    first_offset=int(dev.offsets[0]),
                    last_offset=int(dev.offsets[self.window - 1]),
                    ts=ts,
                    headers=headers,
                )
            )
            self._slide(dev)
            was_empty = True  # the first held offset changed
            if dev.skip:
                dropped = min(dev.skip, k - i)
                dev.skip -= dropped
                i += dropped
        if was_empty and dev.n > 0:
            self._push(dev.partition, int(dev.offsets[0]), device_id)
        return out

    def _slide(self, dev: _Device) -> None:
        if self.stride >= dev.n:
            dev.skip = self.stride - dev.n
            dev.n = 0
            return
        keep = dev.n - self.stride
        dev.buf[:keep] = dev.buf[self.stride : dev.n]
        dev.offsets[:keep] = dev.offsets[self.stride : dev.n]
        dev.n = keep

    def _grow(self, dev: _Device) -> None:
        buf = np.empty((self.window, self.channels), dtype=np.float32)
        offsets = np.empty(self.window, dtype=np.int64)
        buf[: dev.n] = dev.buf[: dev.n]
        offsets[: dev.n] = dev.offsets[: dev.n]
        dev.buf, dev.offsets = buf, offsets

    def _push(self, partition: int, offset: int, device_id: str) -> None:
        heap = self._heaps.setdefault(partition, [])
        heapq.heappush(heap, (offset, device_id))
        if len(heap) > 4 * len(self._devices) + 1024:
            self._rebuild_heap(partition)

    def _rebuild_heap(self, partition: int) -> None:
        heap = [
            (int(d.offsets[0]), did)
            for did, d in self._devices.items()
            if d.partition == partition and d.n > 0
        ]
        heapq.heapify(heap)
        self._heaps[partition] = heap

    # ----------------------------------------------------------------- eviction

    def _evict_lru(self) -> None:
        device_id, dev = self._devices.popitem(last=False)
        self.evicted["capacity"] += 1
        logger.info(
            'device="%s" evicted: max_devices=%d reached; its partial window of %d '
            "readings is dropped",
            device_id,
            self.max_devices,
            dev.n,
        )

    def evict_idle(self, now: float) -> int:
        """Evict devices not updated for ``idle_s`` seconds; returns how many."""
        if self.idle_s <= 0:
            return 0
        cutoff = now - self.idle_s
        count = 0
        while self._devices:
            device_id, dev = next(iter(self._devices.items()))
            if dev.last_seen > cutoff:
                break
            del self._devices[device_id]
            count += 1
        if count:
            self.evicted["idle"] += count
            logger.info("devices evicted idle_s=%.0f count=%d", self.idle_s, count)
        return count

    def drop_partitions(self, partitions: set[int] | frozenset[int]) -> int:
        """Forget the windows of devices on ``partitions`` (revoked or replayed)."""
        gone = [did for did, d in self._devices.items() if d.partition in partitions]
        for did in gone:
            del self._devices[did]
        for p in partitions:
            self._heaps.pop(p, None)
        return len(gone)

    def clear(self) -> None:
        self._devices.clear()
        self._heaps.clear()

    def reconfigure(self, *, window: int, stride: int, channels: int) -> None:
        """Adopt a new model's geometry; open windows are kept when the channels match."""
        _check_geometry(window, stride, channels)
        if channels != self.channels:
            logger.warning(
                "window channels change from %d to %d: %d open windows dropped",
                self.channels,
                channels,
                len(self._devices),
            )
            self.clear()
            self.channels = channels
        self.window = window
        self.stride = stride
        for dev in self._devices.values():
            if dev.n > window:  # shorter window: keep the newest readings
                drop = dev.n - window
                dev.buf[:window] = dev.buf[drop : dev.n]
                dev.offsets[:window] = dev.offsets[drop : dev.n]
                dev.n = window
            dev.skip = min(dev.skip, max(stride - window, 0))
        for p in list(self._heaps):
            self._rebuild_heap(p)
