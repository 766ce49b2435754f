"""``models`` announcements: building, parsing, bounded reading of URIs, materializing
(files and a local http server, no broker)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.announcements import (
    Announcement,
    announced_size,
    announcement_value,
    materialize,
    parse_announcement,
    read_model_uri,
)
from stream.bundle import MANIFEST_FILE, MODEL_FILE, Bundle, TrustPolicy, verify_bundle
from stream.exceptions import BundleError
from tests.fixtures.bundle_factory import write_test_bundle
from tests.unit.test_registry import in_thread


def test_inline_announcement_round_trips_with_signature(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    src = write_test_bundle(tmp_path / "b", model=b"\x00\x01model" * 10, private_key=key)
    value = announcement_value(src)
    data = json.loads(value)
    assert data["name"] == "motion" and data["version"] == "1"
    assert base64.b64decode(data["model_b64"]) == src.model_bytes()
    ann = parse_announcement(value)
    out = materialize(ann, tmp_path / "agent" / "motion-1")
    bundle = verify_bundle(out, public_key=key.public_key())
    assert bundle.model_bytes() == src.model_bytes()
    assert bundle.manifest == src.manifest


def test_large_model_is_announced_by_uri(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b", model=b"x" * 5000)
    value = announcement_value(src, inline_limit=2000)
    ann = parse_announcement(value)
    assert ann.model_b64 is None
    assert ann.uri == (tmp_path / "b").resolve().as_uri()
    assert len(value) < 2000
    out = materialize(ann, tmp_path / "copy")
    assert (out / MODEL_FILE).read_bytes() == b"x" * 5000


def test_materialize_refuses_a_model_that_does_not_match(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b")
    data = json.loads(announcement_value(src))
    evil = b"e" * len(src.model_bytes())  # the announced size, other bytes
    data["model_b64"] = base64.b64encode(evil).decode()
    ann = parse_announcement(json.dumps(data).encode())
    with pytest.raises(BundleError, match="does not match its manifest's sha256: refused"):
        materialize(ann, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "is not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"name": "m"}', "lacks version, manifest"),
        (
            b'{"name": "m", "version": "1", "manifest": {"name": "m", "version": "1"}}',
            "exactly one of model_b64 and uri",
        ),
        (
            b'{"name": "m", "version": "2", "manifest": {"name": "m", "version": "1"},'
            b' "uri": "file:///x"}',
            "does not match its manifest's name/version",
        ),
    ],
)
def test_malformed_announcements(value: bytes, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        parse_announcement(value)


@pytest.mark.parametrize(
    "uri", ["ftp://example.com/model.tflite", "data:,x", "https:///no-host", "model.tflite"]
)
def test_uri_must_be_a_file_or_http_uri(tmp_path: Path, uri: str) -> None:
    src = write_test_bundle(tmp_path / "b")
    data = json.loads(announcement_value(src, inline_limit=10))
    data["uri"] = uri
    with pytest.raises(BundleError, match=r"only file:// \(a shared registry or a regular file\)"):
        materialize(parse_announcement(json.dumps(data).encode()), tmp_path / "out")


def test_manifest_file_is_written_by_materialize(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b")
    out = materialize(parse_announcement(announcement_value(src)), tmp_path / "m")
    assert json.loads((out / MANIFEST_FILE).read_text())["model_sha256"] == (
        src.manifest.model_sha256
    )


# ------------------------------------------------ hostile announcements and entries


def _by_uri(src: Bundle, uri: str) -> Announcement:
    data = json.loads(announcement_value(src, inline_limit=10))
    data["uri"] = uri
    return parse_announcement(json.dumps(data).encode())


def test_uris_to_devices_fifos_and_sockets_are_refused_unread(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "bundle-with-fifo").mkdir()
    os.mkfifo(tmp_path / "bundle-with-fifo" / MODEL_FILE)
    (tmp_path / "zero").symlink_to("/dev/zero")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    uris = [
        "file:///dev/zero",
        (tmp_path / "zero").as_uri(),
        (tmp_path / "fifo").as_uri(),
        (tmp_path / "bundle-with-fifo").as_uri(),
        (tmp_path / "sock").as_uri(),
    ]
    try:
        for uri in uris:
            outcome = in_thread(lambda u=uri: materialize(_by_uri(src, u), tmp_path / "out"))
            assert isinstance(outcome, BundleError), (uri, outcome)
            # a socket cannot even be opened (ENXIO); the rest are refused after open()
            expected = "No such device" if uri.endswith("sock") else "is not a regular file"
            assert expected in str(outcome), (uri, outcome)
    finally:
        server.close()
    assert not (tmp_path / "out").exists()


def test_uri_reads_exactly_the_announced_size(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b", model=b"m" * 5000)
    assert materialize(_by_uri(src, src.path.as_uri()), tmp_path / "ok").is_dir()
    big = tmp_path / "big.tflite"
    big.write_bytes(b"m" * 5000 + b"more")
    with pytest.raises(BundleError, match="5004 bytes, which does not match the manifest's"):
        materialize(_by_uri(src, big.as_uri()), tmp_path / "out")
    with pytest.raises(BundleError, match="announced as 5000 bytes, over the cap of 4096"):
        materialize(_by_uri(src, src.path.as_uri()), tmp_path / "out", max_bytes=4096)
    with pytest.raises(BundleError, match="must name an absolute local path"):
        materialize(_by_uri(src, "file://otherhost/x"), tmp_path / "out")


def test_announcements_must_state_the_model_size(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b")
    for size in (None, 0, -1, "25", True, 2.5):
        data = json.loads(announcement_value(src))
        data["manifest"]["model_size"] = size
        with pytest.raises(BundleError, match="does not state the model's size"):
            parse_announcement(json.dumps(data).encode())
    data = json.loads(announcement_value(src))
    data["manifest"]["model_size"] += 1
    with pytest.raises(BundleError, match="inline model is 25 bytes, its manifest says 26"):
        materialize(parse_announcement(json.dumps(data).encode()), tmp_path / "out")


class _ModelServer(http.server.BaseHTTPRequestHandler):
    """/model: the bytes; /short: fewer than its Content-Length; /endless: no length and no
    end; /slow: a byte at a time; /to-ftp: a redirect to ftp:// (urllib follows those);
    anything else 404."""

    model = b""

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/model":
            self._answer(self.model, len(self.model))
        elif self.path == "/short":
            self._answer(self.model[:-10], len(self.model))
        elif self.path == "/endless":
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):  # until the client hangs up
                while True:
                    self.wfile.write(b"\0" * 65536)
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for byte in self.model:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/to-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/model.tflite")
            self.end_headers()
        else:
            self.send_error(404)

    def _answer(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[str, Bundle]]:
    src = write_test_bundle(tmp_path / "b", model=b"\x01model bytes" * 50)
    handler = type("Handler", (_ModelServer,), {"model": src.model_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", src
    server.shutdown()
    server.server_close()


def test_http_models_are_read_bounded_and_in_time(
    model_server: tuple[str, Bundle], tmp_path: Path
) -> None:
    base, src = model_server
    size = len(src.model_bytes())
    assert read_model_uri(f"{base}/model", size=size) == src.model_bytes()
    out = materialize(_by_uri(src, f"{base}/model"), tmp_path / "http")
    assert (out / MODEL_FILE).read_bytes() == src.model_bytes()
    cases = {
        "/short": "short sent 590 bytes, the announcement states 600: refused",
        "/endless": "sends more than the announced",
        "/to-ftp": "redirects to 'ftp://127.0.0.1/model.tflite': only http",
        "/missing": "HTTP 404",
    }
    for path, message in cases.items():
        with pytest.raises(BundleError, match=message):
            read_model_uri(base + path, size=size)
    with pytest.raises(BundleError, match="Content-Length 600, the announcement 599 bytes"):
        read_model_uri(f"{base}/model", size=size - 1)
    started = time.monotonic()
    with pytest.raises(BundleError, match="took over 1 s: refused"):
        read_model_uri(f"{base}/slow", size=size, timeout_s=1.0)
    assert time.monotonic() - started < 5


def test_a_refused_announcement_never_replaces_the_verified_copy(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    trust = TrustPolicy(keys=(key.public_key(),))
    good = write_test_bundle(tmp_path / "good", model=b"good model", private_key=key)
    dest = materialize(parse_announcement(announcement_value(good)), tmp_path / "cache" / "1")
    # the same version again: unsigned, then signed by another key, then garbage hashes
    unsigned = write_test_bundle(tmp_path / "u", model=b"evil model")
    other = write_test_bundle(
        tmp_path / "o", model=b"evil model", private_key=Ed25519PrivateKey.generate()
    )
    for bad in (unsigned, other):
        with pytest.raises(BundleError, match="unsigned|signature does not verify"):
            materialize(
                parse_announcement(announcement_value(bad)), dest, verify=trust.verify_bundle
            )
        assert trust.verify_bundle(dest).model_bytes() == b"good model"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["1"]  # nothing left over


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
_KEYS = ("name", "version", "manifest", "model_b64", "uri", "model_size", "model_sha256")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=7)
    | st.dictionaries(
        st.sampled_from(_KEYS),
        st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=7) | _JSON,
        max_size=7,
    ),
    st.binary(max_size=64),
)
def test_hostile_announcements_parse_or_are_refused(data: dict[str, object], raw: bytes) -> None:
    for value in (json.dumps(data).encode(), raw):
        try:
            ann = parse_announcement(value)
        except BundleError:
            continue
        assert ann.name and ann.version and announced_size(ann) > 0


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["file://", "file:///", "file://localhost/", "ftp://", "", "file:"]).flatmap(
        lambda scheme: st.sampled_from(
            ["dev/zero", "dev/null", "proc/self/status", "etc", "tmp", "nonexistent", "dev/urandom"]
        ).map(lambda path: scheme + path)
    )
    | st.text(max_size=40).filter(lambda t: not t.startswith(("http", "HTTP")))
    | st.text(max_size=40).map(lambda t: "file:///" + t),
    st.integers(min_value=-2, max_value=1 << 40),
)
def test_hostile_model_uris_are_read_bounded_or_refused(uri: str, size: int) -> None:
    try:
        model = read_model_uri(uri, size=size, max_bytes=1 << 16)
    except BundleError:
        return
    assert len(model) == size <= 1 << 16
