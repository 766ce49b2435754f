"""The ``content-type`` header values of wire contract v1 (docs/wire-format.md).

The one place these strings are spelled: schemas, codecs, replay, tail, training capture
and the agent import them from here.
"""

from __future__ import annotations

from typing import Final, Literal

JSON: Final = "application/json"
PNG: Final = "image/png"
JPEG: Final = "image/jpeg"
NPY: Final = "application/x-npy"
#: Accepted on the sensor topic as a synonym of ``application/json``.
TEXT_JSON: Final = "text/json"
#: No ``content-type`` header (or an empty one).
NO_HEADER: Final = ""

#: The canonical content types a message may declare.
ContentType = Literal["application/json", "image/png", "image/jpeg", "application/x-npy"]
CONTENT_TYPES: Final[tuple[ContentType, ...]] = (JSON, PNG, JPEG, NPY)

#: The content types of an image (or raw tensor) message.
ImageContentType = Literal["image/png", "image/jpeg", "application/x-npy"]
IMAGE_CONTENT_TYPES: Final[tuple[ImageContentType, ...]] = (PNG, JPEG, NPY)
#: Spellings of image types seen in the wild, mapped to the canonical content type.
IMAGE_CONTENT_TYPE_ALIASES: Final[dict[str, ImageContentType]] = {
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
    "image/x-png": PNG,
    "application/npy": NPY,
    "application/x-numpy": NPY,
}

#: The content types accepted on the sensor topic (lower case, without parameters).
SensorContentType = Literal["", "application/json", "text/json"]
SENSOR_CONTENT_TYPES: Final[tuple[SensorContentType, ...]] = (NO_HEADER, JSON, TEXT_JSON)

__all__ = [
    "CONTENT_TYPES",
    "IMAGE_CONTENT_TYPES",
    "IMAGE_CONTENT_TYPE_ALIASES",
    "JPEG",
    "JSON",
    "NO_HEADER",
    "NPY",
    "PNG",
    "SENSOR_CONTENT_TYPES",
    "TEXT_JSON",
    "ContentType",
    "ImageContentType",
    "SensorContentType",
]
