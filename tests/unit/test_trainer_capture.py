"""Training capture sorts a topic's messages into sensor recordings and images (no broker:
``_Capture.add`` is what ``capture_topic`` calls for every record)."""

from __future__ import annotations

import numpy as np
import pytest

from stream.codecs import encode_png, encode_reading, headers_dict
from trainer.capture import _Capture

READING = encode_reading("dev-1", 5, [1.0, 2.0])
PNG = encode_png(np.zeros((4, 4), np.uint8))


def add(value: bytes | None, headers: list[tuple[str, bytes]]) -> _Capture:
    cap = _Capture()
    cap.add(value, headers_dict([("label", b"walking"), *headers]))
    return cap


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("content-type", b"application/json")],
        [("content-type", b"text/json")],  # accepted by the agent, so by capture too
        [("Content-Type", b"Application/JSON; charset=utf-8")],
    ],
    ids=["no-header", "json", "text-json", "case-and-params"],
)
def test_sensor_readings_become_a_recording(headers: list[tuple[str, bytes]]) -> None:
    cap = add(READING, headers)
    assert (cap.undecodable, cap.inputs) == (0, [])
    [rec] = cap.recordings
    assert (rec.device_id, rec.label) == ("dev-1", "walking")
    np.testing.assert_array_equal(rec.samples(), np.array([[1.0, 2.0]], np.float32))


@pytest.mark.parametrize(
    "headers",
    [[], [("content-type", b"image/png")], [("content-type", b"image/x-png")]],
    ids=["sniffed", "png", "alias"],
)
def test_images_are_decoded_as_the_agent_does(headers: list[tuple[str, bytes]]) -> None:
    cap = add(PNG, headers)
    assert (cap.undecodable, cap.recordings, cap.names) == (0, [], ["walking"])
    assert cap.inputs[0].shape == (4, 4, 1)


def test_undecodable_and_unlabelled_messages_are_counted() -> None:
    cap = _Capture()
    cap.add(READING, headers_dict([("content-type", b"application/json")]))
    cap.add(READING, headers_dict([("label", b"a"), ("content-type", b"text/plain")]))
    cap.add(b"{not json", headers_dict([("label", b"a")]))
    assert (cap.read, cap.unlabelled, cap.undecodable) == (3, 1, 2)
    assert cap.first_error.startswith("unknown_content_type: ")
