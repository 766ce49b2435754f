"""Registry directory: versions, pins, odd entries (files only, no broker)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.bundle import MODEL_FILE
from stream.exceptions import BundleError
from stream.registry import Registry
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


def in_thread(target: Callable[[], object], timeout_s: float = 10.0) -> object:
    """``target()``'s result or exception; fails the test if it does not return in time."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = target()
        except BaseException as exc:  # noqa: BLE001  handed to the caller
            out["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"still running after {timeout_s} s (hung on a read?)"
    return out["value"]


def test_odd_registry_entries_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(tmp_path / "reg")
    registry.publish(write_test_bundle(tmp_path / "b1", version="1").path)
    folder = tmp_path / "reg" / "motion"
    shutil.copytree(folder / "1", folder / "copy of 1")
    shutil.copytree(folder / "1", folder / "ümlaut")
    (folder / "2").mkdir()  # partial: no manifest yet
    with caplog.at_level(logging.WARNING, logger="stream.registry"):
        assert registry.versions("motion") == ["1"]
    assert "skipping registry entry" in caplog.text and "copy of 1" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"../../etc\n", "is not a version"),
        (b"copy of 1", "is not a version"),
        (b"9" * 300, 'is 300 bytes, over the cap of 256: refused"\n'),
        (None, "not a regular file"),  # a FIFO
    ],
)
def test_an_odd_pin_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes | None, message: str
) -> None:
    registry = Registry(tmp_path / "reg")
    registry.publish(write_test_bundle(tmp_path / "b1", version="1").path)
    pin = tmp_path / "reg" / "motion" / "pinned"
    if content is None:
        os.mkfifo(pin)
    else:
        pin.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="stream.registry"):
        assert in_thread(lambda: registry.pinned("motion")) is None
        assert registry.current("motion") == "1"
    assert message in caplog.text
