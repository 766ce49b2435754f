"""The inputs every contender gets: encoded once, identical bytes for everyone.

* camera frames: structured synthetic RGB images (gradients, shapes, noise) as JPEG,
* digits: the scikit-learn test images as PNG (what ``edgeinfer replay`` sends),
* sensor chunks: BasicMotions windows, one full window per message,
* small JSON readings: one 6-channel reading per message (the client-library case).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from stream import content_types
from stream.codecs import (
    encode_chunk,
    encode_jpeg,
    encode_png,
    encode_reading,
    image_headers,
    sensor_headers,
)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes | None
    value: bytes
    headers: Headers


def now_ms() -> int:
    return int(time.time() * 1000)


def synthetic_frames(n: int, *, size: int = 96, seed: int = 0) -> np.ndarray:
    """``n`` uint8 RGB frames (n, size, size, 3) that look like a scene, not white noise.

    Smooth gradients with a few bright rectangles and mild noise: JPEG compresses them
    about as well as a camera frame (noise alone would make every frame a worst case).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        base = np.stack(
            [
                rng.uniform(40, 200)
                + 50 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + rng.random())),
                rng.uniform(40, 200)
                + 50 * np.cos(2 * np.pi * (yy * rng.uniform(0.5, 2) + rng.random())),
                rng.uniform(40, 200) + 40 * (xx - yy),
            ],
            axis=-1,
        )
        for _ in range(3):
            x0, y0 = rng.integers(0, size - 16, size=2)
            w, h = rng.integers(8, 32, size=2)
            base[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=3)
        base += rng.normal(0, 6, size=base.shape)
        frames[i] = np.clip(base, 0, 255).astype(np.uint8)
    return frames


def jpeg_messages(frames: np.ndarray, count: int, *, devices: int = 8) -> list[Message]:
    """``count`` JPEG frame messages cycling over ``frames`` (encoded once each)."""
    encoded = [encode_jpeg(f, quality=85) for f in frames]
    return _image_messages(encoded, content_types.JPEG, count, devices=devices)


def png_messages(images: np.ndarray, count: int, *, devices: int = 8) -> list[Message]:
    """``count`` PNG messages cycling over uint8 ``images`` (digits: (n, 8, 8, 1))."""
    encoded = [encode_png(im) for im in images]
    return _image_messages(encoded, content_types.PNG, count, devices=devices)


def _image_messages(encoded: list[bytes], ctype: str, count: int, *, devices: int) -> list[Message]:
    ts = now_ms()
    out = []
    for i in range(count):
        device = f"cam-{i % devices:03d}"
        out.append(
            Message(device.encode(), encoded[i % len(encoded)], image_headers(ctype, device, ts))
        )
    return out


def jpeg_maker(frames: np.ndarray, *, devices: int = 8) -> Callable[[int, int], Message]:
    """``make(i, ts)`` for paced production: frame ``i`` (cycled) stamped with ``ts``."""
    encoded = [encode_jpeg(f, quality=85) for f in frames]

    def make(i: int, ts: int) -> Message:
        device = f"cam-{i % devices:03d}"
        return Message(
            device.encode(),
            encoded[i % len(encoded)],
            image_headers(content_types.JPEG, device, ts),
        )

    return make


def chunk_maker(windows: np.ndarray, *, devices: int = 16) -> Callable[[int, int], Message]:
    """``make(i, ts)`` for paced production: one full window per chunk, stamped with ``ts``."""
    rows = [w.astype(np.float32) for w in windows]

    def make(i: int, ts: int) -> Message:
        device = f"watch-{i % devices:03d}"
        value = encode_chunk(device, ts, rows[i % len(rows)])
        return Message(device.encode(), value, sensor_headers(device, ts))

    return make


def fit_windows(windows: np.ndarray, length: int) -> np.ndarray:
    """Windows cut or tiled along time to ``length`` readings (the model's window)."""
    steps = windows.shape[1]
    if steps >= length:
        return windows[:, :length]
    reps = -(-length // steps)
    return np.concatenate([windows] * reps, axis=1)[:, :length]


def expected_windows(count: int, *, devices: int, chunk: int, window: int, stride: int) -> int:
    """Windows the agent emits for ``count`` chunks of ``chunk`` readings over ``devices``."""
    total = 0
    for d in range(devices):
        n_chunks = len(range(d, count, devices))
        samples = n_chunks * chunk
        if samples >= window:
            total += 1 + (samples - window) // stride
    return total


def chunk_messages(windows: np.ndarray, count: int, *, devices: int = 16) -> list[Message]:
    """``count`` chunks each holding one full window (n_windows, steps, channels).

    Each device's ``ts`` increases by one window per message, so the agent never sees a
    reading out of order.
    """
    encoded_rows = [w.astype(np.float32) for w in windows]
    start = now_ms()
    steps = int(windows.shape[1])
    out = []
    for i in range(count):
        d = i % devices
        device = f"watch-{d:03d}"
        ts = start + (i // devices) * steps * 10  # 100 Hz readings
        value = encode_chunk(device, ts, encoded_rows[i % len(encoded_rows)])
        out.append(Message(device.encode(), value, sensor_headers(device, ts)))
    return out


def reading_messages(
    count: int, *, channels: int = 6, devices: int = 16, seed: int = 0
) -> list[Message]:
    """``count`` small JSON readings ``{"device_id", "ts", "values": [6 floats]}``."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, size=(min(count, 1000), channels)).astype(np.float32)
    start = now_ms()
    out = []
    for i in range(count):
        device = f"sensor-{i % devices:03d}"
        ts = start + i
        value = encode_reading(device, ts, values[i % len(values)].tolist())
        out.append(Message(device.encode(), value, sensor_headers(device, ts)))
    return out


def cycle(messages: list[Message]) -> Iterator[Message]:
    while True:
        yield from messages
