"""Mixed good and bad input: every bad message is dead-lettered with its reason and its
original bytes and headers, every good one is answered, and nothing stops the partition."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream import codecs
from stream.bundle import read_manifest
from stream.preprocessing import SequencePreprocessing
from tests.fixtures.agent import CLIENTS

pytestmark = pytest.mark.integration

MAX_BYTES = 4000


def reading(device: str, ts: int, values: list[float]) -> bytes:
    return codecs.encode_reading(device, ts, values)


def json_headers(device: str, ts: int) -> list[tuple[str, bytes]]:
    return codecs.sensor_headers(device, ts, label="walking")


def check_dead_letters(
    records: list[Any], sent: dict[int, tuple[str, bytes | None, list[Any]]], topic: str
) -> None:
    """Each dead letter carries the reason, the original value and headers, the source."""
    got = {}
    for rec in records:
        d = codecs.decode_dead_letter(rec.value, rec.headers)
        assert d.source_topic == topic
        assert d.agent_id == "thread-agent-0"
        assert d.error_message
        got[d.source_offset] = d
    assert set(got) == set(sent), "every bad message and only those are dead-lettered"
    for offset, (reason, value, headers) in sent.items():
        d = got[offset]
        assert d.error_type == reason, (offset, d.error_message)
        assert d.value == value
        assert d.headers == codecs.headers_dict(headers)


Sent = tuple[str, bytes | None, list[Any]]


class Producing:
    """Sends to a one-partition input topic and notes each message's offset; the bad ones
    (with their reason) in :attr:`bad`, for :func:`check_dead_letters`."""

    def __init__(self, producer: Any, topic: str) -> None:
        self.producer, self.topic = producer, topic
        self.offset = 0
        self.bad: dict[int, Sent] = {}

    def send(self, value: bytes | None, key: bytes, headers: list[Any]) -> int:
        """Send; returns the message's offset."""
        self.producer.send(self.topic, value=value, key=key, headers=headers)
        self.offset += 1
        return self.offset - 1

    def send_bad(self, reason: str, value: bytes | None, key: bytes, headers: list[Any]) -> None:
        self.bad[self.send(value, key, headers)] = (reason, value, headers)


