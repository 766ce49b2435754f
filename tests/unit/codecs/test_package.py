"""``stream.codecs`` as a whole: its public names, constants and content types."""

from __future__ import annotations

from typing import get_args

import stream.codecs
from stream import content_types
from stream.codecs import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_PIXELS
from stream.content_types import CONTENT_TYPES


def test_content_types_and_constants() -> None:
    assert set(CONTENT_TYPES) == {
        "application/json",
        "image/png",
        "image/jpeg",
        "application/x-npy",
    }
    assert DEFAULT_MAX_PIXELS == 4096 * 4096
    assert DEFAULT_MAX_MESSAGE_BYTES == 1_048_576


def test_every_public_name_is_exported() -> None:
    for name in stream.codecs.__all__:
        assert getattr(stream.codecs, name) is not None, name
    # The names importers used before the package was split.
    for name in (
        "MAX_DEVICE_ID_CHARS",
        "MAX_ERROR_MESSAGE_CHARS",
        "PNG_MAGIC",
        "JPEG_MAGIC",
        "NPY_MAGIC",
        "CONTENT_TYPES",
    ):
        assert name in stream.codecs.__all__, name


def test_content_type_literals_match_their_tuples() -> None:
    assert get_args(content_types.ContentType) == content_types.CONTENT_TYPES
    assert get_args(content_types.ImageContentType) == content_types.IMAGE_CONTENT_TYPES
    assert get_args(content_types.SensorContentType) == content_types.SENSOR_CONTENT_TYPES
    assert set(content_types.SENSOR_CONTENT_TYPES) == {"", "application/json", "text/json"}
    assert set(content_types.IMAGE_CONTENT_TYPE_ALIASES.values()) <= set(
        content_types.IMAGE_CONTENT_TYPES
    )
