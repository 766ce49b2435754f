"""Turn input records into batch items: images and full sensor windows alike.

Decoding itself is :mod:`stream.codecs` (untrusted bytes -> schema objects, raising only
``DecodeError`` with a bounded reason); this module adds the agent's checks.

Images (PNG/JPEG) are converted to the model's colour (gray <-> RGB) and resized to its
height x width (bilinear), as ``ImagePreprocessing`` documents. A raw ``.npy`` tensor is
taken as it is: it must already have the model's (height, width, channels), else it is a
``wrong_shape`` dead letter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.batching import Pending
from edge_agent.windows import Window
from stream.codecs import MAX_DEVICE_ID_CHARS, decode_image
from stream.content_types import NPY
from stream.exceptions import DecodeError
from stream.preprocessing import ImagePreprocessing, resize_image


def fit_image(pixels: np.ndarray, content_type: str, prep: ImagePreprocessing) -> np.ndarray:
    """uint8 (H, W, 1|3) -> uint8 (prep.height, prep.width, prep.channels)."""
    want = (prep.height, prep.width, prep.channels)
    if pixels.shape == want:
        return pixels
    if content_type == NPY:
        msg = (
            f"the raw .npy tensor has shape {tuple(pixels.shape)} but the model takes {want}; "
            "send it at the model's size or send PNG/JPEG (those are resized)"
        )
        raise DecodeError("wrong_shape", msg)
    return resize_image(pixels, height=prep.height, width=prep.width, channels=prep.channels)


def image_input(
    record: Any, partition: int, prep: ImagePreprocessing, *, max_bytes: int, consumed_at: float
) -> Pending:
    """An image record -> a batch item (raises ``DecodeError``)."""
    frame = decode_image(record.value, record.headers, max_bytes=max_bytes)
    x = fit_image(frame.pixels, frame.content_type, prep)
    key = record.key
    device = frame.device_id or (key.decode("utf-8", "replace") if key else "") or "unknown"
    if len(device) > MAX_DEVICE_ID_CHARS:
        msg = (
            f"the key (the device id when there is no device-id header) has {len(device)} "
            f"characters, over the limit of {MAX_DEVICE_ID_CHARS}; use a shorter id"
        )
        raise DecodeError("too_large", msg)
    return Pending(
        x=x,
        device_id=device,
        partition=partition,
        offset=record.offset,
        last_offset=record.offset,
        window=False,
        ts=frame.ts,
        kafka_ts=record.timestamp,
        headers=record.headers,
        consumed_at=consumed_at,
        key=key,
        value=record.value,
    )


def window_item(w: Window, record: Any, consumed_at: float) -> Pending:
    """A full sensor window (filled by ``record``) -> a batch item."""
    return Pending(
        x=w.values,
        device_id=w.device_id,
        partition=w.partition,
        offset=w.first_offset,
        last_offset=w.last_offset,
        window=True,
        ts=w.ts,
        kafka_ts=record.timestamp,
        headers=w.headers,
        consumed_at=consumed_at,
        key=record.key,
        value=None,
    )