@pytest.mark.parametrize("client", CLIENTS)
def test_sensor_stream_with_bad_messages(
    client: str, streaming_agent: Any, producer_factory: Any, motions_bundles: dict[str, Path]
) -> None:
    bundle = motions_bundles["int8"]
    prep = read_manifest(bundle).preprocessing
    assert isinstance(prep, SequencePreprocessing)
    channels, window, stride = prep.channels, prep.window, prep.stride
    run = streaming_agent(bundle, kind="sensors", max_message_bytes=MAX_BYTES, client=client)
    agent, inp = run.agent, run.topics.input
    good = [0.5] * channels
    bad: list[tuple[str, bytes | None, list[Any]]] = [
        ("not_json", b"hello, not json", []),
        ("not_json", b"\xff\xfe\x00garbage", []),
        ("missing_field", b'{"device_id": "a", "ts": 5}', json_headers("a", 5)),
        ("missing_field", b'{"ts": 5, "values": [1]}', []),
        ("non_finite", b'{"device_id": "a", "ts": 5, "values": [NaN, 1, 2, 3, 4, 5]}', []),
        ("wrong_shape", reading("a", 5, [1.0] * (channels + 1)), json_headers("a", 5)),
        ("wrong_type", b'{"device_id": "a", "ts": 5, "values": "abc"}', []),
        ("too_large", b'{"device_id": "a", "ts": 5, "pad": "' + b"x" * MAX_BYTES + b'"}', []),
        ("unknown_content_type", reading("a", 5, good), [("content-type", b"image/png")]),
        ("missing_field", None, [("note", b"tombstone")]),
    ]
    sent = Producing(producer_factory(), inp)
    ts = 1_000
    good_offsets: dict[str, list[int]] = {"a": [], "b": []}
    # two windows' worth of good readings per device, bad ones in between
    n_good = window + stride
    for i in range(n_good):
        for device in ("a", "b"):
            ts += 1
            value, headers = reading(device, ts, good), json_headers(device, ts)
            good_offsets[device].append(sent.send(value, device.encode(), headers))
        if i < len(bad):
            reason, value, headers = bad[i]
            sent.send_bad(reason, value, b"a", headers)
        if i == 5:  # a reading older than device b's last one
            value, headers = reading("b", ts - 100, good), json_headers("b", ts - 100)
            sent.send_bad("out_of_order", value, b"b", headers)
    sent.producer.flush()
    expected_windows = 2 * ((n_good - window) // stride + 1)

    run.until(results=expected_windows, dead=len(sent.bad))
    assert agent.stop() == 0
    run.reader.poll()
    check_dead_letters(run.reader.records[run.topics.deadletter], sent.bad, inp)
    results = run.results()
    assert len(results) == expected_windows
    for device, offsets in good_offsets.items():
        mine = sorted(r.source["last_offset"] for r in results if r.device_id == device)
        assert len(mine) == expected_windows // 2
        # the device's last window ends at its last good reading: none was skipped
        assert mine[-1] == offsets[-1]
        first = min(r.source["first_offset"] for r in results if r.device_id == device)
        assert first == offsets[0]
    for reason in {b[0] for b in sent.bad.values()}:
        count = sum(1 for b in sent.bad.values() if b[0] == reason)
        assert agent.sample("edge_agent_deadletters_total", {"reason": reason}) == count


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("client", CLIENTS)
def test_image_stream_with_bad_messages(
    client: str, streaming_agent: Any, producer_factory: Any, digits_bundles: dict[str, Path]
) -> None:
    run = streaming_agent(digits_bundles["int8"], max_message_bytes=MAX_BYTES, client=client)
    agent, inp = run.agent, run.topics.input
    rng = np.random.default_rng(0)
    digit = rng.integers(0, 16, (8, 8), dtype=np.uint8)
    png = codecs.encode_png(digit)
    ok_headers = codecs.image_headers("image/png", "cam-1", 1_700_000_000_000, label="3")
    bad: list[tuple[str, bytes | None, list[Any]]] = [
        ("corrupt_image", png[:20] + b"\x00" * 30, [("content-type", b"image/png")]),
        (
            "corrupt_image",
            b"\xff\xd8\xff" + b"not really a jpeg",
            [("content-type", b"image/jpeg")],
        ),
        ("unknown_content_type", b"plain text", [("content-type", b"text/plain")]),
        ("unknown_content_type", json.dumps({"values": [1]}).encode(), []),
        (
            "wrong_dtype",
            npy(np.zeros((8, 8), np.float32)),
            [("content-type", b"application/x-npy")],
        ),
        ("wrong_shape", npy(np.zeros((8, 9), np.uint8)), [("content-type", b"application/x-npy")]),
        ("too_large", codecs.encode_png(rng.integers(0, 255, (80, 80), dtype=np.uint8)), []),
        ("bad_header", png, [("content-type", b"image/png"), ("ts", b"yesterday")]),
        ("missing_field", None, [("content-type", b"image/png")]),
    ]
    sent = Producing(producer_factory(), inp)
    good_offsets: list[int] = []
    for i in range(len(bad) + 1):
        good_offsets.append(sent.send(png, b"cam-1", ok_headers))
        if i < len(bad):
            reason, value, headers = bad[i]
            sent.send_bad(reason, value, b"cam-1", headers)
    sent.producer.flush()
    run.until(results=len(good_offsets), dead=len(sent.bad))
    assert agent.stop() == 0
    run.reader.poll()
    check_dead_letters(run.reader.records[run.topics.deadletter], sent.bad, inp)
    results = run.results()
    assert sorted(r.source["offset"] for r in results) == good_offsets
    assert all(r.true_label == "3" and r.device_id == "cam-1" for r in results)
