"""Kafka headers: tolerant reading, and the headers of sensor and image messages."""

from __future__ import annotations

import pytest

from stream import topics
from stream.codecs import content_type, headers_dict, image_headers, sensor_headers


def test_sensor_headers() -> None:
    assert sensor_headers("dev-1", 12) == [
        ("content-type", b"application/json"),
        ("device-id", b"dev-1"),
        ("ts", b"12"),
    ]
    assert sensor_headers("d", 1, label="walking")[-1] == (topics.H_LABEL, b"walking")


def test_image_headers() -> None:
    assert image_headers("image/png", None, None) == [("content-type", b"image/png")]
    assert image_headers("image/jpeg", "cam", 5, "cat") == [
        ("content-type", b"image/jpeg"),
        ("device-id", b"cam"),
        ("ts", b"5"),
        ("label", b"cat"),
    ]
    with pytest.raises(ValueError, match="content_type"):
        image_headers("image/gif", None, None)


def test_headers_dict_is_tolerant() -> None:
    assert headers_dict(None) == {}
    assert headers_dict([]) == {}
    confluent_style = [("a", b"1"), ("b", None), ("c", b"\xff"), ("a", b"2")]
    assert headers_dict(confluent_style) == {  # type: ignore[arg-type]
        "a": "2",
        "b": "",
        "c": "\ufffd",
    }
    assert headers_dict({"x": "y", b"k": b"v"}) == {"x": "y", "k": "v"}
    assert headers_dict([("ok", b"1"), ("bad",), 5]) == {"ok": "1"}  # type: ignore[list-item]
    assert headers_dict(42) == {}  # type: ignore[arg-type]


def test_content_type_is_the_first_header_lower_case_without_parameters() -> None:
    assert content_type(None) == ""
    assert content_type([]) == ""
    assert content_type([("device-id", b"d")]) == ""
    assert content_type([("content-type", b"")]) == ""
    assert content_type([("Content-Type", b" Image/PNG ; q=1")]) == "image/png"
    assert content_type([("content-type", b"a/b"), ("content-type", b"c/d")]) == "a/b"
    assert content_type([("content-type", b"\xff/json")]) == "\ufffd/json"
    assert content_type({"CONTENT-TYPE": "text/json"}) == "text/json"
