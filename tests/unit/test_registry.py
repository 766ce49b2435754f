"""Registry directory and ``models`` announcements (files only, no broker)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stream.bundle import MANIFEST_FILE, MODEL_FILE, verify_bundle
from stream.exceptions import BundleError
from stream.registry import (
    Registry,
    announcement_value,
    materialize,
    parse_announcement,
)
from tests.fixtures.bundle_factory import write_test_bundle


def test_publish_versions_latest_and_pins(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    assert registry.versions("motion") == []
    assert registry.latest("motion") is None
    for version in ("2", "10", "9"):
        src = write_test_bundle(tmp_path / f"b{version}", version=version, model=version.encode())
        dest = registry.publish(src.path)
        assert dest == tmp_path / "reg" / "motion" / version
        assert (dest / MODEL_FILE).read_bytes() == version.encode()
    assert registry.versions("motion") == ["2", "9", "10"]  # natural order
    assert registry.latest("motion") == "10"
    assert registry.names() == ["motion"]
    assert registry.pinned("motion") is None
    registry.pin("motion", "9")
    assert registry.pinned("motion") == "9"
    assert registry.current("motion") == "9"
    registry.unpin("motion")
    assert registry.pinned("motion") is None
    assert registry.current("motion") == "10"
    assert not [p for p in (tmp_path / "reg" / "motion").iterdir() if p.name.startswith(".")]


def test_pin_unknown_version_lists_published(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.publish(write_test_bundle(tmp_path / "b", version="1").path)
    with pytest.raises(BundleError, match=r"cannot pin motion to 7: .* \(published: 1\)"):
        registry.pin("motion", "7")


def test_republish_same_model_is_a_no_op_other_model_refused(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    first = write_test_bundle(tmp_path / "a", version="3", model=b"one")
    assert registry.publish(first.path) == registry.publish(first.path)
    other = write_test_bundle(tmp_path / "b", version="3", model=b"two")
    with pytest.raises(BundleError, match="already in .* with another model: give the new"):
        registry.publish(other.path)
    assert (registry.bundle_path("motion", "3") / MODEL_FILE).read_bytes() == b"one"


def test_publish_refuses_a_tampered_bundle(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b")
    (src.path / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="does not match the manifest"):
        Registry(tmp_path / "reg").publish(src.path)
    assert Registry(tmp_path / "reg").versions("motion") == []


@pytest.mark.parametrize("bad", ["../x", ".hidden", "a/b", ""])
def test_unsafe_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BundleError, match="cannot be a registry folder name"):
        Registry(tmp_path).bundle_path(bad, "1")


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
    data["model_b64"] = base64.b64encode(b"evil").decode()
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


def test_uri_must_be_a_file_uri(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b")
    data = json.loads(announcement_value(src, inline_limit=10))
    data["uri"] = "https://example.com/model.tflite"
    with pytest.raises(BundleError, match="only file:// URIs"):
        materialize(parse_announcement(json.dumps(data).encode()), tmp_path / "out")


def test_manifest_file_is_written_by_materialize(tmp_path: Path) -> None:
    src = write_test_bundle(tmp_path / "b")
    out = materialize(parse_announcement(announcement_value(src)), tmp_path / "m")
    assert json.loads((out / MANIFEST_FILE).read_text())["model_sha256"] == (
        src.manifest.model_sha256
    )
