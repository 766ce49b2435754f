"""Synthetic input drift for replays: what a field change does to a device's data.

A :class:`Drift` changes what some devices send from some point of a replay on, the way
field changes do: a camera's exposure drops (``darken``), a sensor's gain or offset
changes (``gain``, ``offset`` on chosen channels), a camera is turned (``rotate``). It is
how ``edgeinfer replay --drift`` and ``edgeinfer demo --scenario drift`` show the agents'
monitoring, sample capture and the retrain/shadow/promote loop at work.

Which devices drift is a stable function of the device id (a hash), so the same devices
drift in every run and on every partition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from stream.exceptions import ConfigError

DriftKind = Literal["darken", "rotate", "gain", "offset"]
KINDS: tuple[str, ...] = ("darken", "rotate", "gain", "offset")
IMAGE_KINDS: tuple[str, ...] = ("darken", "rotate")
SENSOR_KINDS: tuple[str, ...] = ("gain", "offset")


@dataclass(frozen=True, kw_only=True)
class Drift:
    """``kind`` with ``amount`` (darken: brightness factor in (0, 1]; rotate: quarter
    turns; gain: factor; offset: added value), on ``channels`` (sensors; None = all), for
    the share ``devices`` of the devices, from the ``after``-th message of the replay on."""

    kind: DriftKind
    amount: float
    channels: tuple[int, ...] | None = None
    devices: float = 1.0
    after: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            msg = f"drift kind must be one of {', '.join(KINDS)}, got {self.kind!r}"
            raise ConfigError(msg)
        if not np.isfinite(self.amount):
            msg = f"drift amount must be finite, got {self.amount}"
            raise ConfigError(msg)
        if self.kind == "darken" and not 0.0 < self.amount <= 1.0:
            msg = f"darken takes a brightness factor in (0, 1], got {self.amount}"
            raise ConfigError(msg)
        if self.kind == "rotate" and self.amount != int(self.amount):
            msg = f"rotate takes whole quarter turns, got {self.amount}"
            raise ConfigError(msg)
        if not 0.0 <= self.devices <= 1.0:
            msg = f"the drifting share of devices must be in [0, 1], got {self.devices}"
            raise ConfigError(msg)
        if self.after < 0:
            msg = f"drift start must be >= 0 messages, got {self.after}"
            raise ConfigError(msg)
        if self.channels is not None and any(c < 0 for c in self.channels):
            msg = f"drift channels must be >= 0, got {self.channels}"
            raise ConfigError(msg)

    @classmethod
    def parse(cls, spec: str, *, devices: float = 1.0, after: int = 0) -> Drift:
        """``KIND:AMOUNT[@CH,CH...]``, e.g. ``darken:0.45``, ``rotate:1``,
        ``gain:1.5@0,1,2``, ``offset:2@0``."""
        head, _, chans = spec.partition("@")
        kind, sep, amount = head.partition(":")
        if not sep:
            msg = f"drift must be KIND:AMOUNT[@CHANNELS] (e.g. darken:0.45), got {spec!r}"
            raise ConfigError(msg)
        try:
            value = float(amount)
            channels = tuple(int(c) for c in chans.split(",")) if chans else None
        except ValueError as exc:
            msg = f"drift {spec!r}: {exc}"
            raise ConfigError(msg) from exc
        return cls(
            kind=cast(DriftKind, kind.strip()),  # checked in __post_init__
            amount=value,
            channels=channels,
            devices=devices,
            after=after,
        )

    @property
    def for_images(self) -> bool:
        return self.kind in IMAGE_KINDS

    def describe(self) -> str:
        on = f" on channels {list(self.channels)}" if self.channels is not None else ""
        start = f" from message {self.after} on" if self.after else ""
        return f"{self.kind} {self.amount:g}{on} for {self.devices:.0%} of the devices{start}"

    def affects(self, device_id: str) -> bool:
        """Whether ``device_id`` is one of the drifting devices (stable across runs)."""
        if self.devices >= 1.0:
            return True
        digest = hashlib.sha256(device_id.encode("utf-8", "backslashreplace")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64 < self.devices

    def active(self, index: int, device_id: str) -> bool:
        """Whether message ``index`` of the replay (0-based), from ``device_id``, drifts."""
        return index >= self.after and self.affects(device_id)

    def image(self, pixels: np.ndarray) -> np.ndarray:
        """The drifted uint8 image (H, W, C)."""
        if self.kind == "darken":
            return (pixels.astype(np.float32) * self.amount).astype(np.uint8)
        if self.kind == "rotate":
            return np.ascontiguousarray(np.rot90(pixels, int(self.amount), axes=(0, 1)))
        msg = f"{self.kind} drift applies to sensor readings, not images"
        raise ConfigError(msg)

    def readings(self, values: np.ndarray) -> np.ndarray:
        """The drifted readings (..., C) as float32."""
        out = np.array(values, dtype=np.float32, copy=True)
        chans = list(self.channels) if self.channels is not None else slice(None)
        if self.kind == "gain":
            out[..., chans] *= np.float32(self.amount)
        elif self.kind == "offset":
            out[..., chans] += np.float32(self.amount)
        else:
            msg = f"{self.kind} drift applies to images, not sensor readings"
            raise ConfigError(msg)
        return out

    def check_channels(self, channels: int) -> None:
        """Refuse channels the data does not have."""
        if self.channels is not None and any(c >= channels for c in self.channels):
            msg = f"drift channels {list(self.channels)}: the data has {channels} channels"
            raise ConfigError(msg)
